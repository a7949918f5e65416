"""SRFormer beyond the shared tables (its rows in tests/test_parity.py, SMALL): x1 restoration and the options spandrel
reads from the keys (ape, patch_norm, qkv_bias) against the torch module, img_size read past a depth-1 first group
(where spandrel cannot, warned on export), detection that claims SRFormer files only, refusals by name, and train
mode (drop path, remat giving the same loss and gradients)."""
import warnings

import numpy as np
import pytest
from conftest import photo, torch_forward
from parity import perturbed
from test_layout import SMALL
from test_dat_train import _split, _train_step
from test_swinir import batch, forward

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr import archs, weights
from jaxsr.archs import srformer
from jaxsr.archs.bridge import load_state_dict
from jaxsr.errors import WeightsError

TOL = 1e-4
# spandrel_extra_arches' constructor arguments
GRAY_X1_APE = dict(upscale=1, in_chans=1, embed_dim=8, depths=[2], num_heads=[1], window_size=4, mlp_ratio=2.0,
                   upsampler="", img_size=20, ape=True, patch_norm=False, qkv_bias=False)
DEPTH_1_FIRST = dict(upscale=2, embed_dim=8, depths=[1, 2], num_heads=[2, 2], window_size=4, mlp_ratio=2.0,
                     upsampler="pixelshuffle", img_size=16)


def torch_srformer(seed=0, **cfg):
    """The reference module with every parameter moved off its init."""
    import torch
    from spandrel_extra_arches.architectures.SRFormer import SRFormer

    torch.manual_seed(seed)
    tm = SRFormer(**cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tm.named_parameters():
            small = p.numel() < 2 or any(s in name for s in ("bias", "norm", "table", "pos_embed"))
            p.add_(torch.randn(p.shape, generator=g) * (0.1 if small else 0.2 * float(p.std())))
    return tm.eval()


def ours_from(tm):
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    spec = srformer.infer_spec(sd)
    model = srformer.build(spec)
    load_state_dict(model, srformer.from_torch(sd))
    return model, spec


@pytest.mark.parametrize("cfg", [GRAY_X1_APE, DEPTH_1_FIRST], ids=["gray_x1_ape", "depth_1_first_group"])
def test_variants_beyond_the_parity_rows_compute_as_the_torch_module(cfg):
    tm = torch_srformer(**cfg)
    model, spec = ours_from(tm)
    assert spec["img_size"] == cfg["img_size"] and spec["scale"] == cfg["upscale"]
    assert (spec["ape"], spec["patch_norm"], spec["qkv_bias"]) == (cfg.get("ape", False), cfg.get("patch_norm", True),
                                                                   cfg.get("qkv_bias", True))
    x = photo("astronaut", 20, 20, top=100, left=150) if cfg.get("ape") else photo("astronaut", 27, 30, top=100, left=150)
    x = (x.mean(-1, keepdims=True) if cfg.get("in_chans") == 1 else x)[None]
    ref = torch_forward(tm, x)
    d = float(np.abs(np.asarray(forward(model, jnp.asarray(x))) - ref).max())
    print(f"max|diff| {d:.2e}")
    assert d <= TOL
    if not cfg.get("ape"):  # the jax.nn.dot_product_attention layout (the cuDNN path's): 16 queries against 4 keys
        dpa = srformer.build({**spec, "attn_impl": "dpa"})  # per window, head_dim 4 zero-padded to 8
        load_state_dict(dpa, srformer.from_torch({k: v.numpy() for k, v in tm.state_dict().items()}))
        assert float(np.abs(np.asarray(forward(dpa, jnp.asarray(x))) - ref).max()) <= TOL


@pytest.mark.parametrize("cfg, says", [(DEPTH_1_FIRST, "a first group of depth 1 hides img_size"),
                                       ({**DEPTH_1_FIRST, "ape": True}, "ape=True without a shifted block 1")])
def test_exports_spandrel_cannot_load_warn_and_spandrel_indeed_fails(tmp_path, spandrel, cfg, says):
    _, spec = ours_from(torch_srformer(**cfg))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights.export(perturbed(spec), spec, tmp_path / "m.pth")
    assert [str(w.message) for w in caught] == archs.get("srformer").spandrel_warnings(spec) and len(caught) == 1
    assert says in str(caught[0].message)
    with pytest.raises(Exception):
        spandrel.ModelLoader().load_from_file(str(tmp_path / "m.pth"))
    back = weights.read(tmp_path / "m.pth").spec  # jaxsr reads the spec stored with it, and infers the same
    assert back["img_size"] == srformer.infer_spec(weights.read_state_dict(tmp_path / "m.pth")[0])["img_size"] == 16


def test_detection_claims_srformer_files_only():
    """No other family claims an SRFormer state dict (SwinIR's and HAT's look alike), and SRFormer claims no other
    generator's."""
    mine = srformer.to_torch(perturbed(SMALL["srformer"]), SMALL["srformer"])
    assert archs.detect(mine) is srformer.ARCH
    assert [a.name for a in archs.ARCHS if a.detect(mine)] == ["srformer"]
    for name, spec in SMALL.items():
        if name != "srformer" and archs.get(name).kind == "generator":
            record = archs.get(name)
            assert not srformer.detect(record.to_torch(archs.build(spec), spec)), name


def test_refusals_name_what_cannot_be_loaded():
    sd = srformer.to_torch(perturbed(SMALL["srformer"]), SMALL["srformer"])
    with pytest.raises(WeightsError, match=r"^incomplete SRFormer file: missing layers\.0\.residual_group\.blocks\.0\."
                                           r"mlp\.fc1\.bias \(spandrel needs them too\)$"):
        srformer.infer_spec({k: v for k, v in sd.items() if not k.endswith("blocks.0.mlp.fc1.bias")})
    narrow = {**sd, "conv_before_upsample.0.weight": sd["conv_before_upsample.0.weight"][:32]}
    with pytest.raises(WeightsError, match="^this SRFormer has a 32-feature reconstruction; the reference"):
        srformer.infer_spec(narrow)
    table = "layers.0.residual_group.blocks.0.attn.relative_position_bias_table"
    with pytest.raises(WeightsError, match="bias table has 10 rows"):
        srformer.infer_spec({**sd, table: np.zeros((10, 2), np.float32)})
    with pytest.raises(WeightsError, match="^expected a SwinIR model, but the file is an SRFormer model$"):
        archs.detect(sd, arch="swinir")


@pytest.mark.parametrize("kw, says", [(dict(window_size=7), "window_size must be even"),
                                      (dict(embed_dim=18, num_heads=[2]), "multiple of 4"),
                                      (dict(upsampler="nearest+conv", scale=2), "x4 only"),
                                      (dict(upsampler="", scale=2), "is x1")])
def test_the_constructor_refuses_what_the_reference_cannot_run(kw, says):
    with pytest.raises(ValueError, match=says):
        srformer.build({**SMALL["srformer"], **kw})


def test_train_mode_drop_path_and_remat():
    """model.train() turns drop path on; remat (use_chk) gives the same loss and gradients, drop-path draws included."""
    spec = srformer.spec_for("srformer_light", embed_dim=8, depths=[2], num_heads=[2], window_size=4, img_size=8,
                             scale=2, drop_path_rate=0.3)
    x, y = batch(2)
    runs = []
    for kw in ({}, dict(use_chk=True)):
        m = srformer.build({**spec, **kw}, rngs=nnx.Rngs(2))
        assert m.layers[0].residual_group.blocks[1].drop_path.deterministic
        m.train()
        assert not m.layers[0].residual_group.blocks[1].drop_path.deterministic
        runs.append(_train_step(*_split(m), x, y)[:2])
    (l, g), (lc, gc) = runs
    worst = max(float(np.abs(u - v).max()) for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(gc)))
    print(f"remat vs none: loss {float(l):.6f} / {float(lc):.6f}, worst grad diff {worst:.2e}")
    assert np.isfinite(float(l)) and abs(float(l) - float(lc)) < 1e-6 and worst < 1e-5
