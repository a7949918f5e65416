"""Per-architecture bridges and detection of what a state dict holds.

A bridge (one module per family, e.g. `convert/rrdb.py`) provides:
  arch                      the spec's "arch" value
  detect(sd) -> bool        on a canonical state dict (numpy arrays, unwrapped, prefixes stripped)
  infer_spec(sd) -> dict    the JSON-able spec; WeightsError naming any unsupported variant
  to_model_keys(sd) -> dict the file's keys renamed to our module tree's torch keys
  export(model, spec) -> dict  what PyTorch users load (their key names, every buffer)
  pth_wrapper               how a .pth wraps the state dict ("params_ema", "params" or None)
"""
import importlib
import re

from convert.mapping import WeightsError

BRIDGES = [
    "convert.rrdb",
    "convert.dat",
]

# Families we recognise but do not support, so a refusal can name what the file is (spandrel's detection keys).
_KNOWN_OTHERS = [
    ("an SRVGGNetCompact (Compact) model", lambda k: "body.0.weight" in k and "body.1.weight" in k and "conv_first.weight" not in k),
    ("a DAT model", lambda k: any(re.match(r"layers\.\d+\.blocks\.\d+\.attn\.", x) for x in k) and "before_RG.1.weight" in k),
    ("a SwinIR/HAT-style model", lambda k: any(".residual_group." in x for x in k)),
    ("a SPAN model", lambda k: "conv_1.sk.weight" in k and "block_1.c1_r.sk.weight" in k),
    ("an ESRGAN+ model (RRDB with conv1x1 skips)", lambda k: any(".conv1x1." in x for x in k)),
    ("a RealPLKSR model", lambda k: any(x.startswith("feats.") for x in k)),
    ("a VGG-style or UNet discriminator (net_d)", lambda k: "conv0_0.weight" in k or "conv0.weight_orig" in k),
]


def bridges():
    return [importlib.import_module(name) for name in BRIDGES]


def bridge_for_arch(arch):
    for b in bridges():
        if b.arch == arch:
            return b
    raise WeightsError(f"unknown architecture {arch!r}; supported: {', '.join(b.arch for b in bridges())}")


def describe(sd):
    """A short human description of an unsupported state dict, for error messages."""
    keys = set(sd)
    for name, test in _KNOWN_OTHERS:
        if test(keys):
            return f"this is {name}"
    sample = ", ".join(sorted(keys)[:6])
    return f"its keys look like: {sample}{' ...' if len(keys) > 6 else ''}"


def detect(sd, arch="auto"):
    """The bridge for this state dict; `arch` other than 'auto' insists on that family."""
    found = next((b for b in bridges() if b.detect(sd)), None)
    if arch not in (None, "auto"):
        wanted = bridge_for_arch(arch)
        if found is not wanted:
            what = f"a {found.arch} model" if found else describe(sd).removeprefix("this is ")
            raise WeightsError(f"expected a {arch} model, but the file is {what}")
        return wanted
    if found is None:
        raise WeightsError(f"unsupported architecture: {describe(sd)}. Supported: {', '.join(b.arch for b in bridges())}")
    return found
