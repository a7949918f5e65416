"""Architectures: one folder each (the Flax module in `model.py`, its bridge and `ARCH` record in `__init__.py`),
and the one registry that lists them.

A JSON-able spec ({"arch": name, "scale": s, ...hyperparameters}) builds a model; the bridge infers the spec
from a PyTorch state dict. docs/architecture.md has the checklist for adding one.
"""
import jax.numpy as jnp

from jaxsr.errors import WeightsError

from . import compact, dat, esrgan, hat, rcan, realplksr, safmn, span, swinir, unet, vgg
from . import mosr, plksr
from . import omnisr, realcugan
from . import atd, drct, rgt, srformer, swin2sr
from .bridge import Arch

ARCHS: tuple[Arch, ...] = (esrgan.ARCH, dat.ARCH, swinir.ARCH, hat.ARCH, compact.ARCH, span.ARCH, realplksr.ARCH, unet.ARCH,
                            vgg.ARCH)
ARCHS += (plksr.ARCH, mosr.ARCH)
ARCHS += (rcan.ARCH, safmn.ARCH)
ARCHS += (realcugan.ARCH, omnisr.ARCH)
ARCHS += (swin2sr.ARCH, drct.ARCH, srformer.ARCH, rgt.ARCH, atd.ARCH)


def names(kind="generator"):
    return [a.name for a in ARCHS if a.kind == kind]


def get(name) -> Arch:
    for a in ARCHS:
        if a.name == name:
            return a
    raise WeightsError(f"unknown architecture {name!r}; supported: {', '.join(a.name for a in ARCHS)}")


def build(spec, *, rngs=None, dtype=jnp.float32):
    """The Flax module for a spec (built in eval mode where the architecture has one)."""
    return get(spec.get("arch")).build(spec, rngs=rngs, dtype=dtype)


def describe(sd):
    """What an unsupported state dict looks like, for error messages: its first keys."""
    keys = sorted(sd)
    return f"its keys look like: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"


def detect(sd, arch="auto", kind="generator") -> Arch:
    """The record for this canonical state dict; `arch` other than 'auto' insists on that family."""
    found = next((a for a in ARCHS if a.detect(sd)), None)
    if arch not in (None, "auto"):
        wanted = get(arch)
        if found is not wanted:
            what = found.what if found else describe(sd)
            raise WeightsError(f"expected {wanted.what}, but the file is {what}")
        return wanted
    if found is None:
        raise WeightsError(f"unsupported architecture: {describe(sd)}. Supported: {', '.join(names(kind))}")
    if found.kind != kind:
        raise WeightsError(f"the file is {found.what}, not a {kind}")
    return found


__all__ = ["ARCHS", "Arch", "build", "describe", "detect", "get", "names"]
