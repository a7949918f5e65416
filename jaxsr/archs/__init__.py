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
from . import ppon
from . import acd, outdoor_seg, sftgan
from . import pan, srresnet
from . import p2p_resnet, p2p_unet, patchgan
from . import wbcunet
from . import srflow
from .bridge import Arch

ARCHS: tuple[Arch, ...] = (esrgan.ARCH, dat.ARCH, swinir.ARCH, hat.ARCH, compact.ARCH, span.ARCH, realplksr.ARCH, unet.ARCH,
                            vgg.ARCH)
ARCHS += (plksr.ARCH, mosr.ARCH)
ARCHS += (rcan.ARCH, safmn.ARCH)
ARCHS += (realcugan.ARCH, omnisr.ARCH)
ARCHS += (swin2sr.ARCH, drct.ARCH, srformer.ARCH, rgt.ARCH, atd.ARCH)
ARCHS += (ppon.ARCH,)
ARCHS += (sftgan.ARCH, acd.ARCH, outdoor_seg.ARCH)
ARCHS += (srresnet.ARCH, pan.ARCH)
ARCHS += (p2p_unet.ARCH, p2p_resnet.ARCH, patchgan.ARCH)
ARCHS += (wbcunet.ARCH,)
ARCHS += (srflow.ARCH,)


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


def check_branch(model, branch, conditioned=False):
    """Refuse by name an output `branch` the model lacks: only multi-output generators (PPON: `model.branches`) have
    branches to choose from."""
    cond = getattr(model, "condition", None)  # SFT-Net's: Arch.condition, on the module for the paths that hold one
    if cond and not conditioned:
        raise WeightsError(f"this model takes {cond!r} maps besides the image, which this image-only path cannot give it: "
                           f"call it as model(x, {cond}) with the probabilities at the output size (python -m jaxsr.segment)")
    have = getattr(model, "branches", ())
    if branch is not None and branch not in have:
        raise WeightsError(f"--branch {branch}: this model has " + (f"the outputs {', '.join(have)}" if have else
                         "one output; branches are a multi-output model's (PPON: content, structure, perceptual)"))


def forward(model, x, branch=None, cond=None):
    """A generator's image for the NHWC batch `x`: the one place where a multi-output model (PPON returns its
    `branches` as a tuple) gives the output named `branch`, by default its own `branch` attribute."""
    check_branch(model, branch, conditioned=cond is not None)
    y = model(x) if cond is None else model(x, cond)  # cond: a conditioned generator's second input (SFT-Net's seg)
    return y[model.branches.index(branch or model.branch)] if isinstance(y, tuple) else y


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


__all__ = ["ARCHS", "Arch", "build", "check_branch", "describe", "detect", "forward", "get", "names"]
