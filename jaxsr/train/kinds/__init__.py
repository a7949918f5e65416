"""The registry of training kinds (`config.kind`); what a kind is: `jaxsr.train.kind`."""
from jaxsr.errors import ConfigError
from jaxsr.train.kinds.sr import SR

KINDS = {"sr": SR}


def get(name):
    if name not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {name!r}")
    return KINDS[name]
