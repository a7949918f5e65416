"""PPON: Zheng222's released `PPON_G.pth` (a bare state dict) and victorca25/traiNNer's PPON files, which share one key
layout (`CFEM.0`, `CFEM.1.sub.N.RBk.{c1,d1..d8,c2}`, `SFEM.N`, `PFEM.N`, `CRM.N`, `SRM.N`, `PRM.N`); exported the same
way, so both references' modules strict-load what jaxsr writes.

Every width and depth comes from the keys, the ones the reference hard-codes included: nf and in_ch from `CFEM.0`, nb
from the trunk's length, ssim_blocks/gan_blocks from SFEM/PFEM (one block is stored unwrapped, `SFEM.RB1...`), n_rb,
n_dil and dil_nf from the first structure block, out_ch and the upconv stages from CRM's last conv and conv count, and
PReLU from its slope tensors. What leaves no trace: nearest x3 and x2 stages hold the same tensors (one stage reads as
x2; a x3 file needs `scale=3` given), ReLU and LeakyReLU hold none (LeakyReLU, the reference's default), and `alpha`
(1, as traiNNer and Zheng222's test script run it). spandrel/chaiNNer do not know PPON at all.
"""
import re

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.errors import WeightsError

from .model import BRANCHES, DEFAULTS, PPON, build

_MODULES = ("CFEM", "SFEM", "PFEM", "CRM", "SRM", "PRM")


def _has(sd, module):
    return any(k.startswith(module + ".") for k in sd)


def detect(sd):
    """A PPON, or one of the reference's stage checkpoints (content: CFEM + CRM; structure: + SFEM + SRM)."""
    return "CFEM.0.weight" in sd and _has(sd, "CFEM.1.sub") and _has(sd, "CRM")


def _blocks(sd, module):
    """(how many RRBlock_32 `module` holds, the key prefix of its first)."""
    if f"{module}.RB1.c1.weight" in sd:
        return 1, module
    return seq_len(sd, module), f"{module}.0"


def _convs(sd, module):
    """The nn.Sequential indices of `module`'s conv weights (4-d), in order."""
    return sorted(int(m[1]) for k, v in sd.items() if (m := re.fullmatch(rf"{module}\.(\d+)\.weight", k)) and v.ndim == 4)


def infer_spec(sd):
    missing = [m for m in _MODULES if not _has(sd, m)]
    if missing:
        stage = "content" if "SFEM" in missing else "structure"
        raise WeightsError(f"this is a PPON {stage}-stage checkpoint (no {', '.join(missing)}), not a whole PPON: set "
                           "model.arch='ppon' with its nf and nb and init_strict=False to train a whole PPON from what it holds")
    head = sd["CFEM.0.weight"]
    nf, in_ch = int(head.shape[0]), int(head.shape[1])
    nb = 0 if "CFEM.1.sub.weight" in sd else seq_len(sd, "CFEM.1.sub") - 1
    ssim_blocks, first = _blocks(sd, "SFEM")
    gan_blocks, _ = _blocks(sd, "PFEM")
    n_rb = len({m[1] for k in sd if (m := re.fullmatch(rf"{re.escape(first)}\.RB(\d+)\.c1\.weight", k))})
    n_dil = len({m[1] for k in sd if (m := re.fullmatch(rf"{re.escape(first)}\.RB1\.d(\d+)\.weight", k))})
    dil_nf = int(sd[f"{first}.RB1.d1.weight"].shape[0])
    if int(sd[f"{first}.RB1.c2.weight"].shape[1]) != n_dil * dil_nf:
        raise WeightsError(f"unsupported PPON residual block: its 1x1 conv takes {sd[f'{first}.RB1.c2.weight'].shape[1]} "
                           f"channels, not the {n_dil} x {dil_nf} its dilated convs give")
    convs = _convs(sd, "CRM")
    n_up = len(convs) - 2
    if n_up < 0 or convs != [3 * i + 1 for i in range(n_up)] + [3 * n_up, 3 * n_up + 2]:
        raise WeightsError(f"unsupported PPON reconstruction module: CRM holds convs at {convs}, not upconv stages "
                           "[Upsample, conv, act] followed by conv, act, conv")
    return {"arch": "ppon", "scale": 2**n_up, "in_ch": in_ch, "out_ch": int(sd[f"CRM.{3 * n_up + 2}.weight"].shape[0]),
            "nf": nf, "nb": nb, "ssim_blocks": ssim_blocks, "gan_blocks": gan_blocks, "n_rb": n_rb, "n_dil": n_dil,
            "dil_nf": dil_nf, "alpha": DEFAULTS["alpha"],
            "act_type": "prelu" if f"CRM.{3 * n_up + 1}.weight" in sd else DEFAULTS["act_type"]}


SPANDREL_GAPS = (
    (lambda s: True,
     "spandrel/chaiNNer do not know PPON and will not load this export; the reference modules (Zheng222/PPON's "
     "architecture.PPON, victorca25/traiNNer's PPON_arch.PPON) strict-load it"),
)


ARCH = Arch(
    name="ppon",
    what="a PPON model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper=None,  # PPON_G.pth is a bare state dict, as test_PPON.py and traiNNer load it
    scales=(1, 2, 3, 4, 8),
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "BRANCHES", "DEFAULTS", "PPON", "build"]
