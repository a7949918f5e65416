"""SwinIR: forward parity with spandrel's PyTorch SwinIR on the same perturbed weights (fp32, real-photo crops whose
size is no multiple of the window), the bridge (spec inference as spandrel's, bit-identical round trips, refusals by
name; exports spandrel loads: tests/test_parity.py), train mode, remat, the cuDNN lowering, bf16 and tiling.

Tolerance: max abs diff <= 1e-4 in fp32 (the issue's bound).
"""
import time

import numpy as np
import pytest
from conftest import photo, torch_forward
from test_dat_train import _split, _train_step

import jax
import jax.numpy as jnp
from flax import nnx

TOL = 1e-4
CROP = dict(h=27, w=30, top=100, left=150)  # not a multiple of 7, 8 or 16 (window x unshuffle)

# Reduced versions of each task family (spandrel's constructor arguments): tiny widths and depths, every upsampler,
# both residual convs, per-group head counts, odd depths (shifted and unshifted blocks), the stored-mask path
# (img_size == padded size) and the recomputed one.
CASES = {
    "lightweight_x4": dict(upscale=4, embed_dim=24, depths=[2, 2], num_heads=[2, 3], window_size=8, mlp_ratio=2.0,
                           upsampler="pixelshuffledirect", resi_connection="1conv", img_size=32),
    "classical_x2_3conv": dict(upscale=2, embed_dim=24, depths=[3, 2], num_heads=[3, 2], window_size=8, mlp_ratio=2.0,
                               upsampler="pixelshuffle", resi_connection="3conv", img_size=48),
    "realworld_x4": dict(upscale=4, embed_dim=24, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2.0,
                         upsampler="nearest+conv", resi_connection="1conv", img_size=64),
    "jpeg_gray_x1": dict(upscale=1, in_chans=1, embed_dim=24, depths=[2, 2], num_heads=[3, 3], window_size=7,
                         mlp_ratio=2.0, upsampler="", resi_connection="1conv", img_size=28, img_range=255.0),
    "unshuffle_x2": dict(upscale=4, start_unshuffle=2, embed_dim=24, depths=[2], num_heads=[2], window_size=8,
                         mlp_ratio=1.5, upsampler="pixelshuffle", resi_connection="1conv", img_size=32),
}
# what spandrel cannot infer from the keys, but its module supports (we read them from the keys)
EXTENSIONS = dict(upscale=3, embed_dim=24, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2.0,
                  upsampler="pixelshuffle", resi_connection="1conv", img_size=32, ape=True, patch_norm=False,
                  qkv_bias=False)


def perturb(tm, seed=0):
    """Move every parameter off its initial value: norms, biases, position tables by 0.1, weights by 20% of their
    spread. (The only float buffers, the shift masks, are functions of the size, rebuilt on both sides.)"""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tm.named_parameters():
            small = name.endswith("bias") or "norm" in name or "table" in name or "pos_embed" in name or p.numel() < 2
            std = 0.1 if small else 0.2 * float(p.std())
            p.add_(torch.randn(p.shape, generator=g) * std)
    return tm.eval()


def torch_swinir(seed=0, **cfg):
    import torch
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    return perturb(SwinIR(**cfg), seed)


def state_dict_np(tm, unshuffle=False):
    """The torch module's state dict as a file holds it (start_unshuffle files keep conv_first as conv_first.1)."""
    sd = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    if unshuffle:
        for leaf in ("weight", "bias"):
            sd[f"conv_first.1.{leaf}"] = sd.pop(f"conv_first.{leaf}")
    return sd


def jax_from_torch(sd, bridge, **overrides):
    """Our model from a torch state dict, through the bridge (spec inference + key mapping, strict)."""
    from jaxsr.archs.bridge import load_state_dict

    spec = {**bridge.infer_spec(sd), **overrides}
    m = bridge.ARCH.build(spec, rngs=nnx.Rngs(0))
    load_state_dict(m, bridge.from_torch(sd) if bridge.ARCH.from_torch is not dict else sd, strict=True)
    return m, spec


@nnx.jit
def forward(model, x):
    return model(x)


def crop_photo(ch=3, **kw):
    x = photo("astronaut", **{**CROP, **kw})
    return (x.mean(-1, keepdims=True) if ch == 1 else x)[None]


def compare(m, tm, x, scale):
    ours = np.asarray(forward(m, jnp.asarray(x)))
    ref = torch_forward(tm, x)[:, : x.shape[1] * scale, : x.shape[2] * scale]  # torch keeps the padding with unshuffle
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max())


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_spandrel(case):
    from jaxsr.archs import swinir

    cfg = CASES[case]
    tm = torch_swinir(seed=1, **cfg)
    unshuffle = cfg.get("start_unshuffle", 1) > 1
    m, spec = jax_from_torch(state_dict_np(tm, unshuffle), swinir)
    scale = cfg["upscale"] // cfg.get("start_unshuffle", 1)
    assert spec["scale"] == m.scale == scale and spec["upsampler"] == cfg["upsampler"]
    d = compare(m, tm, crop_photo(cfg.get("in_chans", 3)), scale)
    print(f"{case}: max|diff| {d:.2e}")
    assert d <= TOL


def test_ape_no_patch_norm_no_qkv_bias_match_the_torch_module():
    """Options spandrel's loader assumes away (ape, patch_norm, qkv_bias) are read from the keys and match the
    reference module they come from."""
    from jaxsr.archs import swinir

    tm = torch_swinir(seed=2, **EXTENSIONS)
    m, spec = jax_from_torch(state_dict_np(tm), swinir)
    assert spec["ape"] and not spec["patch_norm"] and not spec["qkv_bias"] and spec["img_size"] == 32
    d = compare(m, tm, crop_photo(), 3)
    print(f"ape/no patch_norm/no qkv bias: max|diff| {d:.2e}")
    assert d <= TOL


def test_dot_product_attention_path_matches():
    """The jax.nn.dot_product_attention layout (the cuDNN path's; head_dim 12 padded to 16, 8 unpadded)."""
    from jaxsr.archs import swinir

    tm = torch_swinir(seed=3, **CASES["lightweight_x4"])
    m, _ = jax_from_torch(state_dict_np(tm), swinir, attn_impl="dpa")
    d = compare(m, tm, crop_photo(), 4)
    print(f"dpa path: max|diff| {d:.2e}")
    assert d <= TOL


def test_full_size_swinir_m_load_and_forward(tmp_path):
    """SwinIR-M classical x4 (180 dim, 6x6 blocks, window 8, DF2K img_size 64) from a KAIR-style {'params': ...}
    .pth, forward on a 20x27 crop (padded to 24x32)."""
    import torch

    from jaxsr import load_model

    tm = torch_swinir(seed=4, upscale=4, img_size=64, window_size=8, img_range=1.0, depths=[6] * 6, embed_dim=180,
                      num_heads=[6] * 6, mlp_ratio=2, upsampler="pixelshuffle", resi_connection="1conv")
    path = tmp_path / "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth"
    torch.save({"params": tm.state_dict()}, path)
    m, info = load_model(path)
    hp = info["hyperparameters"]
    assert info["arch"] == "swinir" and info["scale"] == 4 and hp["depths"] == [6] * 6 and hp["img_size"] == 64
    assert hp["embed_dim"] == 180 and hp["window_size"] == 8 and hp["mlp_ratio"] == 2.0
    # counted on spandrel's module: 11,900,199 (lightweight x4 929,628 and real-world large x4 28,013,059 match too)
    assert sum(v[...].size for _, v in nnx.to_flat_state(nnx.state(m, nnx.Param))) == 11_900_199
    t0 = time.time()
    d = compare(m, tm, crop_photo(h=20, w=27), 4)
    print(f"full SwinIR-M x4 20x27: max|diff| {d:.2e}, jaxsr compile+run {time.time() - t0:.1f}s")
    assert d <= TOL


# ---------------------------------------------------------------------------------------------------------- bridge


def test_infer_spec_follows_spandrel(spandrel):
    import torch

    from jaxsr.archs import swinir

    for case, cfg in CASES.items():
        tm = torch_swinir(**cfg)
        unshuffle = cfg.get("start_unshuffle", 1) > 1
        sd = state_dict_np(tm, unshuffle)
        spec = swinir.infer_spec(sd)
        desc = spandrel.ModelLoader().load_from_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        hp = desc.model.hyperparameters
        assert desc.architecture.id == "SwinIR" and spec["scale"] == desc.scale, case
        for ours, theirs in (("embed_dim", "embed_dim"), ("depths", "depths"), ("num_heads", "num_heads"),
                             ("window_size", "window_size"), ("mlp_ratio", "mlp_ratio"), ("img_size", "img_size"),
                             ("img_range", "img_range"), ("upsampler", "upsampler"),
                             ("resi_connection", "resi_connection"), ("start_unshuffle", "start_unshuffle"),
                             ("in_ch", "in_chans"), ("qkv_bias", "qkv_bias"), ("patch_norm", "patch_norm"),
                             ("ape", "ape")):
            want = list(hp[theirs]) if isinstance(hp[theirs], (list, tuple)) else hp[theirs]
            assert spec[ours] == want, (case, ours, spec[ours], want)


def _torch_sd(path):
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    return next((obj[k] for k in ("params", "params_ema") if k in obj), obj)


def round_trip(tmp_path, sd, wrapper):
    """torch .pth -> load_model -> .pth, and -> .safetensors -> load_model -> .pth: both equal the source in keys,
    dtypes, shapes and bytes (relative_position_index int64 and the shift masks included)."""
    import torch

    from jaxsr import load_model
    from jaxsr.weights import export

    src = tmp_path / "in.pth"
    torch.save({wrapper: {k: torch.from_numpy(v) for k, v in sd.items()}}, src)
    m, info = load_model(src)
    spec = {"arch": info["arch"], "scale": info["scale"], **info["hyperparameters"]}
    export(m, spec, tmp_path / "out.pth")
    export(m, spec, tmp_path / "mid.safetensors")
    m2, _ = load_model(tmp_path / "mid.safetensors")
    export(m2, spec, tmp_path / "out2.pth")
    a = _torch_sd(src)
    for out in (_torch_sd(tmp_path / "out.pth"), _torch_sd(tmp_path / "out2.pth")):
        assert set(a) == set(out), set(a) ^ set(out)
        for k in a:
            assert a[k].dtype == out[k].dtype and a[k].shape == out[k].shape, k
            assert a[k].numpy().tobytes() == out[k].numpy().tobytes(), k
    return a


@pytest.mark.parametrize("case", ["classical_x2_3conv", "unshuffle_x2"])
def test_pth_round_trip_bit_identical(tmp_path, case):
    cfg = CASES[case]
    sd = state_dict_np(torch_swinir(seed=5, **cfg), cfg.get("start_unshuffle", 1) > 1)
    a = round_trip(tmp_path, sd, "params")
    assert a["layers.0.residual_group.blocks.0.attn.relative_position_index"].dtype == __import__("torch").int64
    assert any(k.endswith("attn_mask") for k in a)


def test_refusals_and_export_warnings(tmp_path):
    import torch
    from spandrel.architectures.Swin2SR import Swin2SR

    from jaxsr import load_model
    from jaxsr.archs import swinir
    from jaxsr.errors import WeightsError
    from jaxsr.weights import export

    v2 = Swin2SR(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                 upsampler="pixelshuffledirect")
    torch.save({"params": v2.state_dict()}, tmp_path / "swin2sr.pth")
    assert load_model(tmp_path / "swin2sr.pth")[1]["arch"] == "swin2sr"  # Swin2SR's own family, not SwinIR's
    with pytest.raises(WeightsError, match="expected a SwinIR model, but the file is a Swin2SR model"):
        load_model(tmp_path / "swin2sr.pth", arch="swinir")
    sd = state_dict_np(torch_swinir(**CASES["classical_x2_3conv"]))
    sd["conv_before_upsample.0.weight"] = sd["conv_before_upsample.0.weight"][:32]
    with pytest.raises(WeightsError, match="32-feature reconstruction"):
        swinir.infer_spec(sd)
    spec = swinir.spec_for("swinir_s", embed_dim=12, depths=[2], num_heads=[2], img_size=16, ape=True)
    with pytest.warns(UserWarning, match="ape=True"):
        export(swinir.build(spec), spec, tmp_path / "ape.safetensors")


# ---------------------------------------------------------------------------------------------------------- training

TRAIN = dict(embed_dim=16, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2.0, img_size=32,
             upsampler="pixelshuffledirect", resi_connection="1conv", scale=2)


def batch(scale=2, h=20, w=24):
    x = np.stack([photo("astronaut", h, w, top=100, left=190), photo("coffee", h, w, top=150, left=200)])
    y = np.stack([photo("astronaut", scale * h, scale * w, top=300, left=400),
                  photo("coffee", scale * h, scale * w, top=200, left=300)])
    return jnp.asarray(x), jnp.asarray(y)


def check_train_mode(build, spec):
    """Drop path: off in eval (equal to the rate-0 model, rng-independent), on in training under jit (a fresh draw per
    step, finite gradients); remat (use_chk) gives the same loss and gradients."""
    x, y = batch(spec["scale"])
    m = build({**spec, "drop_path_rate": 0.5}, rngs=nnx.Rngs(1))
    m0 = build({**spec, "drop_path_rate": 0.0}, rngs=nnx.Rngs(1))
    a = np.asarray(forward(m, x))
    np.testing.assert_array_equal(a, np.asarray(forward(m, x)))
    np.testing.assert_allclose(a, np.asarray(forward(m0, x)), atol=1e-6)
    m.train()
    l1, g1, rest1 = _train_step(*_split(m), x, y)
    l2, _, _ = _train_step(*(_split(m)[:2]), rest1, x, y)
    assert np.isfinite(float(l1)) and all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(g1))
    assert float(l1) != float(l2)
    m.eval()
    np.testing.assert_array_equal(np.asarray(forward(m, x)), a)

    plain = build({**spec, "drop_path_rate": 0.5}, rngs=nnx.Rngs(2))  # m's program, compiled above
    chk = build({**spec, "drop_path_rate": 0.5, "use_chk": True}, rngs=nnx.Rngs(2))
    for model in (plain, chk):
        model.train()
    l, g, _ = _train_step(*_split(plain), x, y)
    lc, gc, _ = _train_step(*_split(chk), x, y)
    top = max(float(np.abs(v).max()) for v in jax.tree.leaves(g) if v.size)
    worst = max(float(np.abs(u - v).max() / (np.abs(u).max() + 1e-4 * top))
                for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(gc)) if u.size)
    print(f"remat vs no remat: loss {float(l):.6f} / {float(lc):.6f}, worst relative grad diff {worst:.2e}")
    assert abs(float(l) - float(lc)) < 1e-6 and worst < 5e-5


def test_train_mode_drop_path_and_remat():
    from jaxsr.archs.swinir import build, spec_for

    check_train_mode(build, spec_for("swinir_s", **TRAIN))


REMAT_MEMORY = """
import json, sys
import jax, jax.numpy as jnp
from jaxsr import parallel

assert parallel.use_memory_schedule({"use_chk": True})  # before any jax computation
from jaxsr import archs
from test_dat_train import _split, _train_step

spec = json.loads(sys.argv[1])

def temp_mib(use_chk):
    m = archs.build({**spec, "use_chk": use_chk})
    m.train()
    s = spec["scale"]
    x, y = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32), jax.ShapeDtypeStruct((2, 32 * s, 32 * s, 3), jnp.float32)
    return _train_step.trace(*_split(m), x, y).lower().compile().memory_analysis().temp_size_in_bytes / 2**20

print(json.dumps([temp_mib(False), temp_mib(True)]))
"""


def compiled_memory(spec):
    """(temp MiB without remat, with remat) of the train step compiled under XLA:CPU's memory schedule, in a fresh
    process (XLA reads the flag once)."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "tests")])
    out = subprocess.run([sys.executable, "-c", REMAT_MEMORY, json.dumps(spec)], capture_output=True, text=True,
                         cwd=root, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_remat_lowers_compiled_memory():
    from jaxsr.archs.swinir import spec_for

    plain, remat = compiled_memory(spec_for("swinir_s", embed_dim=16, depths=[3, 3], num_heads=[2, 2], scale=2))
    print(f"compiled temp memory: {plain:.0f} MiB without remat, {remat:.0f} MiB with remat")
    assert remat < 0.85 * plain


def lower_for_cuda(monkeypatch, model, B, L):
    """The bf16 train step's StableHLO for CUDA (no GPU needed): (#fused fwd, #fused bwd, {N x N tensor shapes})."""
    import re

    import jax._src.cudnn.fused_attention_stablehlo as fused

    # this machine has no cuDNN; jax asks its version only to pick kernels, and lowering needs no device
    monkeypatch.setattr(fused, "check_cudnn_version", lambda: 91000)
    model.train()
    x = jax.ShapeDtypeStruct((B, L, L, 3), jnp.float32)
    y = jax.ShapeDtypeStruct((B, model.scale * L, model.scale * L, 3), jnp.float32)
    text = _train_step.trace(*_split(model), x, y).lower(lowering_platforms=("cuda",)).as_text()
    n_fwd = len(re.findall(r"custom_call @__cudnn\$fmhaScaleBiasSoftmax\(", text))
    n_bwd = len(re.findall(r"custom_call @__cudnn\$fmhaScaleBiasSoftmaxBackward\(", text))
    shapes = [[int(d) for d in s.split("x")[:-1]] for s in re.findall(r"tensor<((?:\d+x)+)(?:bf16|f32)>", text)]
    return n_fwd, n_bwd, shapes


def test_cudnn_attention_lowers_for_gpu_without_materialising_attention(monkeypatch):
    """Every (shifted) window attention of the bf16 train step is cuDNN's fused kernel, forward and backward, and no
    N x N tensor grows with the batch (the reference's (B*nW, h, N, N) logits); only the batch-free (1, h, N, N) and
    (1, nW*h, N, N) biases and their gradients appear."""
    from jaxsr.archs.swinir import build, spec_for

    m = build(spec_for("swinir_s", **{**TRAIN, "attn_impl": "cudnn", "drop_path_rate": 0.1}), dtype=jnp.bfloat16)
    B, L, N, nW = 3, 32, 64, 16  # window 8: 64 tokens, 16 windows, 2 heads (head_dim 8)
    n_fwd, n_bwd, shapes = lower_for_cuda(monkeypatch, m, B, L)
    assert n_fwd == n_bwd == sum(TRAIN["depths"])
    nn = sorted({tuple(s) for s in shapes if s[-2:] == [N, N]})
    assert all(int(np.prod(s[:-2])) <= nW * 2 for s in nn), nn  # batch-sized logits would be >= B * nW = 48
    print(f"cuDNN fused attention: {n_fwd} forward / {n_bwd} backward calls; N x N tensors: {nn}")


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2)))


def test_bf16_compute_close_to_fp32():
    """bf16 compute (params float32) against fp32 on the same weights: PSNR >= 40 dB."""
    from jaxsr.archs import swinir

    tm = torch_swinir(seed=3, **CASES["classical_x2_3conv"])
    m, spec = jax_from_torch(state_dict_np(tm), swinir)
    mb = swinir.build(spec, dtype=jnp.bfloat16)
    nnx.update(mb, nnx.state(m))
    x = jnp.asarray(photo("astronaut", 40, 48, top=100, left=200)[None])
    out, ref = np.asarray(forward(mb, x)), np.asarray(forward(m, x))
    assert out.dtype == np.float32
    p = psnr(out, ref)
    print(f"bf16 vs fp32: PSNR {p:.1f} dB, max|diff| {np.abs(out - ref).max():.2e}")
    assert p >= 40


def test_tiled_equals_whole_image_on_the_window_grid():
    """SwinIR is local (windows, shifts, convolutions): tiles on the window grid with 48 px of overlap reproduce the
    whole-image run."""
    from jaxsr.archs.swinir import build, spec_for
    from jaxsr.infer import upscale

    m = build(spec_for("swinir_s", **TRAIN), rngs=nnx.Rngs(3))
    assert m.tile_multiple == 8  # receptive field ~ 2 x 7 (windows) + 4 (convs) px < overlap / 2
    img = photo("astronaut", 128, 176, top=100, left=100)
    ref = upscale(m, img)
    d = max(float(np.abs(upscale(m, img, tile=96, overlap=48, seam=seam, tile_batch=4) - ref).max())
            for seam in ("crop", "blend"))
    print(f"tiled (96, overlap 48) vs whole: max|diff| {d:.2e}")
    assert d <= 1e-4
