"""Real-ESRGAN's U-Net discriminator (`net_d` of RealESRGAN/RealESRNet, `UNetDiscriminatorSN`).

Files are BasicSR's `net_d_*.pth` ({'params': sd}): `conv0` and `conv9` plain, `conv1..8` spectral-normalised
(`weight_orig`, `weight_u`, `weight_v`). `skip_connection` leaves no trace in the keys, so a file is read with
BasicSR's default (True) unless the config says otherwise. FreezeD's blocks are the convs: `convN` is block N.
"""
import re

from jaxsr.archs.bridge import Arch

from .model import DEFAULTS, SNConv2d, UNetDiscriminatorSN, build

_BLOCK = re.compile(r"conv(\d+)")


def detect(sd):
    return {"conv0.weight", "conv1.weight_orig", "conv9.weight"} <= set(sd)


def infer_spec(sd):
    w = sd["conv0.weight"]
    return {"arch": "unet", "num_in_ch": int(w.shape[1]), "num_feat": int(w.shape[0]),
            "skip_connection": DEFAULTS["skip_connection"]}


def block_of(name):
    """conv<N> -> N (conv0 ... conv9)."""
    m = _BLOCK.fullmatch(name)
    return int(m[1]) if m else None


ARCH = Arch(name="unet", what="a U-Net SN discriminator (net_d)", build=build, detect=detect, infer_spec=infer_spec,
            pth_wrapper="params", kind="discriminator", defaults=DEFAULTS, block_of=block_of)

__all__ = ["ARCH", "DEFAULTS", "SNConv2d", "UNetDiscriminatorSN", "block_of", "build"]
