"""SRVGGNetCompact (Compact): Real-ESRGAN's realesr-general-x4v3 (64 feat, 32 convs) and realesr-animevideov3
(64 feat, 16 convs) and traiNNer-redux's compact / ultracompact / superultracompact, keys as the reference names them,
written under `params` as Real-ESRGAN saves them.

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/Compact/__init__.py`): a Compact file has
`body.0.weight` and `body.1.weight`; num_feat and in_ch come from `body.0.weight`, num_conv = (last index - 2) // 2,
and scale and out_ch from the last conv's channels (tried as out_ch = in_ch, 3, 4, 1). spandrel always builds the
PReLU activation: `body.1.weight` *is* the first PReLU's slopes. ReLU and LeakyReLU hold no tensors, so such a file
has only the even-indexed convs, its keys cannot tell ReLU from LeakyReLU, and spandrel does not recognise it at all.
We recognise it (to name it) and refuse it, unless it is a jaxsr export, whose metadata records `act_type`; exporting
one warns that spandrel/chaiNNer cannot load it.
"""
import re

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.archs.upsample import scale_and_out_ch
from jaxsr.errors import WeightsError

from .model import ACT_TYPES, DEFAULTS, SRVGGNetCompact, build

_BODY = re.compile(r"body\.(\d+)\.(weight|bias)")


def _plain_activation_layout(sd):
    """Keys of a Compact with a parameter-free activation: only `body.N.weight/bias`, N even, 0..2k+2 with k >= 0."""
    idx = set()
    for key in sd:
        m = _BODY.fullmatch(key)
        if m is None:
            return False
        idx.add(int(m[1]))
    return "body.0.weight" in sd and len(idx) >= 2 and idx == set(range(0, max(idx) + 1, 2)) and getattr(sd["body.0.weight"], "ndim", 0) == 4


def detect(sd):
    return {"body.0.weight", "body.1.weight"} <= set(sd) or _plain_activation_layout(sd)


def infer_spec(sd):
    if "body.1.weight" not in sd:
        raise WeightsError(
            "this is an SRVGGNetCompact (Compact) model with a parameter-free activation (ReLU or LeakyReLU, which its "
            "keys cannot tell apart); spandrel/chaiNNer cannot load it either. jaxsr reads such a model only from its own "
            "exports, which record act_type")
    highest = seq_len(sd, "body") - 1
    first = sd["body.0.weight"]
    in_ch, num_feat = int(first.shape[1]), int(first.shape[0])
    num_conv = (highest - 2) // 2
    slopes = sorted({tuple(sd[k].shape) for k in sd if (m := _BODY.fullmatch(k)) and int(m[1]) % 2 and m[2] == "weight"})
    if slopes != [(num_feat,)]:
        raise WeightsError(f"unsupported Compact variant: PReLU slopes of shape {', '.join(map(str, slopes))}; the reference "
                           f"(and spandrel) has one slope per channel, ({num_feat},)")
    scale, out_ch = scale_and_out_ch(int(sd[f"body.{highest}.weight"].shape[0]), in_ch)
    return {"arch": "compact", "scale": scale, "in_ch": in_ch, "out_ch": out_ch, "num_feat": num_feat, "num_conv": num_conv,
            "act_type": "prelu"}


SPANDREL_GAPS = (
    (lambda s: s["act_type"] != "prelu",
     lambda s: f"act_type={s['act_type']!r}: spandrel/chaiNNer recognise Compact files by their PReLU weights "
               "(body.1.weight) and will not load this export; jaxsr reads it back from the spec in the file's metadata, "
               "and Real-ESRGAN's scripts load it when built with the same act_type"),
)


ARCH = Arch(
    name="compact",
    what="an SRVGGNetCompact (Compact) model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper="params",  # how Real-ESRGAN saves realesr-general-x4v3.pth / realesr-animevideov3.pth; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # one PixelShuffle(s) of any s; traiNNer-redux's template offers 1, 2, 3, 4 and 8
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ACT_TYPES", "ARCH", "DEFAULTS", "SRVGGNetCompact", "build"]
