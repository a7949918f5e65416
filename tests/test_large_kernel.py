"""Large-kernel convolutions of few channels on the CPU (`jaxsr.archs.common.conv_general_dilated`: FFTs under
lax.platform_dependent) against torch's conv2d: the output and both gradients, at RealPLKSR's and PLKSR's kernel and
channel counts and at odd sizes and paddings; which layers take the FFT; and the ONNX graph keeps the Conv."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxsr.archs import common

# relative to the largest magnitude of each compared tensor, against torch in float64: the FFTs came out 2-3e-7 off
# there, XLA's direct float32 sum 3-4e-7 and torch's own float32 conv2d up to 3e-6 (17 x 17, 16 channels)
TOL = 1e-6


@pytest.mark.parametrize("cin, cout, k, pad, size", [(16, 16, 17, 8, (2, 32, 32)), (4, 8, (9, 13), (4, 6), (3, 17, 30)),
                                                     (16, 3, 11, 2, (1, 23, 19)), (2, 2, 17, 8, (1, 9, 40))])
def test_fft_convolution_equals_torch_forward_and_both_gradients(cin, cout, k, pad, size):
    layer = common.conv(cin, cout, k, padding=pad, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(cin + cout)
    layer.kernel.value = jnp.asarray(rng.standard_normal(layer.kernel.shape, np.float32) * 0.05)
    layer.bias.value = jnp.asarray(rng.standard_normal(cout).astype(np.float32))
    x = rng.standard_normal((*size, cin)).astype(np.float32)
    y = layer(jnp.asarray(x))
    ct = rng.standard_normal(y.shape).astype(np.float32)

    graph, params = nnx.split(layer)
    gp, gx = jax.grad(lambda p, x: jnp.sum(nnx.merge(graph, p)(x) * ct), argnums=(0, 1))(params, jnp.asarray(x))

    f64 = dict(dtype=torch.float64)
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True, **f64)
    wt = torch.tensor(np.asarray(layer.kernel.value).transpose(3, 2, 0, 1), requires_grad=True, **f64)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(np.asarray(layer.bias.value), **f64), 1, pad)
    (yt * torch.tensor(ct.transpose(0, 3, 1, 2), **f64)).sum().backward()
    for ours, ref in ((y, yt.detach().numpy().transpose(0, 2, 3, 1)), (gx, xt.grad.numpy().transpose(0, 2, 3, 1)),
                      (gp["kernel"].value, wt.grad.numpy().transpose(2, 3, 1, 0))):
        assert ours.shape == ref.shape
        assert np.abs(np.asarray(ours) - ref).max() <= TOL * np.abs(ref).max()


def test_which_layers_the_cpu_runs_as_ffts_and_the_onnx_graph_keeps_the_convolution():
    from jaxsr import archs, deploy

    def ffts(cin, cout, k, **kw):
        layer = common.conv(cin, cout, k, rngs=nnx.Rngs(0), **kw)
        return "fft(" in jax.jit(lambda x: layer(x)).lower(jnp.zeros((1, 24, 24, cin))).compile().as_text()

    assert ffts(16, 16, 17) and ffts(16, 8, 9)
    # narrow kernels, wider layers, strides and dilations stay XLA's convolutions
    assert not any([ffts(16, 16, 7), ffts(24, 16, 17), ffts(16, 16, 17, stride=2), ffts(8, 8, 9, dilation=2)])

    spec = {"arch": "realplksr", "scale": 2, "dim": 16, "n_blocks": 1, "kernel_size": 17}
    model = archs.build(spec)
    assert "fft(" in jax.jit(lambda x: model(x)).lower(jnp.zeros((1, 16, 16, 3))).compile().as_text()
    proto, _ = deploy.build_graph(model, spec)
    pads = [tuple(a.ints) for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert pads.count((8, 8, 8, 8)) == 1  # the one block's 17 x 17 kernel, one Conv
