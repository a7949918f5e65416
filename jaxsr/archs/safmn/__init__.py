"""SAFMN: spandrel's (and traiNNer-redux's, and the official release's) keys in and out, under `params` in a .pth.

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/SAFMN/__init__.py`): a SAFMN file has to_feat,
the first block's two norms, its SAFM's mfr.0, mfr.3 and aggr, its CCM's two convs and to_img.0 weights. dim is
`to_feat`'s outputs, n_blocks the length of `feats`, ffn_scale the CCM's hidden width over dim, and the scale
sqrt(to_img.0's outputs / 3): the model is RGB in and out.
"""
import math

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.errors import WeightsError

from .model import DEFAULTS, SAFMN, build

_KEYS = ("to_feat.weight", "feats.0.norm1.weight", "feats.0.norm2.weight", "feats.0.safm.mfr.0.weight",
         "feats.0.safm.mfr.3.weight", "feats.0.safm.aggr.weight", "feats.0.ccm.ccm.0.weight", "feats.0.ccm.ccm.2.weight",
         "to_img.0.weight")


def detect(sd):
    return set(_KEYS) <= set(sd)


def _ffn_scale(dim, hidden):
    """hidden / dim, nudged up where int(dim * it) (the reference's hidden width) would round below `hidden`."""
    f = hidden / dim
    return f if int(dim * f) == hidden else math.nextafter(f, math.inf)


def infer_spec(sd):
    w = sd["to_feat.weight"]
    dim = int(w.shape[0])
    out = int(sd["to_img.0.weight"].shape[0])
    scale = math.isqrt(out // 3)
    if w.shape[1] != 3 or 3 * scale * scale != out:
        raise WeightsError(f"SAFMN with {w.shape[1]} input channels and {out} before the PixelShuffle is not a supported "
                           "variant (the reference is RGB in and out)")
    return {"arch": "safmn", "scale": scale, "dim": dim, "n_blocks": seq_len(sd, "feats"),
            "ffn_scale": _ffn_scale(dim, int(sd["feats.0.ccm.ccm.0.weight"].shape[0]))}


ARCH = Arch(
    name="safmn",
    what="a SAFMN model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper="params",  # traiNNer-redux's (BasicSR's) wrapping; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # one PixelShuffle(s) of any s; traiNNer-redux's template offers these
    defaults=DEFAULTS,
)

__all__ = ["ARCH", "DEFAULTS", "SAFMN", "build"]
