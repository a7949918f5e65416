"""SPAN: spandrel's (and traiNNer-redux's) keys in and out, with the `eval_conv` tensors and the `no_norm` buffer
that spandrel's strict load needs.

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/SPAN/__init__.py`): a SPAN file has all of
conv_1.sk, block_1.c1_r.sk, block_1.c1_r.eval_conv, block_1.c3_r.eval_conv, conv_cat, conv_2.sk, conv_2.eval_conv and
upsampler.0 weights; in_ch and feature_channels come from `conv_1.sk.weight`, scale and out_ch from `upsampler.0.weight`
(tried as out_ch = in_ch, 3, 4, 1); norm is off iff the file has `no_norm`. img_range and rgb_mean leave no trace in
the keys: spandrel takes 255 and the DIV2K mean, and so does a file's inferred spec (jaxsr's exports record theirs,
and warn where spandrel would run them with other values). `bias` is always True there and changes nothing.

`eval_conv`: torch recomputes it from `conv`/`sk` at every eval forward, so a file may hold a stale one (a checkpoint
saved in training mode). The export writes the file's own tensor where it already is that composition (to float
rounding), which keeps round trips bit-identical, and the composition of the exported weights otherwise.
"""
import re

import numpy as np

from jaxsr.archs.bridge import Arch, state_dict
from jaxsr.archs.upsample import scale_and_out_ch
from jaxsr.errors import WeightsError

from .model import DEFAULTS, SPAN, build, reparameterise

_REQUIRED = ("conv_1.sk.weight", "block_1.c1_r.sk.weight", "block_1.c1_r.eval_conv.weight", "block_1.c3_r.eval_conv.weight",
             "conv_cat.weight", "conv_2.sk.weight", "conv_2.eval_conv.weight", "upsampler.0.weight")
_EVAL_CONV = re.compile(r"(.*)\.eval_conv\.weight")


def detect(sd):
    """The SPAN family (spandrel's first two detection keys); infer_spec names what an incomplete one lacks."""
    return {"conv_1.sk.weight", "block_1.c1_r.sk.weight"} <= set(sd)


def infer_spec(sd):
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise WeightsError(f"incomplete or unsupported SPAN variant: missing {', '.join(missing)} (spandrel needs them too)")
    w = sd["conv_1.sk.weight"]
    in_ch, feats = int(w.shape[1]), int(w.shape[0])
    scale, out_ch = scale_and_out_ch(int(sd["upsampler.0.weight"].shape[0]), in_ch)
    # bias, img_range and rgb_mean leave no trace in the keys: the defaults, which spandrel assumes too
    return {"arch": "span", "scale": scale, "in_ch": in_ch, "out_ch": out_ch, "feature_channels": feats,
            "bias": DEFAULTS["bias"], "norm": "no_norm" not in sd, "img_range": DEFAULTS["img_range"],
            "rgb_mean": list(DEFAULTS["rgb_mean"])}


def from_torch(sd):
    """`no_norm` only marks norm off, its value is never read: spandrel replaces it by zeros(1) before loading, and so
    do we where its shape is not (1,) (a (1,) one is kept as it is, for bit-identical round trips)."""
    out = dict(sd)
    if "no_norm" in out and np.shape(out["no_norm"]) != (1,):
        out["no_norm"] = np.zeros((1,), np.float32)
    return out


def _torch_merged(sd, prefix):
    """The re-parameterised eval_conv (OIHW weight, bias) of the Conv3XC at `prefix`, in float64, from torch tensors."""
    hwio = lambda k: np.asarray(sd[f"{prefix}.{k}.weight"], np.float64).transpose(2, 3, 1, 0)
    b = lambda k: np.asarray(sd[f"{prefix}.{k}.bias"], np.float64)
    kernel, bias = reparameterise(hwio("sk"), b("sk"), hwio("conv.0"), b("conv.0"), hwio("conv.1"), b("conv.1"), hwio("conv.2"),
                                  b("conv.2"), einsum=np.einsum, pad=np.pad)
    return kernel.transpose(3, 2, 0, 1), bias


def _is_current(stored, merged):
    stored = np.asarray(stored, np.float64)
    return stored.shape == merged.shape and np.abs(stored - merged).max() <= 1e-4 * max(np.abs(merged).max(), 1e-12)


def _other_normalisation(s):
    return s["norm"] and (float(s["img_range"]) != DEFAULTS["img_range"]
                          or tuple(map(float, s["rgb_mean"])) != tuple(DEFAULTS["rgb_mean"]))


SPANDREL_GAPS = (
    (_other_normalisation,
     lambda s: f"SPAN with img_range={s['img_range']} and rgb_mean={s['rgb_mean']}: spandrel/chaiNNer always normalise "
               f"with img_range={DEFAULTS['img_range']:g} and rgb_mean={DEFAULTS['rgb_mean']}, so they will load this "
               "export but compute other outputs (jaxsr reads the values from the file's metadata)"),
)


def to_torch(model, spec):
    sd = state_dict(model)
    for key in [k for k in sd if _EVAL_CONV.fullmatch(k)]:
        prefix = key[: -len(".eval_conv.weight")]
        weight, bias = _torch_merged(sd, prefix)
        if not (_is_current(sd[key], weight) and _is_current(sd[f"{prefix}.eval_conv.bias"], bias)):
            sd[key], sd[f"{prefix}.eval_conv.bias"] = weight.astype(np.float32), bias.astype(np.float32)
    return sd


ARCH = Arch(
    name="span",
    what="a SPAN model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params",  # traiNNer-redux's (BasicSR's) wrapping; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # one PixelShuffle(s) of any s; traiNNer-redux's template offers 1, 2, 3, 4 and 8
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "SPAN", "build"]
