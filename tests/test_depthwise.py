"""Depthwise convolutions on the CPU (`jaxsr.archs.common.conv_general_dilated`: shifted slices under
lax.platform_dependent) against torch's grouped conv2d: the output and both gradients, at the strides, dilations and
kernel sizes the architectures use; and the ONNX graph of a depthwise model keeps one Conv per depthwise layer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxsr.archs import common

TOL = 2e-6  # relative to the largest magnitude of each compared tensor (fp32 sums in another order)


@pytest.mark.parametrize("k, stride, pad, dilation", [(3, 1, 1, 1), (5, 1, 2, 1), (7, 1, 3, 1), (4, 4, 0, 1), (3, 2, 1, 1),
                                                      (3, 1, 2, 2)])
def test_depthwise_equals_torch_forward_and_both_gradients(k, stride, pad, dilation):
    c = 12
    layer = common.conv(c, c, k, stride=stride, padding=pad, dilation=dilation, groups=c, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(k * 10 + stride)
    layer.kernel.value = jnp.asarray(rng.standard_normal(layer.kernel.shape, np.float32))
    layer.bias.value = jnp.asarray(rng.standard_normal(c).astype(np.float32))
    x = rng.standard_normal((2, 17, 20, c)).astype(np.float32)
    y = layer(jnp.asarray(x))
    ct = rng.standard_normal(y.shape).astype(np.float32)

    graph, params = nnx.split(layer)
    gp, gx = jax.grad(lambda p, x: jnp.sum(nnx.merge(graph, p)(x) * ct), argnums=(0, 1))(params, jnp.asarray(x))

    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    wt = torch.tensor(np.asarray(layer.kernel.value).transpose(3, 2, 0, 1), requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(np.asarray(layer.bias.value)), stride, pad, dilation, groups=c)
    (yt * torch.from_numpy(ct.transpose(0, 3, 1, 2))).sum().backward()
    for ours, ref in ((y, yt.detach().numpy().transpose(0, 2, 3, 1)), (gx, xt.grad.numpy().transpose(0, 2, 3, 1)),
                      (gp["kernel"].value, wt.grad.numpy().transpose(2, 3, 1, 0))):
        assert ours.shape == ref.shape
        assert np.abs(np.asarray(ours) - ref).max() <= TOL * np.abs(ref).max()


def test_the_cpu_runs_the_slices_and_the_onnx_graph_keeps_the_convolution():
    from jaxsr import archs, deploy

    spec = {"arch": "safmn", "scale": 2, "dim": 16, "n_blocks": 1, "ffn_scale": 2.0}
    model = archs.build(spec)
    hlo = jax.jit(lambda x: model(x)).lower(jnp.zeros((1, 16, 16, 3))).compile().as_text()
    assert "feature_group_count" not in hlo  # the CPU program has no grouped convolution left
    proto, _ = deploy.build_graph(model, spec)
    groups = [a.i for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert groups.count(4) == 4  # SAFMN's four depthwise convs of 16 / 4 channels, each one grouped Conv


def test_the_gradients_keep_no_slice_per_tap():
    """Differentiating the sum of slices kept each tap's slice (8 inputs' worth for a 3x3 layer: most of OmniSR's and
    MoSR's temporaries); the written-out gradients keep about one (and the output, for this loss's gradient)."""
    c = 64
    layer = common.conv(c, c, 3, padding=1, groups=c, rngs=nnx.Rngs(0))
    graph, params = nnx.split(layer)
    x = jnp.ones((2, 32, 32, c))
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(nnx.merge(graph, p)(x) ** 2), argnums=(0, 1)))
    assert grad.lower(params, x).compile().memory_analysis().temp_size_in_bytes < 4 * x.nbytes  # was 10x
