"""DRCT beyond the parity rows (tests/test_parity.py): drop path in training and remat (use_chk) giving the same loss
and gradients, spec inference as spandrel's (DRCT-L's "large" tag, the model without shifts), detection that no
other family shares, a spandrel-style .pth with its shift masks through load_model bit-identically, and the refusals
and export warnings by name."""
import numpy as np
import pytest
from test_dat_train import _split, _train_step
from test_layout import SMALL
from test_swinir import batch, perturb, round_trip

import jax
from flax import nnx

from jaxsr import archs
from jaxsr.archs import drct
from jaxsr.errors import WeightsError

# spandrel's constructor arguments of reduced DRCTs
X4 = dict(upscale=4, embed_dim=16, depths=[6], num_heads=[4], gc=6, window_size=8, img_size=32, upsampler="pixelshuffle")
LARGE = dict(upscale=2, embed_dim=8, depths=[6] * 10, num_heads=[2] * 10, gc=4, window_size=4, img_size=4,
             mlp_ratio=1.0, upsampler="pixelshuffle", resi_connection="identity")  # DRCT-L's 10+ groups, no shifts


def torch_sd(seed=0, **cfg):
    import torch
    from spandrel.architectures.DRCT import DRCT

    torch.manual_seed(seed)
    return {k: v.detach().numpy().copy() for k, v in perturb(DRCT(**cfg), seed).state_dict().items()}


def test_remat_gives_the_same_loss_and_gradients():
    """use_chk (remat per Swin block) against none: the jitted L1 loss and gradients of a train-mode model with shifts."""
    spec = {**SMALL["drct"], "img_size": 16}
    x, y = batch(spec["scale"])
    out = []
    for use_chk in (False, True):
        m = drct.build({**spec, "use_chk": use_chk}, rngs=nnx.Rngs(2))
        m.train()
        loss, grads, _ = _train_step(*_split(m), x, y)
        out.append((float(loss), jax.tree.leaves(grads)))
    (l, g), (lc, gc) = out
    top = max(float(np.abs(v).max()) for v in g)
    worst = max(float(np.abs(u - v).max() / (np.abs(u).max() + 1e-4 * top)) for u, v in zip(g, gc))
    print(f"remat vs no remat: loss {l:.6f} / {lc:.6f}, worst relative grad diff {worst:.2e}")
    assert abs(l - lc) < 1e-6 and worst < 5e-5


def test_drop_path_rates_are_the_references():
    """Every Swin block of group i drops paths at the schedule's rate at the group's first block (the reference's
    drop_path[0]), not at its own: the rates of spandrel's module, and drop path off in eval mode."""
    import torch
    from spandrel.architectures.DRCT import DRCT

    cfg = dict(LARGE, depths=[6, 6, 6], num_heads=[2] * 3)
    tm = DRCT(**cfg, drop_path_rate=0.2)
    ours = drct.build({**drct.infer_spec(torch_sd(**cfg)), "drop_path_rate": 0.2})
    for i in range(3):
        for k in range(1, 6):
            theirs = getattr(tm.layers[i], f"swin{k}").drop_path
            ref = 0.0 if isinstance(theirs, torch.nn.Identity) else theirs.drop_prob
            dp = getattr(ours.layers[i], f"swin{k}").drop_path
            assert dp.rate == pytest.approx(ref, abs=1e-7) and dp.deterministic, (i, k)
    assert ours.layers[2].swin5.drop_path.rate == pytest.approx(0.2 * 12 / 17)
    ours.train()
    assert not ours.layers[2].swin5.drop_path.deterministic


@pytest.mark.parametrize("cfg", [X4, LARGE], ids=["x4", "large_noshift"])
def test_infer_spec_follows_spandrel(spandrel, cfg):
    import torch

    sd = torch_sd(**cfg)
    spec = drct.infer_spec(sd)
    desc = spandrel.ModelLoader().load_from_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    hp = desc.model.hyperparameters
    assert desc.architecture.id == "DRCT" and spec["scale"] == desc.scale == cfg["upscale"]
    assert ("large" in desc.tags) == (len(cfg["depths"]) >= 10)
    for ours, theirs in (("in_ch", "in_chans"), ("embed_dim", "embed_dim"), ("depths", "depths"),
                         ("num_heads", "num_heads"), ("window_size", "window_size"), ("img_size", "img_size"),
                         ("img_range", "img_range"), ("mlp_ratio", "mlp_ratio"), ("gc", "gc"), ("qkv_bias", "qkv_bias"),
                         ("resi_connection", "resi_connection"), ("patch_norm", "patch_norm"), ("ape", "ape")):
        want = list(hp[theirs]) if isinstance(hp[theirs], (list, tuple)) else hp[theirs]
        assert spec[ours] == want, (ours, spec[ours], want)


def test_detection_is_drct_only():
    """A DRCT file is DRCT's alone, and no other registered family's export looks like DRCT."""
    sd = torch_sd(**X4)
    assert archs.detect(sd) is drct.ARCH
    assert [a.name for a in archs.ARCHS if a.detect(sd)] == ["drct"]
    for name, spec in SMALL.items():
        if name != "drct" and archs.get(name).kind == "generator":
            record = archs.get(name)
            assert not drct.detect(record.to_torch(archs.build(spec, rngs=nnx.Rngs(0)), spec)), name


def test_spandrel_style_pth_with_masks_round_trips_bit_identically(tmp_path):
    """BasicSR's {'params_ema': ...} with the shift masks and int64 index buffers: load_model, export .pth and
    .safetensors, and back, byte for byte."""
    import torch

    a = round_trip(tmp_path, torch_sd(seed=2, **X4), "params_ema")
    assert a["layers.0.swin2.attn_mask"].shape == (16, 64, 64) and "layers.0.swin1.attn_mask" not in a
    assert a["layers.0.swin3.attn.relative_position_index"].dtype == torch.int64


def test_refusals_and_export_warnings(tmp_path):
    from jaxsr.weights import export

    sd = torch_sd(**X4)
    for key, match in (("layers.0.adjust3.weight", "incomplete or unsupported DRCT variant: missing layers.0.adjust3"),
                       ("conv_last.weight", "no conv_last")):
        with pytest.raises(WeightsError, match=match):
            drct.infer_spec({k: v for k, v in sd.items() if k != key})
    narrow = {**sd, "conv_last.weight": sd["conv_last.weight"][:, :32]}
    with pytest.raises(WeightsError, match="32-feature reconstruction"):
        drct.infer_spec(narrow)
    with pytest.raises(ValueError, match=r"blocks of \[13\] channels"):
        drct.build({**SMALL["drct"], "embed_dim": 9, "num_heads": [3], "gc": 2})  # 13 channels: 3 - 13 % 3 = 2 heads
    with pytest.raises(ValueError, match="give window_size=img_size"):
        drct.build({**SMALL["drct"], "img_size": 2})
    for field, value, match in (("img_range", 255.0, "img_range=255"), ("window_size", 12, "window-12")):
        spec = {**SMALL["drct"], field: value, "img_size": 24 if field == "window_size" else 8}
        with pytest.warns(UserWarning, match=match):
            export(drct.build(spec), spec, tmp_path / f"{field}.safetensors")


def test_size_multiple_is_spandrels_pad_and_the_window():
    assert [drct.build({**SMALL["drct"], "window_size": w, "img_size": w}).size_multiple for w in (4, 16, 12)] == \
        [16, 16, 48]
    np.testing.assert_equal(drct.model.block_dims(180, 6, 32), [(180, 6), (212, 4), (244, 2), (276, 6), (308, 4)])
