"""Real-ESRGAN's U-Net discriminator (`net_d` of RealESRGAN/RealESRNet, `UNetDiscriminatorSN`).

Files are BasicSR's `net_d_*.pth` ({'params': sd}): `conv0` and `conv9` plain, `conv1..8` spectral-normalised
(`weight_orig`, `weight_u`, `weight_v`). `skip_connection` leaves no trace in the keys, so a file is read with
BasicSR's default (True) unless the config says otherwise.
"""
from jaxsr.archs.bridge import Arch

from .model import SNConv2d, UNetDiscriminatorSN, build


def detect(sd):
    return {"conv0.weight", "conv1.weight_orig", "conv9.weight"} <= set(sd)


def infer_spec(sd):
    w = sd["conv0.weight"]
    return {"arch": "unet", "num_in_ch": int(w.shape[1]), "num_feat": int(w.shape[0]), "skip_connection": True}


ARCH = Arch(name="unet", what="a U-Net SN discriminator (net_d)", build=build, detect=detect, infer_spec=infer_spec,
            pth_wrapper="params", kind="discriminator")

__all__ = ["ARCH", "SNConv2d", "UNetDiscriminatorSN", "build"]
