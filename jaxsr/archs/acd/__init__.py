"""SFTGAN's ACD discriminator (`ACD_VGG_BN_96`): traiNNer's keys in and out, a plain state dict as traiNNer saves it.

Every width and the depth come from the keys: the convs are the 4-d `feature.N.weight` (N = 0, then 2, 5, 8, ...:
conv, BN, LReLU), their kernels alternate 3x3 and 4x4 stride 2, and the input size is what the first Linear's inputs
leave after the halvings (widths[-1] x s x s, input s * 2^halvings: 96 for the reference). FreezeD: the whole conv
stack is one top-level module (`feature`), so it is the one block `block_of` names; the heads are in none.
"""
import math
import re

from jaxsr.archs.bridge import Arch
from jaxsr.archs.outdoor_seg import with_bn_counters
from jaxsr.errors import WeightsError

from .model import DEFAULTS, ACDDiscriminator, build

_CONV = re.compile(r"feature\.(\d+)\.weight")


def detect(sd):
    return {"feature.0.weight", "gan.0.weight", "gan.2.weight", "cls.0.weight", "cls.2.weight"} <= set(sd)


def infer_spec(sd):
    convs = sorted((int(m[1]), sd[k]) for k in sd if (m := _CONV.fullmatch(k)) and sd[k].ndim == 4)
    where = [i for i, _ in convs]
    kernels = [int(w.shape[-1]) for _, w in convs]
    n = len(convs)
    if n % 2 or where != [0] + [2 + 3 * j for j in range(n - 1)] or kernels != [3, 4] * (n // 2):
        raise WeightsError(f"unsupported ACD discriminator: convs at feature.{where} with kernels {kernels}; jaxsr "
                           "loads ACD_VGG_BN_96's layout (pairs of a 3x3 and a 4x4 stride-2 conv, BatchNorm after all but "
                           "the first)")
    widths = [int(w.shape[0]) for _, w in convs]
    flat = int(sd["gan.0.weight"].shape[1])
    side = math.isqrt(flat // widths[-1])
    if side * side * widths[-1] != flat:
        raise WeightsError(f"unsupported ACD discriminator: its heads take {flat} features, not {widths[-1]} x s x s")
    return {"arch": "acd", "num_in_ch": int(convs[0][1].shape[1]), "widths": widths,
            "hidden": int(sd["gan.0.weight"].shape[0]), "num_classes": int(sd["cls.2.weight"].shape[0]),
            "input_size": side * 2 ** (n // 2)}


def block_of(name):
    """`feature` (the conv stack) is block 0; the gan and cls heads are in none."""
    return 0 if name == "feature" else None


ARCH = Arch(name="acd", what="an SFTGAN ACD discriminator (ACD_VGG_BN_96)", build=build, detect=detect,
            infer_spec=infer_spec, from_torch=with_bn_counters, pth_wrapper=None, kind="discriminator", defaults=DEFAULTS,
            block_of=block_of)

__all__ = ["ARCH", "ACDDiscriminator", "DEFAULTS", "block_of", "build"]
