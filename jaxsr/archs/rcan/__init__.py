"""RCAN: spandrel's (and traiNNer-redux's, and the original release's) keys in and out, under `params` in a .pth.

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/RCAN/__init__.py`): an RCAN file has
`tail.1.weight`, `body.0.body.0.body.0.weight`, `body.0.body.0.body.3.conv_du.0.weight` and `head.0.weight` (or
`head.1.weight`: the unshuffle variant, whose head.0 is a PixelUnshuffle). n_resgroups and n_resblocks are the
lengths of `body` and `body.0.body` less their closing conv, the scale is the upsampler's (`tail.0`), divided by the
unshuffle factor where there is one, in_ch the last conv's outputs, kernel_size the head conv's, reduction n_feats
over the attention's squeezed width, and norm is on iff the file has `sub_mean`. rgb_range, res_scale and act_mode
leave no trace in the keys: spandrel takes 255, 1 and ReLU, and so does a file's inferred spec (jaxsr's exports
record theirs, and warn where spandrel would run them otherwise). n_feats is the head conv's outputs (spandrel reads
it from the upsampler, which x1 models without unshuffle lack).

BasicSR's RCAN (`conv_first`, `body.N.residual_group`: another key layout, and a fixed mean in place of the
MeanShift convs) is recognised to be refused by name: spandrel does not load it either.
"""
import math

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import DEFAULTS, RCAN, build

_KEYS = {"tail.1.weight", "body.0.body.0.body.0.weight", "body.0.body.0.body.3.conv_du.0.weight"}
_BASICSR = {"conv_first.weight", "body.0.residual_group.0.rcab.0.weight"}


def detect(sd):
    k = set(sd)
    return _KEYS <= k and ("head.0.weight" in k or "head.1.weight" in k) or _BASICSR <= k


def infer_spec(sd):
    if _BASICSR <= set(sd):
        raise WeightsError("BasicSR's RCAN layout (conv_first, body.N.residual_group) is not supported (spandrel cannot "
                           "load it either); jaxsr loads RCAN files in the original / spandrel / traiNNer-redux layout")
    unshuffle = seq_len(sd, "head") > 1
    head = sd[f"head.{int(unshuffle)}.weight"]
    n_feats, kernel_size = int(head.shape[0]), int(head.shape[-1])
    in_ch = int(sd["tail.1.weight"].shape[0])
    scale, _ = pixelshuffle_scale(sd, "tail.0", n_feats)
    if unshuffle:
        factor = math.isqrt(int(head.shape[1]) // in_ch)
        if scale != 4 or factor not in (2, 4) or factor * factor * in_ch != head.shape[1]:
            raise WeightsError(f"RCAN with a pixel-unshuffled head of {head.shape[1]} inputs and a x{scale} upsampler is "
                               "not a supported variant (unshuffle_mod is x4 on input unshuffled by 2 or 4)")
        scale //= factor
    # rgb_range, res_scale and act_mode leave no trace in the keys: the defaults, which spandrel assumes too
    return {"arch": "rcan", "scale": scale, "in_ch": in_ch, "n_resgroups": seq_len(sd, "body") - 1,
            "n_resblocks": seq_len(sd, "body.0.body") - 1, "n_feats": n_feats, "rgb_range": DEFAULTS["rgb_range"],
            "norm": "sub_mean.weight" in sd, "kernel_size": kernel_size,
            "reduction": n_feats // int(sd["body.0.body.0.body.3.conv_du.0.weight"].shape[0]),
            "res_scale": DEFAULTS["res_scale"], "act_mode": DEFAULTS["act_mode"], "unshuffle_mod": unshuffle}


def _unshuffled(s):
    return bool(s["unshuffle_mod"]) and s["scale"] <= 2


SPANDREL_GAPS = (
    (lambda s: s["act_mode"] != DEFAULTS["act_mode"],
     lambda s: f"RCAN with act_mode={s['act_mode']!r}: spandrel/chaiNNer always build {DEFAULTS['act_mode']!r}, so they "
               "will load this export but compute other outputs (jaxsr reads act_mode from the file's metadata)"),
    (lambda s: s["norm"] and float(s["rgb_range"]) != DEFAULTS["rgb_range"],
     lambda s: f"RCAN with rgb_range={s['rgb_range']:g}: spandrel/chaiNNer always scale by {DEFAULTS['rgb_range']:g}, so "
               "they will load this export but compute other outputs (jaxsr reads rgb_range from the file's metadata)"),
    (lambda s: s["scale"] == 1 and not _unshuffled(s) and s["n_feats"] != 64,
     lambda s: f"x1 RCAN without unshuffle_mod and n_feats={s['n_feats']}: spandrel/chaiNNer read n_feats from the "
               "upsampler, which it lacks, assume 64 and will not load this export (jaxsr will)"),
)


ARCH = Arch(
    name="rcan",
    what="an RCAN model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper="params",  # traiNNer-redux's (BasicSR's) wrapping; spandrel unwraps it, and reads the original bare files
    scales=(1, 2, 3, 4, 8),  # traiNNer-redux's template offers these (x1 and x2 also with unshuffle_mod)
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "RCAN", "build"]
