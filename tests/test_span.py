"""SPAN against spandrel's module (what traiNNer-redux trains) on identical weights, in eval mode (torch's
re-parameterised Conv3XC) and in training mode under jit (its two branches, gradients included); the `no_norm` buffer
and img_range/rgb_mean; eval_conv tensors; refusals by name; bf16; tiling; the recipe. (Exports that spandrel loads, their
eval_conv as torch composes it: tests/test_parity.py.)"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import photo, torch_forward
from flax import nnx

from jaxsr import archs, weights
from jaxsr.archs import span
from jaxsr.errors import WeightsError
from jaxsr.infer import upscale
from jaxsr.weights import export, load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5  # fp32, max abs diff on [0,1] images
MEAN = [0.4488, 0.4371, 0.404]


def spandrel_span(scale, fc=8, norm=False, seed=0, spread=0.02):
    """spandrel's SPAN with every parameter moved off torch's init. Built in training mode, so its eval_conv tensors are
    still random (stale): only an eval forward makes them the composition of the branches. With norm the input is
    scaled by 255, so the upsampler's weights are scaled down by as much to keep the output near [0, 1], as a trained
    norm model's are."""
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(seed)
    net = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=fc, upscale=scale, norm=norm)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * spread)
        if norm:
            net.upsampler[0].weight.mul_(1 / 255)
    return net


def numpy_sd(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def from_sd(sd, spec=None, dtype=jnp.float32):
    return weights.Weights(span.ARCH, spec or span.infer_spec(sd), span.from_torch(sd), False, "").build(dtype=dtype)[0]


def cli(*args):
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("scale,norm", [(3, False), (4, False), (3, True), (4, True)])
def test_forward_matches_spandrel(tmp_path, scale, norm):
    net = spandrel_span(scale, norm=norm)
    torch.save({"params": net.state_dict()}, tmp_path / "m.pth")  # stale eval_conv: torch recomputes it, and so do we
    model, info = load_model(tmp_path / "m.pth")
    assert (info["arch"], info["scale"]) == ("span", scale)
    assert info["hyperparameters"] == {"in_ch": 3, "out_ch": 3, "feature_channels": 8, "bias": True, "norm": norm,
                                       "img_range": 255.0, "rgb_mean": MEAN}
    x = photo("astronaut", 29, 37, top=100, left=180)[None]  # odd sizes: nothing to pad to
    ours, ref = np.asarray(model(jnp.asarray(x))), torch_forward(net, x)
    assert ours.shape == ref.shape == (1, 29 * scale, 37 * scale, 3)
    diff = np.abs(ours - ref).max()
    assert diff <= TOL, diff


@pytest.mark.parametrize("norm", [False, True])
def test_train_mode_under_jit_matches_torch_training_mode(norm):
    """model.train() gives torch's training-mode outputs and gradients: torch runs Conv3XC's branches, we run their
    composed conv and differentiate through the composition. The stored eval_conv plays no part in either mode and
    gets no gradient (it is a buffer, not a parameter)."""
    net = spandrel_span(2, norm=norm, seed=3)
    sd = numpy_sd(net)
    model = from_sd(sd)
    x = photo("coffee", 19, 22, top=150, left=200)[None]
    w = np.random.default_rng(0).normal(size=(1, 38, 44, 3)).astype(np.float32)

    net.train()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    out_t = net(xt)
    (out_t * torch.from_numpy(w.transpose(0, 3, 1, 2).copy())).sum().backward()
    ref_out = out_t.detach().numpy().transpose(0, 2, 3, 1)
    ref_grads = {k: p.grad.numpy() for k, p in net.named_parameters() if p.grad is not None}
    assert not any("eval_conv" in k for k in ref_grads)  # torch's eval_conv gets no gradient in training either

    model.train()
    for _, node in nnx.iter_graph(model):
        if isinstance(node, span.model.Conv3XC):
            node.eval_conv.kernel[...] = jnp.full_like(node.eval_conv.kernel[...], 7.0)  # garbage: must not matter

    @nnx.jit
    def forward_and_grad(m, x, w):
        def loss(m):
            out = m(x)
            return jnp.sum(out * w), out
        (_, out), grads = nnx.value_and_grad(loss, has_aux=True)(m)
        return out, grads

    out, grads = forward_and_grad(model, jnp.asarray(x), jnp.asarray(w))
    assert np.abs(np.asarray(out) - ref_out).max() <= TOL
    flat = {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(grads)}
    assert not any("eval_conv" in k for k in flat)
    for key in ("conv_1.conv.1.weight", "block_3.c2_r.sk.weight", "block_6.c1_r.conv.0.bias", "conv_cat.weight",
                "upsampler.0.weight"):
        path = key.rsplit(".", 1)[0] + (".kernel" if key.endswith("weight") else ".bias")
        g, ref = flat[path], ref_grads[key]
        if g.ndim == 4:
            g = g.transpose(3, 2, 0, 1)
        assert np.abs(g - ref).max() <= 1e-4 * np.abs(ref).max(), key

    model.eval()  # back to the re-parameterised convs: the same function up to float rounding, garbage eval_conv or not
    assert np.abs(np.asarray(model(jnp.asarray(x))) - ref_out).max() <= TOL


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_round_trip_is_bit_identical(tmp_path, ext):
    """A file saved after an eval forward (eval_conv current) round-trips bit for bit, eval_conv included. A stale
    eval_conv (saved in training mode) is replaced by the composition; every other tensor is kept bit for bit."""
    from safetensors.numpy import save_file

    net = spandrel_span(4, seed=5)
    stale = numpy_sd(net)
    torch_forward(net, photo("coffee", 8, 8)[None])  # eval forward: torch writes the composition into eval_conv
    current = numpy_sd(net)
    assert not np.array_equal(stale["conv_2.eval_conv.weight"], current["conv_2.eval_conv.weight"])
    for name, sd in (("current", current), ("stale", stale)):
        src, dst, dst2 = (tmp_path / f"{name}_{s}{ext}" for s in ("in", "out", "again"))
        if ext == ".pth":
            torch.save({"params": {k: torch.from_numpy(v) for k, v in sd.items()}}, src)
        else:
            save_file(sd, str(src))
        model, info = load_model(src)
        export(model, {"arch": "span", "scale": 4, **info["hyperparameters"]}, dst)
        back, _ = weights.read_state_dict(dst)
        assert back.keys() == sd.keys()
        for k in sd:
            want = current[k]  # the stale file's eval_conv comes back as the composition
            if name == "current" or "eval_conv" not in k:
                assert back[k].dtype == sd[k].dtype and back[k].tobytes() == sd[k].tobytes(), (name, k)
            else:
                assert np.abs(back[k] - want).max() <= 1e-6 * max(1.0, np.abs(want).max()), (name, k)
        again, _ = load_model(dst)
        export(again, {"arch": "span", "scale": 4, **info["hyperparameters"]}, dst2)
        assert all(v.tobytes() == back[k].tobytes() for k, v in weights.read_state_dict(dst2)[0].items())


def test_norm_values_spandrel_cannot_see_warn_and_bias_changes_nothing(tmp_path, spandrel):
    net = spandrel_span(2, norm=True, seed=6)
    sd = numpy_sd(net)
    x = photo("astronaut", 20, 23, top=100, left=100)[None]
    spec = {**span.infer_spec(sd), "img_range": 1.0}
    model = from_sd(sd, spec)
    ours = np.asarray(model(jnp.asarray(x)))
    with pytest.warns(UserWarning, match="img_range=1.0.*always normalise with img_range=255"):
        export(model, spec, tmp_path / "r1.safetensors")
    back, info = load_model(tmp_path / "r1.safetensors")
    assert info["hyperparameters"]["img_range"] == 1.0 and np.array_equal(np.asarray(back(jnp.asarray(x))), ours)
    desc = spandrel.ModelLoader().load_from_file(str(tmp_path / "r1.safetensors"))
    assert np.abs(torch_forward(desc.model, x) - ours).max() > 1e-3  # spandrel runs it with 255, as the warning says
    no_bias = from_sd(sd, {**span.infer_spec(sd), "bias": False})
    assert np.array_equal(np.asarray(no_bias(jnp.asarray(x))), np.asarray(from_sd(sd)(jnp.asarray(x))))
    with pytest.raises(ValueError, match="norm"):
        archs.build({"arch": "span", "scale": 2, "in_ch": 1, "out_ch": 1, "norm": True})


def test_refusals_name_what_was_found(tmp_path):
    net = spandrel_span(4)
    torch.save({"params": net.state_dict()}, tmp_path / "span.pth")
    code, _, err = cli("-m", "convert.from_pth", str(tmp_path / "span.pth"), str(tmp_path / "o"), "--arch", "esrgan")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert "expected an ESRGAN (RRDBNet) model, but the file is a SPAN model" in errors[0]
    sd = numpy_sd(net)
    del sd["block_1.c1_r.eval_conv.weight"]
    with pytest.raises(WeightsError, match="incomplete or unsupported SPAN variant: missing block_1.c1_r.eval_conv.weight"):
        span.infer_spec(sd)


@pytest.mark.parametrize("norm", [False, True])
def test_bf16_compute_stays_close_to_fp32(norm):
    """bf16 activations (fp32 params, the composed kernels rounded to bf16 once) on a real photo: PSNR of the bf16 output
    against fp32 >= 40 dB (measured 68.4 dB without norm, 71.1 dB with it)."""
    sd = numpy_sd(spandrel_span(4, fc=16, seed=7, norm=norm))
    x = jnp.asarray(photo("astronaut", 32, 32, top=200, left=200)[None])
    outs = []
    for dtype in (jnp.float32, jnp.bfloat16):
        model = from_sd(sd, dtype=dtype)
        assert model.conv_1.sk.kernel[...].dtype == jnp.float32
        outs.append(np.asarray(model(x)))
    assert outs[1].dtype == np.float32
    psnr = 10 * np.log10(1 / np.mean((outs[0] - outs[1]) ** 2))
    assert psnr >= 40, psnr


def test_tiled_equals_untiled_with_enough_overlap():
    """Receptive radius 21 LR px (conv_1, 6 x 3 Conv3XC, conv_2 and the upsampler conv, all 3x3): crop seams are exact
    once overlap/2 >= 21, blend seams once overlap/4 >= 21. At torch's init each block shrinks its input (the attention
    sigmoid(x) - 0.5 is small), so far pixels barely count and any overlap would pass; the blocks' kernels are doubled
    here so that they do (a 4 px overlap then misses by 0.1). Within 1e-5 (float rounding only)."""
    net = spandrel_span(2, seed=4)
    with torch.no_grad():
        for k, p in net.named_parameters():
            if k.startswith("block_") and p.ndim == 4:
                p.mul_(2.0)
        net.upsampler[0].weight.mul_(0.2)
    model = from_sd(numpy_sd(net))
    img = photo("coffee", 170, 203, top=60, left=120)
    ref = upscale(model, img)
    for tile, overlap, seam in ((96, 48, "crop"), (160, 96, "blend")):
        out = upscale(model, img, tile=tile, overlap=overlap, seam=seam, tile_batch=4)
        assert out.shape == ref.shape == (340, 406, 3)
        assert np.abs(out - ref).max() <= 1e-5, (tile, overlap, seam)
    assert np.abs(upscale(model, img, tile=64, overlap=16, seam="crop", tile_batch=4) - ref).max() > 1e-3  # not vacuous


def test_recipe_parameter_counts():
    """configs/span_x4.py: 1,840,488 trainable parameters (torch counts 2,236,728 with the eval_conv copies); deployed,
    the re-parameterised model has the paper's 426,288."""
    import importlib

    from jaxsr.train.config import resolve
    from jaxsr.train.kinds.sr import generator_spec

    cfg = resolve(importlib.import_module("configs.span_x4").get_config())
    model = nnx.eval_shape(lambda: archs.build(generator_spec(cfg)))
    n = lambda kind: sum(x.size for x in jax.tree.leaves(nnx.state(model, kind)))
    deployed = n(span.model.Buffer) - 1 + sum(x.size for p, x in nnx.to_flat_state(nnx.state(model, nnx.Param))
                                              if not ({"sk", "conv"} & set(map(str, p))))
    assert (n(nnx.Param), deployed) == (1_840_488, 426_288)
