"""RealPLKSR against spandrel's PyTorch module on identical perturbed weights, and its bridge both ways.

Tolerance: max abs diff <= 1e-5 against spandrel (fp32, outputs up to ~3 with perturbed weights); measured
3e-6 with GroupNorm, whose small per-group spread on photos magnifies float32 rounding (torch's own fp32 output
is 2e-6 off float64 there), and <= 1e-6 otherwise.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import parity
from conftest import photo, torch_forward
from flax import nnx

from jaxsr import archs, weights
from jaxsr.archs import realplksr
from jaxsr.errors import WeightsError
from jaxsr.weights import export, load_model

TOL = 1e-5
TINY = dict(dim=16, n_blocks=2, kernel_size=7, split_ratio=0.25)


def torch_realplksr(scale, dysample, use_ea, layer_norm, seed=0, spread=0.05, **kw):
    """spandrel's RealPLKSR with every parameter and float buffer (DySample's init_pos) moved off its init."""
    from spandrel.architectures.PLKSR import RealPLKSR

    torch.manual_seed(seed)
    net = RealPLKSR(upscaling_factor=scale, dysample=dysample, use_ea=use_ea, layer_norm=layer_norm, **{**TINY, **kw})
    with torch.no_grad():
        for t in [*net.parameters(), *(b for b in net.buffers() if b.is_floating_point())]:
            t.add_(torch.randn_like(t) * spread)
    return net.eval()


def numpy_sd(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def spec_of(scale, upsampler, use_ea, layer_norm, **kw):
    return {"arch": "realplksr", "scale": scale, **TINY, "use_ea": use_ea, "norm_groups": 4, "dropout": 0.0,
            "upsampler": upsampler, "layer_norm": layer_norm, **kw}


def perturbed(spec, seed=0, spread=0.05):
    return parity.perturbed(spec, seed, spread)


@nnx.jit
def forward(model, x):
    return model(x)


def crop():
    return photo("astronaut", 27, 35, top=100, left=150)[None]  # odd sides: nothing pads to them


# x3 both ways; each upsampler with GroupNorm and LayerNorm, with and without EA
CASES = [(3, "pixelshuffle", True, False), (3, "dysample", False, True), (4, "dysample", True, False),
         (2, "pixelshuffle", False, True)]


@pytest.mark.parametrize("scale,upsampler,use_ea,layer_norm", CASES)
def test_forward_matches_spandrel(tmp_path, spandrel, scale, upsampler, use_ea, layer_norm):
    """A traiNNer-redux-style .pth (params_ema) through load_model: inferred as spandrel infers it, same outputs."""
    net = torch_realplksr(scale, upsampler == "dysample", use_ea, layer_norm)
    torch.save({"params_ema": net.state_dict()}, tmp_path / "m.pth")
    model, info = load_model(tmp_path / "m.pth")
    assert {"arch": info["arch"], "scale": info["scale"], **info["hyperparameters"]} == spec_of(scale, upsampler, use_ea, layer_norm)
    hp = spandrel.ModelLoader().load_from_state_dict(net.state_dict()).model.hyperparameters
    for ours, theirs in (("dim", "dim"), ("n_blocks", "n_blocks"), ("kernel_size", "kernel_size"),
                         ("split_ratio", "split_ratio"), ("use_ea", "use_ea"), ("layer_norm", "layer_norm"),
                         ("norm_groups", "norm_groups"), ("scale", "upscaling_factor")):
        assert {**info["hyperparameters"], "scale": info["scale"]}[ours] == hp[theirs], ours
    assert hp["dysample"] == (upsampler == "dysample")
    x = crop()
    ours, ref = np.asarray(forward(model, jnp.asarray(x))), torch_forward(net, x)
    assert ours.shape == ref.shape == (1, 27 * scale, 35 * scale, 3)
    diff = float(np.abs(ours - ref).max())
    print(f"x{scale} {upsampler} ea={use_ea} ln={layer_norm}: max|diff| {diff:.2e} (|out| <= {np.abs(ref).max():.2f})")
    assert diff <= TOL


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_round_trip_is_bit_identical(tmp_path, ext):
    """A torch file (DySample: the init_pos buffer too; GroupNorm) -> jaxsr -> file: same keys, dtypes, bytes."""
    sd = numpy_sd(torch_realplksr(4, True, True, False, seed=3))
    src, dst = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    if ext == ".pth":
        torch.save({"params_ema": {k: torch.from_numpy(v) for k, v in sd.items()}}, src)
    else:
        from safetensors.numpy import save_file

        save_file(sd, str(src))
    model, info = load_model(src)
    export(model, {"arch": "realplksr", "scale": info["scale"], **info["hyperparameters"]}, dst)
    back, _ = weights.read_state_dict(dst)
    assert back.keys() == sd.keys()
    for k in sd:
        assert back[k].dtype == sd[k].dtype and back[k].tobytes() == sd[k].tobytes(), k


def test_bf16_compute_stays_close_to_fp32():
    """bf16 activations (fp32 params) on a real photo: PSNR of the bf16 output against fp32 >= 40 dB."""
    spec = spec_of(4, "dysample", True, False, dim=32, n_blocks=4, kernel_size=17)
    model = perturbed(spec, seed=5, spread=0.02)
    low = archs.build(spec, dtype=jnp.bfloat16)
    nnx.update(low, nnx.state(model))
    x = jnp.asarray(photo("astronaut", 32, 32, top=200, left=200)[None])
    a, b = np.asarray(forward(model, x)), np.asarray(forward(low, x))
    assert b.dtype == np.float32 and low.feats[0].kernel[...].dtype == jnp.float32
    psnr = 10 * np.log10(1 / np.mean((a - b) ** 2))
    print(f"bf16 vs fp32: {psnr:.1f} dB")
    assert psnr >= 40


def test_tiled_equals_untiled():
    """LayerNorm RealPLKSR is local (receptive field 2 * 2 * 6 + 2 = 26 LR px wide here; 2 * 2 * 11 + 2 = 46 with the
    released 17 x 17 kernel, which the CPU computes as FFTs of each tile's size), so crop seams with overlap/2 >= 13
    (23) are exact. GroupNorm's statistics span the tile instead of the image: close, not exact."""
    img = photo("coffee", 100, 130, top=60, left=120)
    for layer_norm, kernel, tile, overlap, tol in ((True, 7, 64, 32, 1e-5), (False, 7, 64, 32, 2e-2),
                                                   (True, 17, 96, 64, 1e-5)):
        model = perturbed(spec_of(2, "dysample", True, layer_norm, kernel_size=kernel), seed=7, spread=0.02)
        ref = jaxsr_upscale(model, img)
        out = jaxsr_upscale(model, img, tile=tile, overlap=overlap)
        diff = float(np.abs(out - ref).max())
        print(f"layer_norm={layer_norm} kernel {kernel}: tiled vs whole max|diff| {diff:.2e}")
        assert out.shape == ref.shape == (200, 260, 3) and diff <= tol


def jaxsr_upscale(model, img, **kw):
    from jaxsr import upscale

    return upscale(model, img, tile_batch=4, **kw) if kw else upscale(model, img)


def test_refusals_and_export_warnings(tmp_path, spandrel):
    from spandrel.architectures.PLKSR import PLKSR

    plksr = {k: v.numpy() for k, v in PLKSR(dim=16, n_blocks=2, kernel_size=7).state_dict().items()}
    assert archs.detect(plksr) is archs.get("plksr")  # spandrel's PLKSR, not RealPLKSR: jaxsr's plksr reads it
    with pytest.raises(WeightsError, match="PLKSR model .*channe_mixer.*RealPLKSR only"):
        realplksr.infer_spec(plksr)
    sd = numpy_sd(torch_realplksr(2, False, True, True))
    gray = {**sd, "feats.0.weight": sd["feats.0.weight"][:, :1]}
    with pytest.raises(WeightsError, match="1 input channels"):
        realplksr.infer_spec(gray)
    # 15 of 22 channels: split_ratio 15/22 gives int(22 * 15/22) = 14, in spandrel as here
    spec = spec_of(2, "pixelshuffle", True, True, dim=22, split_ratio=0.7)
    model = archs.build(spec)
    with pytest.warns(UserWarning, match="spandrel infers back as 14"):
        export(model, spec, tmp_path / "p15.pth")
    with pytest.raises(WeightsError, match="15 of 22 large-kernel channels"):
        realplksr.infer_spec(weights.read_state_dict(tmp_path / "p15.pth")[0])
    assert load_model(tmp_path / "p15.pth")[1]["hyperparameters"]["split_ratio"] == 0.7  # the stored spec
    # norm_groups cannot be seen in the keys: spandrel loads 2 groups as 4 and computes something else
    spec = spec_of(2, "pixelshuffle", True, False, norm_groups=2)
    model = perturbed(spec)
    with pytest.warns(UserWarning, match="norm_groups=2"):
        export(model, spec, tmp_path / "g2.safetensors")
    x = crop()
    ours = np.asarray(forward(model, jnp.asarray(x)))
    theirs = torch_forward(spandrel.ModelLoader().load_from_file(str(tmp_path / "g2.safetensors")).model, x)
    assert np.abs(theirs - ours).max() > 1e-3
    back, info = load_model(tmp_path / "g2.safetensors")
    assert info["hyperparameters"]["norm_groups"] == 2
    assert np.abs(np.asarray(forward(back, jnp.asarray(x))) - ours).max() == 0


def test_dropout_only_in_training_under_jit():
    """Built in eval mode (dropout off, deterministic); model.train() drops whole channels per sample (Dropout2d),
    fresh masks every step from the `dropout` stream, gradients finite under jit."""
    spec = spec_of(2, "pixelshuffle", True, True, dropout=0.5)
    model = perturbed(spec, seed=2)
    plain = archs.build({**spec, "dropout": 0.0})
    nnx.update(plain, nnx.state(model))
    x = jnp.asarray(np.stack([photo("astronaut", 20, 24, top=100, left=190), photo("coffee", 20, 24, top=150, left=200)]))
    y = jnp.asarray(np.stack([photo("astronaut", 40, 48, top=300, left=400), photo("coffee", 40, 48, top=200, left=300)]))
    a = np.asarray(forward(model, x))
    np.testing.assert_array_equal(a, np.asarray(forward(model, x)))
    np.testing.assert_array_equal(a, np.asarray(forward(plain, x)))

    @nnx.jit
    def step(model, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(jnp.abs(m(x) - y)))(model)
        return loss, grads

    model.train()
    drop = model.feats[spec["n_blocks"] + 1]
    mask = np.asarray(drop(jnp.ones((2, 5, 6, 16))))
    assert set(np.unique(mask)) <= {0.0, 2.0} and (mask == mask[:, :1, :1]).all()  # whole channels, 1/(1-p)
    assert 0 < (mask[:, 0, 0] == 0).mean() < 1
    l1, g1 = step(model, x, y)
    l2, _ = step(model, x, y)
    plain.train()
    l0, _ = step(plain, x, y)
    assert np.isfinite(float(l1)) and all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(g1))
    assert len({float(l0), float(l1), float(l2)}) == 3
    model.eval()
    np.testing.assert_array_equal(np.asarray(forward(model, x)), a)
