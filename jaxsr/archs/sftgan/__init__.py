"""SFT-Net (SFTGAN's generator): both released key layouts in, each exported in the layout it came from.

The files are plain state dicts (`torch.save(model.state_dict())`): xinntao/SFTGAN's SFTGAN_noBN_OST_bg.pth and
traiNNer's sft_net_ini.pth hold `SFT_Net` (version 'pytorch': `HR_branch.0` is the first conv before a
PixelShuffle), SFTGAN_torch.pth holds `SFT_Net_torch` (version 'torch': `HR_branch.0` is an nn.Upsample, so its
first conv is `HR_branch.1`). Both share the rest of the key names: `conv0`, `sft_branch.N` (N ResBlock_SFT, then an
SFTLayer and a conv), `CondNet.N`. Every width and depth comes from the keys: the number of blocks, the trunk's
features, the classes, the condition net's widths and depth, the SFT layers' widths. The tail's two x2 stages and
CondNet's 4x4 stride-4 first conv (x4 only) are checked, not assumed.
"""
import re

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.errors import WeightsError

from .model import DEFAULTS, SCALE, VERSIONS, SFTNet, build

# the HR_branch convs of each version: [conv, PixelShuffle, ReLU] x2 or [Upsample, conv, ReLU] x2, then conv, ReLU, conv
_TAIL = {"pytorch": {0, 3, 6, 8}, "torch": {1, 4, 6, 8}}


def detect(sd):
    return {"conv0.weight", "CondNet.0.weight"} <= set(sd) and any(".SFT_scale_conv0." in k for k in sd)


def infer_spec(sd):
    version = "pytorch" if "HR_branch.0.weight" in sd else "torch"
    tail = {int(m[1]) for k in sd if (m := re.fullmatch(r"HR_branch\.(\d+)\.weight", k))}
    first = sd["CondNet.0.weight"]
    if tail != _TAIL[version] or tuple(first.shape[2:]) != (SCALE, SCALE):
        raise WeightsError(f"unsupported SFT-Net variant: HR_branch convs at {sorted(tail)} and a {first.shape[2]}x"
                           f"{first.shape[3]} first CondNet conv; jaxsr loads SFTGAN's x4 networks (convs at "
                           f"{sorted(_TAIL['pytorch'])} or {sorted(_TAIL['torch'])}, a {SCALE}x{SCALE} stride-{SCALE} "
                           "CondNet conv)")
    cond_convs = (seq_len(sd, "CondNet") + 1) // 2
    sft = next(v for k, v in sd.items() if k.endswith(".SFT_scale_conv0.weight"))
    conv0 = sd["conv0.weight"]
    return {"arch": "sftgan", "scale": SCALE, "version": version, "in_ch": int(conv0.shape[1]),
            "out_ch": int(sd["HR_branch.8.weight"].shape[0]), "num_feat": int(conv0.shape[0]),
            "num_block": seq_len(sd, "sft_branch") - 2, "num_classes": int(first.shape[1]),
            "cond_feat": int(first.shape[0]) if cond_convs > 1 else DEFAULTS["cond_feat"], "cond_convs": cond_convs,
            "cond_ch": int(sd[f"CondNet.{2 * cond_convs - 2}.weight"].shape[0]), "sft_feat": int(sft.shape[0])}


SPANDREL_GAPS = (
    (lambda s: True,
     "SFT-Net (SFTGAN): spandrel/chaiNNer do not know this family and will not load the export; SFTGAN's "
     "test_sftgan.py and traiNNer load it (SFT_Net for version 'pytorch', SFT_Net_torch for 'torch'), with the "
     "segmentation probabilities as a second input"),
)


ARCH = Arch(
    name="sftgan",
    what="an SFT-Net (SFTGAN) model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper=None,  # SFTGAN's releases and traiNNer's saves are plain state dicts
    scales=(SCALE,),
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
    condition="seg",
)

__all__ = ["ARCH", "DEFAULTS", "SFTNet", "VERSIONS", "build"]
