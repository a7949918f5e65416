"""White-box Cartoonization's U-Net generator in victorca25/traiNNer's `UnetGeneratorWBC` layout (plain state dicts,
`which_model_G: wbcunet`).

From the keys: nf and in_ch from `conv.weight`, out_ch from `conv_9.weight`, the residual blocks from the `block_<i>`
prefixes (the port hard-codes four), every other width checked against nf. The port's non-U-Net `GeneratorWBC`
(`resblock.<i>`, `conv2d_transpose_1`) is recognised and refused. The 'pt'/'tf' mode leaves no trace in the keys:
files read as 'pt', the port's default (model.py).
"""
import re

from jaxsr.archs.bridge import Arch
from jaxsr.errors import WeightsError

from .model import DEFAULTS, UnetGeneratorWBC, build, upsample_tf2x


def detect(sd):
    return "conv.weight" in sd and "conv_1.weight" in sd and "conv_9.weight" in sd and (
        "block_0.conv1.weight" in sd or "resblock.0.conv1.weight" in sd)


def _widths(nf, in_ch, out_ch, blocks):
    """The (out, in) of every conv weight of a UnetGeneratorWBC with these sizes."""
    w = {"conv": (nf, in_ch), "conv_1": (nf, nf), "conv_2": (2 * nf, nf), "conv_3": (2 * nf, 2 * nf),
         "conv_4": (4 * nf, 2 * nf), "conv_5": (2 * nf, 4 * nf), "conv_6": (2 * nf, 2 * nf), "conv_7": (nf, 2 * nf),
         "conv_8": (nf, nf), "conv_9": (out_ch, nf)}
    for i in range(blocks):
        w[f"block_{i}.conv1"] = w[f"block_{i}.conv2"] = (4 * nf, 4 * nf)
    return w


def infer_spec(sd):
    if "resblock.0.conv1.weight" in sd or "conv2d_transpose_1.weight" in sd:
        raise WeightsError("unsupported WBC generator: the port's non-U-Net GeneratorWBC (resblock.<i>, "
                           "conv2d_transpose_<i>); jaxsr loads UnetGeneratorWBC (wbcunet) files only")
    nf, in_ch = (int(n) for n in sd["conv.weight"].shape[:2])
    out_ch = int(sd["conv_9.weight"].shape[0])
    blocks = len({m.group(1) for k in sd if (m := re.match(r"block_(\d+)\.", k))})
    want = _widths(nf, in_ch, out_ch, blocks)
    bad = [k for k, (o, i) in want.items() if f"{k}.weight" not in sd or tuple(sd[f"{k}.weight"].shape[:2]) != (o, i)]
    extra = sorted(k for k in sd if k.rsplit(".", 1)[0] not in want)
    if bad or extra or blocks == 0:
        raise WeightsError(f"unsupported WBC U-Net: {', '.join((bad + extra)[:4]) or 'no block_<i>'} not as "
                           f"UnetGeneratorWBC(nf={nf}) with {blocks} blocks has them; export the port's "
                           "UnetGeneratorWBC state_dict unchanged")
    return {"arch": "wbcunet", "scale": 1, "in_ch": in_ch, "out_ch": out_ch, "nf": nf, "num_blocks": blocks,
            "mode": DEFAULTS["mode"]}


SPANDREL_GAPS = (
    (lambda s: True,
     lambda s: "spandrel/chaiNNer have no White-box Cartoonization architecture and will not load this export; jaxsr "
               + ("and victorca25/traiNNer's UnetGeneratorWBC (WBCNet_arch.py, strict"
                  + (", mode='tf'" if s["mode"] == "tf" else "") + ") load it" if s["num_blocks"] == 4 else
                  f"loads it, victorca25/traiNNer's UnetGeneratorWBC will not (it hard-codes four residual blocks, this "
                  f"model has {s['num_blocks']})")),
)

ARCH = Arch(
    name="wbcunet",
    what="a White-box Cartoonization U-Net generator (UnetGeneratorWBC)",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    scales=(1,),
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "UnetGeneratorWBC", "build", "upsample_tf2x"]
