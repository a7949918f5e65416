"""Real-CUGAN: bilibili's released files (plain state dicts, `pro` models marked by a `pro` tensor) in and out.

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/RealCUGAN/__init__.py`): a Real-CUGAN file has
the nineteen unet1/unet2 keys spandrel lists; in_ch comes from `unet1.conv1.conv.0.weight`. With `conv_final` it is
UpCunet4x, or UpCunet2x_fast when conv_final's outputs are as many as unet1's inputs (the fast model unshuffles its
input by 2; an UpCunet4x with in_ch = 4 * out_ch has the same shapes, and spandrel, like us, takes it for the fast
one); otherwise a 5-wide unet1 bottom kernel is UpCunet3x, and else UpCunet2x. out_ch from conv_final / 4 or
unet2's bottom conv. `pro` iff the file holds a `pro` tensor, which only marks the mode: spandrel replaces it by
zeros(1) before loading, and so do we where its shape is not (1,).

The denoise levels (no-denoise, denoise1x/2x/3x, conservative) are weights of the same networks, and load alike.
"""
import numpy as np

from jaxsr.archs.bridge import Arch
from jaxsr.errors import WeightsError

from .model import DEFAULTS, SCALES, UpCunet, build

_REQUIRED = ("unet1.conv1.conv.0.weight", "unet1.conv1.conv.2.weight", "unet1.conv1_down.weight",
             "unet1.conv2.conv.0.weight", "unet1.conv2.conv.2.weight", "unet1.conv2.seblock.conv1.weight",
             "unet1.conv2_up.weight", "unet1.conv_bottom.weight", "unet2.conv1.conv.0.weight", "unet2.conv1_down.weight",
             "unet2.conv2.conv.0.weight", "unet2.conv2.seblock.conv1.weight", "unet2.conv3.conv.0.weight",
             "unet2.conv3.seblock.conv1.weight", "unet2.conv3_up.weight", "unet2.conv4.conv.0.weight",
             "unet2.conv4_up.weight", "unet2.conv5.weight", "unet2.conv_bottom.weight")


def detect(sd):
    return all(k in sd for k in _REQUIRED)


def infer_spec(sd):
    pro = "pro" in sd
    in_ch = int(sd["unet1.conv1.conv.0.weight"].shape[1])
    fast = False
    if "conv_final.weight" in sd:
        out_ch = int(sd["conv_final.weight"].shape[0]) // 4
        fast = out_ch * 4 == in_ch
        scale, in_ch = (2, in_ch // 4) if fast else (4, in_ch)
        if fast and pro:
            raise WeightsError("unsupported Real-CUGAN variant: a fast x2 model (UpCunet2x_fast) with a 'pro' tensor; "
                               "the fast model has no pro mode, and spandrel cannot load it either")
    elif sd["unet1.conv_bottom.weight"].shape[2] == 5:
        scale, out_ch = 3, int(sd["unet2.conv_bottom.weight"].shape[0])
    else:
        scale, out_ch = 2, int(sd["unet2.conv_bottom.weight"].shape[0])
    return {"arch": "realcugan", "scale": scale, "in_ch": in_ch, "out_ch": out_ch, "pro": pro, "fast": fast}


def from_torch(sd):
    """The `pro` marker as the (1,) buffer the model holds (a (1,) one is kept as it is, for bit-identical round trips)."""
    out = dict(sd)
    if "pro" in out and np.shape(out["pro"]) != (1,):
        out["pro"] = np.zeros((1,), np.float32)
    return out


SPANDREL_GAPS = (
    (lambda s: int(s["scale"]) == 4 and not s["fast"] and int(s["in_ch"]) == 4 * int(s["out_ch"]),
     lambda s: f"Real-CUGAN x4 with in_ch={s['in_ch']} = 4 x out_ch: its keys have the shapes of a fast x2 model "
               "(UpCunet2x_fast), which spandrel/chaiNNer (and a .pth read back without jaxsr's metadata) will take "
               "it for, computing other outputs"),
)

ARCH = Arch(
    name="realcugan",
    what="a Real-CUGAN model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    pth_wrapper=None,  # bilibili's released files are plain state dicts
    scales=SCALES,
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "UpCunet", "build"]
