"""PAN (pixel attention network): zhaohengyuan1/PAN's key layout (`PANx{2,3,4}_DF2K.pth`, plain state dicts), both ways.

nf and in_ch come from conv_first, unf from upconv1, out_ch from conv_last, nb from the SCPA trunk's length, and the
scale from the upsampling stages: x4 has a second stage (`upconv2`, `att2`, `HRconv2`). x2 and x3 files have exactly
the same keys and shapes (one stage whose nearest upsampling factor is not stored), so a one-stage file reads as x2:
PANx3_DF2K.pth is x3 only when told so (`weights.read(path).build({**spec, 'scale': 3})`; a warm start with
`--config.scale=3 --config.init_strict=False`, where every tensor still matches). jaxsr's own exports (.safetensors,
and jaxsr folders) record the scale.

victorca25/traiNNer's port of PAN (`PAN_arch.PAN` there: `PACnv`, an `upsample` nn.Sequential, the optional `FSA`
self-attention and align_corners=True in its input skip) is another network under other keys; it is recognised and
refused by name. spandrel/chaiNNer have no PAN.
"""
from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.errors import WeightsError

from .model import DEFAULTS, PAN, build

_CORE = {"conv_first.weight", "SCPA_trunk.0.conv1_a.weight", "trunk_conv.weight", "conv_last.weight"}


def detect(sd):
    return _CORE <= set(sd)


def infer_spec(sd):
    if "upconv1.weight" not in sd or "SCPA_trunk.0.PACnv.k2.weight" in sd:
        raise WeightsError("this is victorca25/traiNNer's port of PAN (PACnv, an `upsample` sequence, FSA self-attention, "
                           "an align_corners=True skip), a different network: jaxsr builds zhaohengyuan1/PAN's PAN "
                           "(PANx4_DF2K.pth's layout)")
    nf = int(sd["conv_first.weight"].shape[0])
    if int(sd["SCPA_trunk.0.conv1_a.weight"].shape[0]) != nf // 2:
        raise WeightsError(f"a PAN whose SCPA branches have {int(sd['SCPA_trunk.0.conv1_a.weight'].shape[0])} channels "
                           f"for nf={nf}: the reference builds nf // 2 (reduction 2)")
    return {"arch": "pan", "scale": 4 if "upconv2.weight" in sd else 2, "in_ch": int(sd["conv_first.weight"].shape[1]),
            "out_ch": int(sd["conv_last.weight"].shape[0]), "nf": nf, "unf": int(sd["upconv1.weight"].shape[0]),
            "nb": seq_len(sd, "SCPA_trunk")}


SPANDREL_GAPS = (
    (lambda s: True,
     "spandrel/chaiNNer have no PAN architecture and will not load this export; jaxsr and the reference "
     "(zhaohengyuan1/PAN's PAN_arch.PAN, strict) do"),
)


ARCH = Arch(
    name="pan",
    what="a PAN (pixel attention network) model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    scales=(2, 3, 4),
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "PAN", "build"]
