"""MoSR beyond the shared tables (its rows in tests/test_parity.py, SMALL, TILED): grayscale files as spandrel infers
them, ratios spandrel cannot read back (refused, and warned on export), what the constructor refuses, drop path only in
training, GPS's gradients (we run its 8 predictions as one conv with their mean kernel) against torch's, and GPS in
ONNX (SMALL's spec reaches DySample)."""
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import photo, torch_forward
from flax import nnx
from parity import perturbed

from jaxsr import archs, deploy, weights
from jaxsr.archs import mosr
from jaxsr.archs.bridge import load_state_dict, state_dict
from jaxsr.errors import WeightsError


def spec_of(**kw):
    return {"arch": "mosr", "scale": 2, "n_block": 1, "dim": 8, "kernel_size": 5, **kw}


def reference(**kw):
    from spandrel.architectures.MoSR import MoSR

    return MoSR(**{"upscale": 2, "n_block": 1, "dim": 8, "kernel_size": 5, **kw})


def numpy_sd(net):
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


def test_a_grayscale_file_reads_as_spandrel_infers_it():
    import torch

    net = reference(in_ch=1, upsampler="gps")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():  # off the init (zero biases, unit norms)
            p += 0.05 * torch.randn_like(p)
    spec = mosr.infer_spec(numpy_sd(net))
    assert (spec["in_ch"], spec["out_ch"], spec["upsampler"], spec["scale"]) == (1, 1, "gps", 2)
    model = archs.build(spec)
    load_state_dict(model, numpy_sd(net))
    x = photo("astronaut", 19, 23, top=100, left=150).mean(-1, keepdims=True)[None]
    assert np.abs(np.asarray(model(jnp.asarray(x))) - torch_forward(net, x)).max() <= 1e-5


def test_ratios_spandrel_cannot_read_back_are_refused_and_warned(tmp_path):
    # expansion_ratio 1.1 at dim 56: int(61.6) = 61 hidden, read back as 61/56 -> int(61/56 * 56) = 60
    with pytest.raises(WeightsError, match="122 fc1 .* rebuild 60 hidden"):
        mosr.infer_spec(numpy_sd(reference(dim=56, expansion_ratio=1.1)))
    spec = spec_of(dim=56, expansion_ratio=1.1)
    with pytest.warns(UserWarning, match="61 hidden .* spandrel infers back as 60"):
        weights.export(archs.build(spec), spec, tmp_path / "m.safetensors")
    assert weights.load_model(tmp_path / "m.safetensors")[1]["hyperparameters"]["expansion_ratio"] == 1.1


def test_the_constructor_refuses_what_the_reference_cannot_run():
    for bad, match in ((dict(upsampler="pixel_shuffle"), "unknown MoSR upsampler"), (dict(conv_ratio=2.0), "0 < conv"),
                       (dict(kernel_size=4), "must be odd"), (dict(upsampler="dys", dim=6), "multiple of 4"),
                       (dict(out_ch=1), "only dys")):
        with pytest.raises(ValueError, match=match):
            archs.build(spec_of(**bad))


@pytest.mark.parametrize("redux, ours", [("pixelshuffle", "ps"), ("geoensemblepixelshuffle", "gps"), ("dysample", "dys")])
def test_traiNNer_redux_upsampler_names_build_the_same_network(redux, ours):
    """traiNNer-redux's option files spell the upsamplers out; its mosr maps them to the class's names, and so do we."""
    a, b = archs.build(spec_of(upsampler=redux)), archs.build(spec_of(upsampler=ours))
    sa, sb = state_dict(a), state_dict(b)
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    x = jnp.asarray(photo("astronaut", 11, 13, top=100, left=150)[None])
    assert np.array_equal(np.asarray(a(x)), np.asarray(b(x)))


def test_drop_path_only_in_training_under_jit():
    """Built in eval mode (deterministic, drop path off); model.train() drops whole samples' block outputs with the
    reference's rates linspace(0, drop_path, n_block), fresh per call (SMALL's spec trains with drop path on, in
    tests/test_archs_train.py)."""
    spec = spec_of(n_block=2, drop_path=0.5)
    model = perturbed(spec)
    assert [b.drop_path.rate for b in model.gblocks[1:3]] == [0.0, 0.5]
    x = jnp.asarray(np.stack([photo("astronaut", 16, 16, top=100, left=150 + 16 * i) for i in range(4)]))
    f = nnx.jit(lambda m, v: m(v))
    ev = f(model, x)
    assert np.array_equal(np.asarray(f(model, x)), np.asarray(ev))
    model.train()
    a, b = np.asarray(f(model, x)), np.asarray(f(model, x))
    assert not np.array_equal(a, b) and not np.array_equal(a, np.asarray(ev))


def test_gps_runs_in_onnxruntime():
    spec = spec_of(upsampler="gps", scale=3)
    model = perturbed(spec)
    proto, _ = deploy.build_graph(model, spec)
    x = deploy.photo(23, 37)
    assert np.abs(deploy.run_onnx(proto.SerializeToString(), x) - deploy.reference(model, spec, x)).max() <= 1e-4


def test_gps_as_one_conv_gives_torchs_outputs_and_gradients():
    """GPS averages 8 convolutions' predictions; we run one conv with the averaged kernel: torch's training-mode
    output and gradients (the 8 groups' kernels each get their share through the mean), every parameter perturbed."""
    import torch

    net = reference(upsampler="gps", upscale=3)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p += 0.05 * torch.randn_like(p)
    model = archs.build(mosr.infer_spec(numpy_sd(net)))
    load_state_dict(model, numpy_sd(net))
    x = photo("coffee", 13, 17, top=150, left=200)[None]
    w = np.random.default_rng(0).normal(size=(1, 39, 51, 3)).astype(np.float32)
    net.train()
    out_t = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    (out_t * torch.from_numpy(w.transpose(0, 3, 1, 2).copy())).sum().backward()
    ref_grads = {k: p.grad.numpy() for k, p in net.named_parameters()}

    def loss(m):
        y = m(jnp.asarray(x))
        return jnp.sum(y * w), y

    model.train()
    (_, out), grads = nnx.jit(lambda m: nnx.value_and_grad(loss, has_aux=True)(m))(model)
    assert np.abs(np.asarray(out) - out_t.detach().numpy().transpose(0, 2, 3, 1)).max() <= 1e-5
    flat = {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(grads)}
    for key in ("upsampler.in_to_k.weight", "upsampler.in_to_k.bias", "gblocks.1.fc1.weight", "shortcut.conv11.bias"):
        g = flat[key.rsplit(".", 1)[0] + (".kernel" if key.endswith("weight") else ".bias")]
        ref = ref_grads[key]
        g = g.transpose(3, 2, 0, 1) if g.ndim == 4 else g
        assert np.abs(g - ref).max() <= 1e-4 * np.abs(ref).max(), key
