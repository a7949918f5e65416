"""SRResNet / MSRResNet (SRGAN's generator): three key layouts in, each exported in the layout it came from.

- `basicsr`: BasicSR's MSRResNet (`conv_first`, `body.N.conv{1,2}`, `upconv1`, `upconv2`, `conv_hr`, `conv_last`),
  released as `MSRResNet_x{2,3,4}` under BasicSR's `params` wrapper, which BasicSR's test options read (param_key_g).
- `mmsr`: the same network under xinntao's mmsr names (`recon_trunk`, `HRconv`), as mmsr, zhaohengyuan1/PAN and
  victorca25/traiNNer's `MSRResNet` name it (traiNNer's cannot be built: it names an undefined block class);
  plain state dicts, as their `load_network` reads them.
- `original`: the early BasicSR / traiNNer `SRResNet` (`model.N` keys), `SRResNet_bicx4_in3nf64nb16.pth` and its
  x2/x3/x8 siblings; plain state dicts. Its released options only (no norm, CNA, ReLU, pixelshuffle): batch norm, NAC
  order, PReLU and upsample_mode='upconv' are recognised and refused by name.

Every width and depth comes from the keys: num_feat and in_ch from the first conv, out_ch from the last, num_block from
the body's length, the scale from the upsampling convs (x4: two stages; x2/x3: num_feat * s^2 channels; the
original: one stage per x2, or one of 9 * num_feat for x3). spandrel/chaiNNer know none of these layouts.
"""
import re

from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.errors import WeightsError

from .model import DEFAULTS, LAYOUTS, MSRResNet, SRResNet, bilinear_upscale, build, nearest_upscale

_BASICSR = {"conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight", "conv_last.weight"}
_MMSR = {"conv_first.weight", "recon_trunk.0.conv1.weight", "upconv1.weight", "HRconv.weight", "conv_last.weight"}
_MMSR_NAMES = (("recon_trunk.", "body."), ("HRconv.", "conv_hr."))
_RELEASED = "the released SRResNet files (no norm, mode CNA, ReLU, pixelshuffle)"


def _original(sd):
    return "model.0.weight" in sd and any(k.startswith("model.1.sub.0.res.") for k in sd)


def detect(sd):
    return _BASICSR <= set(sd) or _MMSR <= set(sd) or _original(sd)


def _rename(sd, pairs):
    out = {}
    for k, v in sd.items():
        for old, new in pairs:
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v
    return out


def from_torch(sd):
    return _rename(sd, _MMSR_NAMES) if _MMSR <= set(sd) else dict(sd)


def _msr_spec(sd, layout):
    sd = from_torch(sd)
    nf = int(sd["conv_first.weight"].shape[0])
    up = int(sd["upconv1.weight"].shape[0])
    if "upconv2.weight" in sd and up == 4 * nf:
        scale = 4
    else:
        scale = {4 * nf: 2, 9 * nf: 3}.get(up)
        if scale is None or "upconv2.weight" in sd:
            raise WeightsError(f"an MSRResNet whose upconv1 has {up} channels for {nf} features matches no scale of the "
                               "reference (x2: 4 x num_feat, x3: 9 x num_feat, x4: 4 x num_feat and an upconv2)")
    return {"arch": "srresnet", "scale": scale, "in_ch": int(sd["conv_first.weight"].shape[1]),
            "out_ch": int(sd["conv_last.weight"].shape[0]), "num_feat": nf, "num_block": seq_len(sd, "body"), "layout": layout}


def _original_spec(sd):
    if any(k.endswith("running_mean") for k in sd):
        raise WeightsError(f"an original SRResNet with batch norm (norm_type='batch') is not supported: jaxsr builds "
                           f"{_RELEASED}; train one without norm, or run it in traiNNer")
    extra = sorted(k for k in sd if re.match(r"model\.1\.sub\.\d+\.res\.", k)
                   and not re.fullmatch(r"model\.1\.sub\.\d+\.res\.[02]\.(weight|bias)", k))
    if extra:
        raise WeightsError(f"an original SRResNet whose residual blocks are not conv-ReLU-conv ({extra[0]}: mode NAC/CNAC "
                           f"or PReLU) is not supported: jaxsr builds {_RELEASED}")
    if "model.2.weight" not in sd:
        raise WeightsError(f"an original SRResNet with upsample_mode='upconv' (no model.2 conv) is not supported: jaxsr "
                           f"builds {_RELEASED}")
    nf = int(sd["model.0.weight"].shape[0])
    nb = seq_len(sd, "model.1.sub") - 1  # the LR conv follows the blocks
    stages = (seq_len(sd, "model") - 5) // 3  # [conv, shuffle, ReLU] per stage, then conv, ReLU, conv
    r2 = int(sd["model.2.weight"].shape[0]) // nf
    scale = 3 if (stages, r2) == (1, 9) else 2**stages if r2 == 4 else None
    want = [f"model.1.sub.{nb}.weight"] + [f"model.{2 + 3 * i}.weight" for i in range(stages)] + [f"model.{3 * stages + 2}.weight"]
    if scale not in (2, 3, 4, 8) or any(k not in sd for k in want):
        raise WeightsError(f"an original SRResNet with {stages} upsampling stages of {r2} x num_feat channels matches no "
                           "scale of the reference (x2/x4/x8: 4 x num_feat per stage, x3: one stage of 9 x num_feat)")
    return {"arch": "srresnet", "scale": scale, "in_ch": int(sd["model.0.weight"].shape[1]),
            "out_ch": int(sd[f"model.{3 * stages + 4}.weight"].shape[0]), "num_feat": nf, "num_block": nb,
            "layout": "original"}


def infer_spec(sd):
    if _original(sd):
        return _original_spec(sd)
    return _msr_spec(sd, "mmsr" if _MMSR <= set(sd) else "basicsr")


def to_torch(model, spec):
    sd = state_dict(model)
    if spec.get("layout") == "mmsr":
        return _rename(sd, [(new, old) for old, new in _MMSR_NAMES])
    return sd


def pth_wrapper(spec):
    """BasicSR wraps its files in `params` (and its test options read that key); mmsr, PAN and traiNNer save and load
    plain state dicts."""
    return "params" if spec.get("layout", DEFAULTS["layout"]) == "basicsr" else None


_REFERENCE = {"basicsr": "BasicSR's MSRResNet", "mmsr": "mmsr's (and PAN's) MSRResNet", "original": "traiNNer's SRResNet"}
SPANDREL_GAPS = (
    (lambda s: True,
     lambda s: f"spandrel/chaiNNer have no SRResNet/MSRResNet architecture and will not load this export; jaxsr and "
               f"{_REFERENCE[s['layout']]} (strict) do"),
)


ARCH = Arch(
    name="srresnet",
    what="an SRResNet (MSRResNet / SRGAN generator) model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper=pth_wrapper,
    scales=(2, 3, 4, 8),  # MSRResNet: 2, 3, 4; the original SRResNet also 8 (three x2 stages)
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "LAYOUTS", "MSRResNet", "SRResNet", "bilinear_upscale", "build", "nearest_upscale"]
