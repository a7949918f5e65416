"""RealPLKSR: neosr's/traiNNer-redux's keys in and out (`params_ema`, as traiNNer-redux saves its EMA model).

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/PLKSR/__init__.py`): the PLKSR family is
`feats.0` + a large-kernel conv + `refine` + a channel mixer in `feats.1`; RealPLKSR is the one spelt
`channel_mixer`. dim from feats.0, n_blocks = len(feats) - 3, the scale from the last conv (3 * s^2 outputs),
kernel_size and split_ratio (pdim / dim) from `lk.conv`, use_ea iff `attn.f.0`, layer_norm iff
`layer_norm.bias`, DySample iff `to_img.init_pos`.

What the keys cannot tell: `dropout` (training only, no weights) and `norm_groups`, which spandrel assumes to
be 4 (GroupNorm's weights have `dim` entries whatever the groups). A file without jaxsr's stored spec is read
with 4 groups; an export with other groups (and GroupNorm in use) warns, since spandrel would load it without
complaint and compute with 4. The original PLKSR (`channe_mixer`, which spandrel tells apart first) is jaxsr's
`plksr`. Refused by name: files that spandrel cannot rebuild either (other than 3 channels; a pdim that
int(dim * pdim / dim) does not give back; a large kernel other than `lk.conv`).
"""
import math

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.errors import WeightsError

from .model import DEFAULTS, IN_CH, RealPLKSR, build, dysample_groups, pdim_for

SPANDREL_NORM_GROUPS = DEFAULTS["norm_groups"]  # what spandrel assumes: the keys cannot tell the groups
_LK = ("feats.1.lk.conv.weight", "feats.1.lk.convs.0.weight", "feats.1.lk.mn_conv.weight")


def plksr_family(sd):
    """spandrel's condition for its PLKSR architecture, which holds both networks."""
    return ("feats.0.weight" in sd and any(k in sd for k in _LK) and "feats.1.refine.weight" in sd
            and ("feats.1.channe_mixer.0.weight" in sd or "feats.1.channel_mixer.0.weight" in sd))


def detect(sd):
    """The PLKSR family without the original's `channe_mixer`, which spandrel tells apart first (jaxsr's `plksr`)."""
    return plksr_family(sd) and "feats.1.channe_mixer.0.weight" not in sd


def infer_spec(sd):
    if "feats.1.channel_mixer.0.weight" not in sd:
        raise WeightsError("this is a PLKSR model (the original, feats.N.channe_mixer), not a RealPLKSR; "
                           "the realplksr bridge reads RealPLKSR only (arch 'plksr' or 'auto' loads it)")
    if "feats.1.lk.conv.weight" not in sd:
        raise WeightsError("RealPLKSR without feats.1.lk.conv (a sparse large kernel): spandrel cannot build it either")
    w0 = sd["feats.0.weight"]
    dim, in_ch = int(w0.shape[0]), int(w0.shape[1])
    n_feats = seq_len(sd, "feats")
    last = sd[f"feats.{n_feats - 1}.weight"]
    if in_ch != IN_CH or int(last.shape[0]) % IN_CH:
        raise WeightsError(f"RealPLKSR with {in_ch} input channels and {int(last.shape[0])} output features: spandrel "
                           "and jaxsr build it for 3-channel (RGB) images only")
    scale = math.isqrt(int(last.shape[0]) // IN_CH)
    lk = sd["feats.1.lk.conv.weight"]
    pdim = int(lk.shape[0])
    split_ratio = pdim / dim
    if pdim_for(dim, split_ratio) != pdim:
        raise WeightsError(f"RealPLKSR with {pdim} of {dim} large-kernel channels: split_ratio {pdim}/{dim} rebuilds "
                           f"{pdim_for(dim, split_ratio)} in the reference (spandrel cannot load this file either)")
    spec = {
        "arch": "realplksr",
        "scale": scale,
        "dim": dim,
        "n_blocks": n_feats - 3,
        "kernel_size": int(lk.shape[2]),
        "split_ratio": split_ratio,
        "use_ea": "feats.1.attn.f.0.weight" in sd,
        "norm_groups": SPANDREL_NORM_GROUPS,  # not in the keys: spandrel's assumption
        "dropout": DEFAULTS["dropout"],  # training only, not in the keys
        "upsampler": "dysample" if "to_img.init_pos" in sd else "pixelshuffle",
        "layer_norm": "feats.1.layer_norm.bias" in sd,
    }
    if spec["upsampler"] == "dysample":
        n = int(sd["to_img.init_pos"].shape[1])
        if n != 2 * dysample_groups(scale) * scale * scale:
            raise WeightsError(f"RealPLKSR DySample with {n} offsets at x{scale}: expected "
                               f"{2 * dysample_groups(scale) * scale * scale} (groups {dysample_groups(scale)})")
    return spec


def _inferred_pdim(s):
    """The large-kernel channels spandrel rebuilds from an export's: int(dim * pdim / dim), which can lose one."""
    pdim = pdim_for(s["dim"], s["split_ratio"])
    return pdim_for(s["dim"], pdim / s["dim"])


# shared with the original PLKSR (jaxsr/archs/plksr), whose split_ratio spandrel infers the same way
PDIM_GAP = (lambda s: _inferred_pdim(s) != pdim_for(s["dim"], s["split_ratio"]),
            lambda s: f"split_ratio={s['split_ratio']} gives {pdim_for(s['dim'], s['split_ratio'])} of {s['dim']} "
                      f"channels, which spandrel infers back as {_inferred_pdim(s)} and will not load this export "
                      "(jaxsr will)")
SPANDREL_GAPS = (
    (lambda s: not s["layer_norm"] and s["norm_groups"] != SPANDREL_NORM_GROUPS,
     lambda s: f"norm_groups={s['norm_groups']}: spandrel/chaiNNer cannot see the groups in the keys and assume "
               f"{SPANDREL_NORM_GROUPS}; they will load this export and compute other outputs (jaxsr reads the groups "
               "from the spec it stores)"),
    PDIM_GAP,
)


ARCH = Arch(
    name="realplksr",
    what="a RealPLKSR model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper="params_ema",  # traiNNer-redux saves its EMA generator so; spandrel unwraps it
    scales=(1, 2, 3, 4),  # pixelshuffle or DySample, both any integer factor
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "RealPLKSR", "build"]
