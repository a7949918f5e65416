"""The registry of training kinds (`config.kind`); what a kind is: `jaxsr.train.kind`."""
from jaxsr.errors import ConfigError
from jaxsr.train.kinds.sr import SR
from jaxsr.train.kinds.ppon import PPON
from jaxsr.train.kinds.sftgan import SFTGAN
from jaxsr.train.kinds.pix2pix import Pix2Pix
from jaxsr.train.kinds.cyclegan import CycleGAN
from jaxsr.train.kinds.wbc import WBC
from jaxsr.train.kinds.srflow import SRFlow

KINDS = {"sr": SR}
KINDS["ppon"] = PPON
KINDS["sftgan"] = SFTGAN
KINDS["pix2pix"] = Pix2Pix
KINDS["cyclegan"] = CycleGAN
KINDS["wbc"] = WBC
KINDS["srflow"] = SRFlow


def get(name):
    if name not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {name!r}")
    return KINDS[name]
