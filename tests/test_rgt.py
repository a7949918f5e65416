"""RGT beyond the parity rows (tests/test_parity.py): RG-SA's training recursion against the reference module in
training, drop path and remat (use_chk) in training, detection against the other families, spec inference as
spandrel's, refusals and export warnings with their messages, a spandrel-style file through load_model and the
trainer's model.arch=auto, and the tiling gap that RG-SA's global attention leaves."""
import numpy as np
import pytest
from conftest import photo
from test_layout import SMALL, perturbed
from test_dat_train import _split, _train_step
from test_swinir import batch

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr import archs, weights
from jaxsr.archs import rgt
from jaxsr.errors import WeightsError

_forward = nnx.jit(lambda model, x: model(x))

# spandrel's constructor arguments: group 1 has shifted windows and the one RG-SA block
CFG = dict(upscale=2, embed_dim=16, depth=[1, 2], num_heads=[2, 2], split_size=[4, 8], mlp_ratio=2.0, c_ratio=0.5)


def torch_rgt(seed=0, **cfg):
    import torch
    from spandrel.architectures.RGT import RGT

    torch.manual_seed(seed)
    m = RGT(**cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def numpy_sd(tm):
    return {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}


def ours_from(sd, **overrides):
    from jaxsr.archs.bridge import load_state_dict

    m = rgt.build({**rgt.infer_spec(sd), **overrides})
    load_state_dict(m, rgt.from_torch(sd))
    return m


def torch_train_forward(tm, x):
    import torch

    tm.train()
    with torch.no_grad():
        return tm(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy().transpose(0, 2, 3, 1)


def test_training_recursion_matches_the_reference_in_training():
    """In training RG-SA reduces by log4(side / 4) (27x30: once; 64x70: twice), in eval at least twice: our train mode
    (drop path 0) equals the reference module in training mode at both sizes, where the reference's training and eval
    outputs differ (27x30)."""
    from conftest import torch_forward

    tm = torch_rgt(1, **CFG, drop_path_rate=0.0)
    m = ours_from(numpy_sd(tm), drop_path_rate=0.0)
    m.train()
    for h, w in ((27, 30), (64, 70)):
        x = photo("astronaut", h, w, top=100, left=150)[None]
        want = torch_train_forward(tm, x)
        if h == 27:
            assert float(np.abs(torch_forward(tm, x) - want).max()) > 1e-4  # eval recurses twice here
        d = float(np.abs(np.asarray(_forward(m, jnp.asarray(x))) - want).max())
        print(f"train mode {h}x{w}: max|diff| {d:.2e}")
        assert d <= 1e-4


def test_train_mode_drop_path_and_remat():
    """In training drop path draws afresh at each step (the loss changes; gradients finite), and use_chk (remat per
    block, what run_train.py's --config.model.use_chk=True builds) gives the same jitted loss and gradients."""
    x, y = batch(2)
    spec = {**SMALL["rgt"], "depth": [2], "num_heads": [2], "drop_path_rate": 0.3}  # L-SA and RG-SA
    plain, chk = rgt.build(spec, rngs=nnx.Rngs(2)), rgt.build({**spec, "use_chk": True}, rngs=nnx.Rngs(2))
    for m in (plain, chk):
        m.train()
    loss, grads, rest = _train_step(*_split(plain), x, y)
    again, _, _ = _train_step(*_split(plain)[:2], rest, x, y)
    loss_c, grads_c, _ = _train_step(*_split(chk), x, y)
    leaves, leaves_c = ([g for g in jax.tree.leaves(t) if g.size] for t in (grads, grads_c))
    assert float(loss) != float(again) and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    top = max(float(np.abs(g).max()) for g in leaves)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(leaves, leaves_c)) / top
    print(f"remat vs not: loss {float(loss):.6f} / {float(loss_c):.6f}, worst grad diff {worst:.1e} of the largest")
    assert abs(float(loss) - float(loss_c)) < 1e-6 and worst < 1e-5


def test_detection_is_rgt_only_both_ways():
    """DAT shares RGT's first keys: only RGT claims an RGT file, and RGT claims none of the other window
    transformers' exports."""
    sd = numpy_sd(torch_rgt(**CFG))
    assert [a.name for a in archs.ARCHS if a.detect(sd)] == ["rgt"]
    for name in sorted({"dat", "swinir", "hat", "srformer", "swin2sr", "drct", "atd"} & set(SMALL)):
        other = archs.get(name).to_torch(archs.build(SMALL[name]), SMALL[name])
        assert not rgt.detect(other), name
        assert archs.detect(other).name == name


def test_infer_spec_follows_spandrel(spandrel):
    """Hyperparameters as spandrel reads them, 3conv, no qkv bias and a ratio spandrel reads as a fraction included."""
    import torch

    for cfg in (CFG, dict(upscale=3, embed_dim=24, depth=[1, 3], num_heads=[4, 6], split_size=[8, 8], mlp_ratio=1.5,
                          c_ratio=0.25, qkv_bias=False, resi_connection="3conv")):
        sd = numpy_sd(torch_rgt(**cfg))
        spec = rgt.infer_spec(sd)
        hp = spandrel.ModelLoader().load_from_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}).model.hyperparameters
        for ours, theirs in (("embed_dim", "embed_dim"), ("depth", "depth"), ("num_heads", "num_heads"),
                             ("mlp_ratio", "mlp_ratio"), ("split_size", "split_size"), ("c_ratio", "c_ratio"),
                             ("qkv_bias", "qkv_bias"), ("img_range", "img_range"), ("in_ch", "in_chans"),
                             ("scale", "upscale"), ("resi_connection", "resi_connection")):
            want = list(hp[theirs]) if isinstance(hp[theirs], (list, tuple)) else hp[theirs]
            assert spec[ours] == want, (ours, spec[ours], want)


def test_refusals():
    sd = numpy_sd(torch_rgt(**CFG))
    broken = {k: v for k, v in sd.items() if k != "layers.0.blocks.0.attn.attns.0.rpe_biases"}
    with pytest.raises(WeightsError, match=r"^incomplete or unsupported RGT variant: missing "
                                           r"layers\.0\.blocks\.0\.attn\.attns\.0\.rpe_biases$"):
        rgt.infer_spec(broken)
    wide = {**sd, "conv_before_upsample.0.weight": np.zeros((32, 16, 3, 3), np.float32)}
    with pytest.raises(WeightsError, match="32 reconstruction features"):
        rgt.infer_spec(wide)
    with pytest.raises(ValueError, match=r"split sizes must divide 64, not \[4, 12\]"):
        rgt.build({**SMALL["rgt"], "split_size": [4, 12]})
    with pytest.raises(ValueError, match="num_heads 3"):
        rgt.build({**SMALL["rgt"], "num_heads": [2, 3]})
    with pytest.raises(ValueError, match=r"^RGT needs inputs of at least 16x16 px \(got 15x40\); pad the image"):
        rgt.recursions(15, 40, False)
    with pytest.raises(ValueError, match="cannot reduce a 16x1100 map 3 times"):
        rgt.recursions(16, 1100, False)


@pytest.mark.parametrize("change, warning", [
    ({"split_size": [8, 4]}, r"miss \[8, 4\]"),  # spandrel reads the transposed windows (same buffer lengths)
    ({"embed_dim": 12, "num_heads": [3, 3]}, r"infer num_heads \[2, 2\] for this RGT's \[3, 3\]"),
    ({"img_range": 255.0}, "img_range=255.0"),
])
def test_export_warns_where_spandrel_cannot_follow(tmp_path, change, warning):
    spec = {**SMALL["rgt"], **change}
    assert len(rgt.ARCH.spandrel_warnings(spec)) == 1
    with pytest.warns(UserWarning, match=warning):
        weights.export(rgt.build(spec), spec, tmp_path / "m.safetensors")


def test_a_spandrel_style_file_loads_through_load_model_and_model_arch_auto(tmp_path):
    """The reference's own state dict (its 64 px shift masks included) as the authors' BasicSR file: load_model and the
    trainer's warm start with model.arch=auto give its spec, its output, and back its tensors on export."""
    import torch

    from jaxsr.train.config import base_config
    from jaxsr.train.kinds.sr import build_generator

    tm = torch_rgt(2, **CFG)
    sd = tm.state_dict()
    assert "layers.1.blocks.0.attn.attn_mask_0" in sd
    path = tmp_path / "RGT_x2.pth"
    torch.save({"params": sd}, path)
    model, info = weights.load_model(path)
    assert info["arch"] == "rgt" and info["scale"] == 2 and info["hyperparameters"]["split_size"] == [4, 8]
    cfg = base_config()
    cfg.model.arch, cfg.scale, cfg.init_weights = "auto", 2, str(path)
    warm, _ = build_generator(cfg)
    x = photo("astronaut", 38, 45, top=100, left=150)[None]
    from conftest import torch_forward

    want = torch_forward(tm.eval(), x)
    for m in (model, warm):
        assert float(np.abs(np.asarray(_forward(m, jnp.asarray(x))) - want).max()) <= 1e-4
        back = rgt.to_torch(m, info["hyperparameters"] | {"arch": "rgt"})
        assert back.keys() == sd.keys() and all(np.array_equal(back[k], sd[k].numpy()) for k in sd)


def test_tiling_is_close_but_never_exact():
    """RG-SA attends to a reduction of the whole (tile) image, so tiles differ from the whole image however large the
    overlap: on the small model with perturbed weights 6.4e-5 at tile 96, overlap 48 (crop)."""
    from jaxsr.infer import upscale

    model = perturbed(SMALL["rgt"])
    img = photo("astronaut", 150, 229, top=60, left=90)
    gap = float(np.abs(upscale(model, img, tile=96, overlap=48, seam="crop", tile_batch=4) - upscale(model, img)).max())
    print(f"tiled vs whole: {gap:.2e}")
    assert 1e-6 < gap < 2e-4
