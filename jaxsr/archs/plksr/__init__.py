"""PLKSR (the original, not RealPLKSR): the reference's keys in and out (`params_ema`, as traiNNer-redux saves its EMA
model; the paper's BasicSR releases wrap them in `params`, which reads too).

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/PLKSR/__init__.py`): the PLKSR family (shared
with RealPLKSR) whose first block spells its mixer `channe_mixer` (the reference's typo; spandrel tests it before
RealPLKSR's `channel_mixer`). dim from feats.0, n_blocks = len(feats) - 2, the scale from the last conv (3 * s^2
outputs), use_ea iff `attn.f.0`, ccm_type from the kernel sizes of channe_mixer.0/.2 (3/1 CCM, 3/3 DCCM, 1/3 ICCM);
lk_type PLK from `lk.conv` (kernel_size, split_ratio), RectSparsePLK from `lk.mn_conv` (kernel_size = its height),
SparsePLK from `lk.convs` (split_ratio only).

What the keys cannot tell: `with_idt` (no weights: False, as spandrel assumes), and for SparsePLK the dilations,
`use_max_kernel` and kernel_size, which spandrel takes as its defaults (four 5x5 convs, dilations 1-4, no max kernel).
A file without jaxsr's stored spec is read with those; a SparsePLK file whose convs are not four 5x5 ones is refused
by name (spandrel cannot load it either), and exports that spandrel would load and compute otherwise, or not load,
warn (`SPANDREL_GAPS`). Refused by name too: files spandrel cannot rebuild (other than 3 channels, an unknown mixer, a
pdim that int(dim * pdim / dim) does not give back).
"""
import math

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.archs.realplksr import PDIM_GAP, plksr_family
from jaxsr.errors import WeightsError

from .model import CCM_TYPES, DEFAULTS, IN_CH, PLKSR, build, pdim_for

_MIXER = "feats.1.channe_mixer"


def detect(sd):
    """The PLKSR family with the original's `channe_mixer` (the rest is RealPLKSR, jaxsr's `realplksr`)."""
    return plksr_family(sd) and f"{_MIXER}.0.weight" in sd


def _check_sparse_convs(sd):
    """The kernel sizes of a SparsePLK file's `lk.convs`, refused unless they are the four 5x5 spandrel assumes."""
    n = seq_len(sd, "feats.1.lk.convs")
    sizes = [tuple(int(d) for d in sd[f"feats.1.lk.convs.{i}.weight"].shape[2:]) for i in range(n)]
    expected = [(k, k) for k in DEFAULTS["sparse_kernels"]]
    if sizes != expected:
        raise WeightsError(f"PLKSR SparsePLK with large-kernel convs {sizes}: the keys do not tell their dilations or "
                           f"use_max_kernel, and spandrel reads every SparsePLK file as {expected} with dilations "
                           f"{list(DEFAULTS['sparse_dilations'])} (it cannot load this one either)")


def infer_spec(sd):
    w0 = sd["feats.0.weight"]
    dim, in_ch = int(w0.shape[0]), int(w0.shape[1])
    n_feats = seq_len(sd, "feats")
    out = int(sd[f"feats.{n_feats - 1}.weight"].shape[0])
    scale = math.isqrt(out // IN_CH)
    if in_ch != IN_CH or out != IN_CH * scale * scale:
        raise WeightsError(f"PLKSR with {in_ch} input channels and {out} output features: spandrel and jaxsr build it "
                           "for 3-channel (RGB) images only")
    kernels = (int(sd[f"{_MIXER}.0.weight"].shape[2]), int(sd[f"{_MIXER}.2.weight"].shape[2]))
    ccm_type = next((name for name, ks in CCM_TYPES.items() if ks == kernels), None)
    if ccm_type is None:
        raise WeightsError(f"PLKSR channel mixer with {kernels[0]}x{kernels[0]} and {kernels[1]}x{kernels[1]} convs: "
                           "neither CCM, ICCM nor DCCM (spandrel refuses it too)")
    spec = {"arch": "plksr", "scale": scale, **DEFAULTS, "dim": dim, "n_blocks": n_feats - 2, "ccm_type": ccm_type,
            "use_ea": "feats.1.attn.f.0.weight" in sd}
    if "feats.1.lk.conv.weight" in sd:
        lk = sd["feats.1.lk.conv.weight"]
        spec.update(lk_type="PLK", kernel_size=int(lk.shape[2]))
    elif "feats.1.lk.mn_conv.weight" in sd:
        lk = sd["feats.1.lk.mn_conv.weight"]
        spec.update(lk_type="RectSparsePLK", kernel_size=int(lk.shape[2]))
    else:
        lk = sd["feats.1.lk.convs.0.weight"]
        _check_sparse_convs(sd)
        spec.update(lk_type="SparsePLK")  # kernel_size: spandrel's default, which without use_max_kernel is unused
    pdim = int(lk.shape[0])
    spec["split_ratio"] = pdim / dim
    if pdim_for(dim, spec["split_ratio"]) != pdim:
        raise WeightsError(f"PLKSR with {pdim} of {dim} large-kernel channels: split_ratio {pdim}/{dim} rebuilds "
                           f"{pdim_for(dim, spec['split_ratio'])} in the reference (spandrel cannot load this file either)")
    spec["sparse_kernels"], spec["sparse_dilations"] = list(spec["sparse_kernels"]), list(spec["sparse_dilations"])
    return spec


def _plain(v):
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else v


def _sparse_differs(s, fields):
    """A SparsePLK spec whose `fields` are not what spandrel assumes (DEFAULTS)."""
    return s["lk_type"] == "SparsePLK" and any(_plain(s[f]) != _plain(DEFAULTS[f]) for f in fields)


SPANDREL_GAPS = (
    (lambda s: s["with_idt"] and s["lk_type"] != "RectSparsePLK",
     "with_idt=True: spandrel/chaiNNer cannot see it in the keys and assume False; they will load this export and "
     "compute other outputs (jaxsr reads it from the spec it stores)"),
    (lambda s: _sparse_differs(s, ("sparse_kernels", "use_max_kernel")),
     lambda s: f"SparsePLK with sparse_kernels={list(s['sparse_kernels'])}, use_max_kernel={s['use_max_kernel']}: "
               f"spandrel/chaiNNer read every SparsePLK file as sparse_kernels={list(DEFAULTS['sparse_kernels'])} "
               "without a max kernel and will not load this export (jaxsr reads the spec it stores)"),
    (lambda s: not _sparse_differs(s, ("sparse_kernels", "use_max_kernel")) and _sparse_differs(s, ("sparse_dilations",)),
     lambda s: f"SparsePLK with sparse_dilations={list(s['sparse_dilations'])}: spandrel/chaiNNer cannot see dilations "
               f"in the keys and assume {list(DEFAULTS['sparse_dilations'])}; they will load this export and compute "
               "other outputs (jaxsr reads them from the spec it stores)"),
    PDIM_GAP,
)


ARCH = Arch(
    name="plksr",
    what="a PLKSR model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper="params_ema",  # traiNNer-redux saves its EMA generator so; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # one PixelShuffle of any factor; traiNNer-redux's template offers these
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "PLKSR", "build"]
