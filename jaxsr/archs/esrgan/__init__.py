"""ESRGAN / Real-ESRGAN (RRDBNet): three key layouts in, BasicSR keys under `params_ema` out.

Detection and hyperparameters follow spandrel (`architectures/ESRGAN/__init__.py`): BasicSR's keys
(`conv_first`, `body.N.rdbK`), the original ESRGAN's `model.N` keys and BSRGAN's `RRDB_trunk` keys. The scale
comes from the number of upsampling stages and the pixel-unshuffle factor of the input channels.

ESRGAN+ (`plus`: RRDB with `conv1x1` skips) is spandrel's fourth detection condition (`model.0` +
`model.1.sub.0.RDB1.conv1x1`) and its test `.conv1x1.` in any key; it is exported in that original `model.N` layout,
the only one in which spandrel keeps the skips (its BasicSR-key conversion drops `conv1x1`). Files in the other
layouts with `conv1x1` keys load faithfully here as ESRGAN+.
"""
import re

from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.errors import WeightsError

from .model import DEFAULTS, RRDBNet, build


def detect(sd):
    k = set(sd)
    new = {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"} <= k
    old = {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"} <= k
    bsrgan = {"conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "conv_last.weight"} <= k
    plus = {"model.0.weight", "model.1.sub.0.RDB1.conv1x1.weight"} <= k
    return new or old or bsrgan or plus


def _is_plus(sd):
    return any(".conv1x1." in k for k in sd)


def _from_old(sd):
    """Original ESRGAN `model.N` keys: model.0 conv_first, model.1.sub.{i} blocks (+ trunk conv), then
    [Upsample, conv, LReLU] per x2 stage, conv_hr, LReLU, conv_last (ESRGAN+ adds RDBk.conv1x1, bias-free)."""
    num_up = (seq_len(sd, "model") - 5) // 3
    nb = seq_len(sd, "model.1.sub") - 1  # the trunk conv after the blocks
    names = {"0": "conv_first", f"1.sub.{nb}": "conv_body", str(3 * num_up + 2): "conv_hr", str(3 * num_up + 4): "conv_last"}
    names.update({str(3 * n): f"conv_up{n}" for n in range(1, num_up + 1)})
    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv1x1\.weight", k):
            out[f"body.{m[1]}.rdb{m[2]}.conv1x1.weight"] = v
        elif (m := re.fullmatch(r"model\.(.+)\.(weight|bias)", k)) and m[1] in names:
            out[f"{names[m[1]]}.{m[2]}"] = v
        else:
            out[k] = v  # left for strict loading to report
    return out


def _from_bsrgan(sd):
    rename = [(r"RRDB_trunk\.", "body."), (r"\.RDB(\d)\.", r".rdb\1."), (r"^trunk_conv\.", "conv_body."), (r"^upconv(\d)\.", r"conv_up\1."), (r"^HRconv\.", "conv_hr.")]
    out = {}
    for k, v in sd.items():
        for pat, rep in rename:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def _to_old(sd, num_up):
    """BasicSR keys -> the original `model.N` layout (the inverse of `_from_old`)."""
    nb = seq_len(sd, "body")
    names = {"conv_first": "0", "conv_body": f"1.sub.{nb}", "conv_hr": str(3 * num_up + 2), "conv_last": str(3 * num_up + 4)}
    names.update({f"conv_up{n}": str(3 * n) for n in range(1, num_up + 1)})
    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", k):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = v
        elif m := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv1x1\.weight", k):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv1x1.weight"] = v
        else:
            mod, leaf = k.rsplit(".", 1)
            out[f"model.{names[mod]}.{leaf}"] = v
    return out


def from_torch(sd):
    if "model.0.weight" in sd:
        return _from_old(sd)
    if "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        return _from_bsrgan(sd)
    return dict(sd)


def infer_spec(sd):
    sd = from_torch(sd)
    in_nc = sd["conv_first.weight"].shape[1]
    out_nc = sd["conv_last.weight"].shape[0]
    num_up = sum(1 for k in sd if re.fullmatch(r"conv_up\d\.weight", k))
    if num_up not in (2, 3):
        raise WeightsError(f"RRDB with {num_up} upsampling stages is not supported (expected 2 for x4 or 3 for x8)")
    shuffle = {out_nc: 1, 4 * out_nc: 2, 16 * out_nc: 4}.get(in_nc)
    if shuffle is None or (shuffle > 1 and num_up != 2):
        raise WeightsError(f"RRDB with {in_nc} input and {out_nc} output channels does not match a supported scale")
    return {
        "arch": "esrgan",
        "scale": 2**num_up // shuffle,
        "in_ch": in_nc // shuffle**2,
        "out_ch": out_nc,
        "num_feat": int(sd["conv_first.weight"].shape[0]),
        "num_block": seq_len(sd, "body"),
        "num_grow_ch": int(sd["body.0.rdb1.conv1.weight"].shape[0]),
        **({"plus": True} if _is_plus(sd) else {}),
    }


def to_torch(model, spec):
    if spec.get("plus"):
        return _to_old(state_dict(model), model.num_up)
    return state_dict(model)


SPANDREL_GAPS = (
    (lambda s: s["num_grow_ch"] != DEFAULTS["num_grow_ch"],
     lambda s: f"num_grow_ch={s['num_grow_ch']}: spandrel/chaiNNer assume {DEFAULTS['num_grow_ch']} for ESRGAN and will "
               "not load this export (jaxsr, BasicSR and Real-ESRGAN's scripts will)"),
)


ARCH = Arch(
    name="esrgan",
    what="an ESRGAN (RRDBNet) model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params_ema",  # what Real-ESRGAN's inference and BasicSR read; spandrel unwraps it too
    scales=(1, 2, 4, 8),  # x4 natively, x8 with a third stage, x2/x1 through pixel-unshuffle: no x3
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "RRDBNet", "build"]
