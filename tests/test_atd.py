"""ATD: what tests/test_parity.py's rows (one category group, as spandrel loads our exports) do not reach: several
category groups, the last completed by the mirrored tail, against spandrel's module with torch's sort made stable
(its unstable CPU sort orders equal categories its own way past 16 tokens; docs/archs.md); remat; detection against
every other family both ways; refusals and export warnings with their messages; a released-style file through
load_model.

Tolerance: max abs diff <= 1e-4 in fp32 (the window transformers' bound).
"""
import contextlib
from unittest import mock

import numpy as np
import pytest
from conftest import photo, torch_forward
from test_dat_train import _split, _train_step
from test_layout import SMALL
from test_swinir import batch

import jax
import jax.numpy as jnp

from jaxsr.archs import atd

TOL = 1e-4
# several groups: 27x30 pads to 32x32 = 1024 tokens, 22 groups of 48, the last with 32 mirrored tokens; the second
# group's single layer keeps its dictionary (a group's last layer does not refine it)
MULTI = dict(upscale=4, embed_dim=16, depths=[3, 1], num_heads=[2, 4], window_size=8, category_size=48, num_tokens=16,
             reducted_dim=4, convffn_kernel_size=5, mlp_ratio=2.0, upsampler="nearest+conv", norm=False)


@contextlib.contextmanager
def stable_torch_sort():
    """torch.sort with stable=True (equal categories keep their token order), as ours sorts."""
    import torch

    sort = torch.sort
    with mock.patch.object(torch, "sort", lambda t, dim=-1, stable=False: sort(t, dim=dim, stable=True)):
        yield


def torch_atd(seed=0, **cfg):
    import torch
    from spandrel.architectures.ATD import ATD

    torch.manual_seed(seed)
    m = ATD(**cfg)
    with torch.no_grad():
        for p in m.parameters():  # off the init: the dictionary scales, logit scale and sigmas too
            p.add_(torch.randn_like(p) * 0.02)
    return m


def from_torch_module(tm, **over):
    from jaxsr.archs.bridge import load_state_dict

    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    spec = {**atd.infer_spec(sd), **over}
    m = atd.build(spec)
    load_state_dict(m, atd.ARCH.from_torch(sd))
    return m, spec


def test_several_category_groups_match_the_reference_with_a_stable_sort():
    tm = torch_atd(seed=1, **MULTI)
    m, spec = from_torch_module(tm, category_size=MULTI["category_size"])
    assert (spec["upsampler"], spec["scale"], spec["norm"], spec["depths"]) == ("nearest+conv", 4, False, [3, 1])
    x = photo("astronaut", 27, 30, top=100, left=150)[None]
    ours = np.asarray(jax.jit(lambda v: m(v))(jnp.asarray(x)))
    with stable_torch_sort():
        d = float(np.abs(ours - torch_forward(tm, x)).max())
    print(f"22 groups of 48 (stable sort): max|diff| {d:.2e}")
    assert d <= TOL


def test_remat_gives_the_same_loss_and_gradients():
    spec = SMALL["atd"]
    x, y = (a[:1] for a in batch(spec["scale"], 13, 14))
    plain, chk = atd.build(spec), atd.build({**spec, "use_chk": True})
    l, g, _ = _train_step(*_split(plain), x, y)
    lc, gc, _ = _train_step(*_split(chk), x, y)
    worst = max(float(np.abs(u - v).max()) for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(gc)))
    print(f"remat vs none: loss {float(l):.7f} / {float(lc):.7f}, worst grad diff {worst:.2e}")
    assert abs(float(l) - float(lc)) < 1e-6 and worst < 1e-6
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(g))


def test_no_other_family_claims_atd_files_and_atd_claims_none_of_theirs():
    """Every registered detector against an ATD export; ATD's against the exports of the families whose keys look
    alike (window transformers with residual groups and index buffers)."""
    from jaxsr import archs

    ours = atd.ARCH.to_torch(atd.build(SMALL["atd"]), SMALL["atd"])
    assert [a.name for a in archs.ARCHS if a.detect(ours)] == ["atd"]
    alike = [n for n in ("hat", "swinir", "dat", "drct", "srformer", "swin2sr", "rgt") if n in SMALL]
    assert {"hat", "swinir", "dat"} <= set(alike)
    for name in alike:
        spec = SMALL[name]
        assert not atd.detect(archs.get(name).to_torch(archs.build(spec), spec)), name


def test_refusals_and_export_warnings(tmp_path):
    from jaxsr.errors import WeightsError
    from jaxsr.weights import export, read

    tm = torch_atd(**{**MULTI, "upscale": 2, "upsampler": "pixelshuffle"})
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    short = {**sd, "conv_before_upsample.0.weight": sd["conv_before_upsample.0.weight"][:32]}
    with pytest.raises(WeightsError, match="^this ATD has a 32-feature reconstruction; the reference"):
        atd.infer_spec(short)
    with pytest.raises(WeightsError, match="^incomplete or unsupported ATD variant: missing norm.weight$"):
        atd.infer_spec({k: v for k, v in sd.items() if k != "norm.weight"})
    spec = {**SMALL["atd"], "category_size": 64}
    with pytest.warns(UserWarning, match=r"\(category_size=64, which the weights cannot tell: spandrel guesses 256\)"):
        export(atd.build(spec), spec, tmp_path / "cat.safetensors")
    one = {**SMALL["atd"], "depths": [1]}  # no norm3/sigma in the first layer: we detect it, spandrel does not
    with pytest.warns(UserWarning, match="a first group of one layer"):
        export(atd.build(one), one, tmp_path / "one.pth")
    assert read(tmp_path / "one.pth").spec["depths"] == [1]


def test_released_style_file_through_load_model(tmp_path):
    """The authors' layout (BasicSR's params_ema) of an ATD-light-shaped module: load_model infers it as spandrel does
    (category_size 128 for the light model) and runs it as the module does (one group: 7x9 pads to 96 tokens)."""
    import torch

    from jaxsr import load_model

    cfg = dict(upscale=2, embed_dim=48, depths=[2], num_heads=[4], window_size=4, category_size=128, num_tokens=8,
               reducted_dim=8, convffn_kernel_size=7, mlp_ratio=1.0, upsampler="pixelshuffledirect")
    tm = torch_atd(seed=2, **cfg)
    torch.save({"params_ema": tm.state_dict()}, tmp_path / "atd_light.pth")
    m, info = load_model(tmp_path / "atd_light.pth")
    assert (info["arch"], info["hyperparameters"]["category_size"], info["scale"]) == ("atd", 128, 2)
    x = photo("astronaut", 7, 9, top=100, left=150)[None]
    d = float(np.abs(np.asarray(jax.jit(lambda v: m(v))(jnp.asarray(x))) - torch_forward(tm, x)).max())
    print(f"released-style ATD-light x2 through load_model: max|diff| {d:.2e}")
    assert d <= TOL
