"""Swin2SR: what tests/test_parity.py's rows (pixelshuffle 3conv x2, pixelshuffle_aux x4, pixelshuffledirect x3 without
shifts) do not cover: the other upsamplers against the reference module (nearest+conv; pixelshuffle_hf, which
spandrel loads but cannot run; the x1 JPEG model at window 7 and img_range 255) with spec inference as spandrel's,
detection beside SwinIR, refusals and export warnings, the trainer's model.arch=auto, train mode and remat.

Tolerance: max abs diff <= 1e-4 in fp32 (the window transformers' bound).
"""
import numpy as np
import pytest
from conftest import photo, torch_forward
from test_swinir import check_train_mode, forward

import jax.numpy as jnp

TOL = 1e-4

# spandrel's constructor arguments: tiny widths, a shifted block in each group
CASES = {
    "realworld_x4": dict(upscale=4, embed_dim=12, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2.0,
                         upsampler="nearest+conv", resi_connection="3conv", img_size=16),
    "hf_x2": dict(upscale=2, embed_dim=12, depths=[2], num_heads=[3], window_size=4, mlp_ratio=2.0,
                  upsampler="pixelshuffle_hf", resi_connection="1conv", img_size=8),
    "jpeg_gray_x1": dict(upscale=1, in_chans=1, embed_dim=12, depths=[2], num_heads=[2], window_size=7, mlp_ratio=2.0,
                         upsampler="", resi_connection="1conv", img_size=14, img_range=255.0),
}


def torch_swin2sr(seed=0, **cfg):
    """spandrel's module with every parameter moved off its init (weights by 20% of their spread, the rest by 0.1)."""
    import torch
    from spandrel.architectures.Swin2SR import Swin2SR

    torch.manual_seed(seed)
    tm = Swin2SR(**cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tm.named_parameters():
            std = 0.1 if p.ndim < 2 or "norm" in name or "logit_scale" in name else 0.2 * float(p.std())
            p.add_(torch.randn(p.shape, generator=g) * std)
    return tm.eval()


def state_dict_np(tm):
    return {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}


def crop(ch=3):
    x = photo("astronaut", 27, 30, top=100, left=150)[None]  # no multiple of 4, 7 or 8
    return x.mean(-1, keepdims=True) if ch == 1 else x


def reference_output(tm, x):
    """What the reference computes: its one image, or for pixelshuffle_hf the second of (base, base + hf, hf)."""
    import torch

    if tm.upsampler != "pixelshuffle_hf":
        return torch_forward(tm, x)
    with torch.no_grad():
        return tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))[1].numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("case", list(CASES))
def test_upsamplers_match_the_reference_and_the_spec_is_spandrels(spandrel, case):
    import torch

    from jaxsr.archs import swin2sr
    from jaxsr.archs.bridge import load_state_dict

    cfg = CASES[case]
    tm = torch_swin2sr(seed=1, **cfg)
    sd = state_dict_np(tm)
    spec = swin2sr.infer_spec(sd)
    desc = spandrel.ModelLoader().load_from_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    hp = desc.model.hyperparameters
    for ours, theirs in (("scale", "upscale"), ("in_ch", "in_chans"), ("embed_dim", "embed_dim"), ("depths", "depths"),
                         ("num_heads", "num_heads"), ("window_size", "window_size"), ("mlp_ratio", "mlp_ratio"),
                         ("img_size", "img_size"), ("img_range", "img_range"), ("upsampler", "upsampler"),
                         ("resi_connection", "resi_connection"), ("qkv_bias", "qkv_bias"),
                         ("patch_norm", "patch_norm"), ("ape", "ape")):
        want = list(hp[theirs]) if isinstance(hp[theirs], (list, tuple)) else hp[theirs]
        assert spec[ours] == want, (ours, spec[ours], want)
    # the jax.nn.dot_product_attention layout (the cuDNN path's) for one case, head_dim 4 zero-padded to 8
    m = swin2sr.build({**spec, "attn_impl": "dpa" if case == "hf_x2" else "xla"})
    load_state_dict(m, swin2sr.from_torch(sd), strict=True)
    x = crop(cfg.get("in_chans", 3))
    d = float(np.abs(np.asarray(forward(m, jnp.asarray(x))) - reference_output(tm, x)).max())
    print(f"{case}: max|diff| {d:.2e}")
    assert d <= TOL


def test_detection_beside_swinir_refusals_and_export_warnings(tmp_path):
    import torch
    from test_swinir import CASES as SWINIR
    from test_swinir import torch_swinir

    from jaxsr import load_model
    from jaxsr.archs import swin2sr
    from jaxsr.errors import WeightsError
    from jaxsr.weights import export

    torch.save({"params": torch_swinir(**SWINIR["lightweight_x4"]).state_dict()}, tmp_path / "swinir.pth")
    torch.save(torch_swin2sr(**CASES["hf_x2"]).state_dict(), tmp_path / "swin2sr.pth")  # bare, as released
    assert load_model(tmp_path / "swinir.pth")[1]["arch"] == "swinir"
    assert load_model(tmp_path / "swin2sr.pth")[1]["arch"] == "swin2sr"
    with pytest.raises(WeightsError, match="^expected a Swin2SR model, but the file is a SwinIR model$"):
        load_model(tmp_path / "swinir.pth", arch="swin2sr")

    sd = state_dict_np(torch_swin2sr(**CASES["realworld_x4"]))
    wide = {**sd, "patch_embed.proj.weight": np.zeros((12, 12, 2, 2), np.float32)}
    with pytest.raises(WeightsError, match="^this Swin2SR has patch_size 2; the reference's forward runs at "
                       "patch size 1 only .spandrel cannot run it either., so jaxsr does not support it$"):
        swin2sr.infer_spec(wide)
    narrow = {**sd, "conv_before_upsample.0.weight": sd["conv_before_upsample.0.weight"][:32]}
    with pytest.raises(WeightsError, match="32-feature reconstruction"):
        swin2sr.infer_spec(narrow)
    with pytest.raises(WeightsError, match="no patch_embed.proj.weight"):
        swin2sr.infer_spec({k: v for k, v in sd.items() if not k.startswith("patch_embed.proj")})

    hf = swin2sr.spec_for("swin2sr_s", embed_dim=12, depths=[1, 2], num_heads=[2, 2], window_size=4, img_size=8,
                          upsampler="pixelshuffle_hf", scale=2)
    with pytest.warns(UserWarning) as caught:
        export(swin2sr.build(hf), hf, tmp_path / "hf.safetensors")
    said = [str(w.message) for w in caught]
    assert len(said) == 2 and "depth-1 first group" in said[0] and "three images" in said[1], said


def test_the_trainers_model_arch_auto_takes_a_released_file(tmp_path):
    """A bare state dict (as the authors release them) warm-starts the trainer with model.arch=auto: the reference's
    architecture, hyperparameters and outputs."""
    import torch

    from jaxsr.train.config import base_config
    from jaxsr.train.kinds.sr import build_generator

    tm = torch_swin2sr(seed=2, **CASES["realworld_x4"])
    torch.save(tm.state_dict(), tmp_path / "Swin2SR_RealworldSR_X4.pth")
    cfg = base_config()
    cfg.model.arch, cfg.scale, cfg.init_weights = "auto", 4, str(tmp_path / "Swin2SR_RealworldSR_X4.pth")
    model, _ = build_generator(cfg)
    assert type(model).__name__ == "Swin2SR" and model.upsampler == "nearest+conv"
    x = crop()
    assert float(np.abs(np.asarray(forward(model, jnp.asarray(x))) - torch_forward(tm, x)).max()) <= TOL


def test_train_mode_drop_path_and_remat():
    from jaxsr.archs.swin2sr import build, spec_for

    spec = spec_for("swin2sr_s", embed_dim=8, depths=[2], num_heads=[2], window_size=4, img_size=8, scale=2)
    check_train_mode(build, spec)  # post-norm blocks: drop path after each norm; remat per block
