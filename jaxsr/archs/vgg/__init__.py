"""ESRGAN's VGG-style discriminator (`VGGStyleDiscriminator`, BasicSR's `net_d` for ESRGAN/SRGAN).

The input size (128 or 256) shows in the keys: 256 adds a fifth stage (`conv5_0`). FreezeD's blocks are the stages:
`conv<N>_<i>` and `bn<N>_<i>` are block N.
"""
import re

from jaxsr.archs.bridge import Arch

from .model import DEFAULTS, VGGStyleDiscriminator, build

_BLOCK = re.compile(r"(?:conv|bn)(\d+)_\d+")


def detect(sd):
    return {"conv0_0.weight", "conv0_1.weight", "linear1.weight", "linear2.weight"} <= set(sd)


def infer_spec(sd):
    w = sd["conv0_0.weight"]
    return {"arch": "vgg", "num_in_ch": int(w.shape[1]), "num_feat": int(w.shape[0]),
            "input_size": 256 if "conv5_0.weight" in sd else 128}


def block_of(name):
    """conv<N>_<i> / bn<N>_<i> -> N; the linear head is in no block."""
    m = _BLOCK.fullmatch(name)
    return int(m[1]) if m else None


ARCH = Arch(name="vgg", what="a VGG-style discriminator (net_d)", build=build, detect=detect, infer_spec=infer_spec,
            pth_wrapper="params", kind="discriminator", defaults=DEFAULTS, block_of=block_of)

__all__ = ["ARCH", "DEFAULTS", "VGGStyleDiscriminator", "block_of", "build"]
