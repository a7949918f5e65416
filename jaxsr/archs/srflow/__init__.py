"""SRFlow: andreas128/SRFlow's released files (SRFlow_DF2K_4X.pth, SRFlow_DF2K_8X.pth, SRFlow_CelebA_8X.pth; plain
state dicts of SRFlowNet: `RRDB.*`, `flowUpsamplerNet.*`) in, the same layout out.

Every width and depth comes from the keys, also those the reference hard-codes or reads from its options: the
encoder's features, blocks and growth channels; the scale (two or three upconvs); the flow's levels L, its coupling
steps K and steps without coupling per level (the squeezes are the layer indices that hold no keys); the coupling's
hidden width, its hidden kernel and depth; the conditioning width (num_feat x (stacked blocks + 1)); the unused
`flowUpsamplerNet.f` conv's width. Which trunk blocks are stacked is not in the keys: `stack_blocks_for` gives the
released options' (x4: 1, 8, 15, 22; x8: 1, 3, 5, 7) and, for a trunk those do not fit, the x4 rule spread over it.
"""
import re

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.errors import WeightsError

from .model import DEFAULTS, SRFlowNet, build

_LAYER = re.compile(r"flowUpsamplerNet\.layers\.(\d+)\.(.+)")


def detect(sd):
    return "RRDB.conv_first.weight" in sd and any(k.startswith("flowUpsamplerNet.layers.") for k in sd)


def stack_blocks_for(scale, num_block, n):
    """The trunk blocks whose outputs condition the flow (stackRRDB.blocks), which the keys only count: the released
    options (SRFlow_DF2K_4X: 1, 8, 15, 22 of 23; SRFlow_DF2K_8X: 1, 3, 5, 7 of 23; SRFlow_CelebA_8X: 1, 3, 5, 7 of 8),
    and otherwise n blocks from block 1 in even steps to the last, as the x4 and CelebA options are spread."""
    if (scale, num_block, n) == (8, 23, 4):
        return (1, 3, 5, 7)
    step = max(0, (num_block - 2) // (n - 1)) if n > 1 else 0
    return tuple(min(1 + i * step, num_block - 1) for i in range(n))


def _layer_kinds(sd):
    """Per flowUpsamplerNet.layers index: 'squeeze' (no keys), 'step' (ActNorm + 1x1 conv), 'affine' (a coupling
    step) or 'split'."""
    keys = {}
    for k in sd:
        if m := _LAYER.fullmatch(k):
            keys.setdefault(int(m[1]), []).append(m[2])
    kinds = []
    for i in range(max(keys, default=-1) + 1):
        names = keys.get(i, [])
        if not names:
            kinds.append("squeeze")
        elif any(n.startswith("affine.") for n in names):
            kinds.append("affine")
        elif any(n.startswith("actnorm.") for n in names):
            kinds.append("step")
        elif any(n.startswith("conv.") for n in names):
            kinds.append("split")
        else:
            raise WeightsError(f"unsupported SRFlow flow layer flowUpsamplerNet.layers.{i} "
                               f"({', '.join(sorted(names))}): jaxsr loads andreas128/SRFlow's squeezes, FlowSteps and "
                               "Split2d layers")
        if any(n.startswith("invconv.") and n != "invconv.weight" for n in names):
            raise WeightsError(f"flowUpsamplerNet.layers.{i} has an LU-decomposed invertible 1x1 conv, which SRFlow's "
                               "networks do not use; jaxsr loads the plain `invconv.weight` of andreas128/SRFlow")
    return kinds


def _levels(kinds):
    """(L, noaffine_steps, K) of the reference's per-level layout: squeeze, steps without coupling, coupling steps,
    and a split on the levels below L-1; a WeightsError for any other sequence."""
    levels = []
    for kind in kinds:
        if kind == "squeeze":
            levels.append([])
        elif levels:
            levels[-1].append(kind)
    L = len(levels)
    a, k = (levels[0].count("step"), levels[0].count("affine")) if levels else (0, 0)
    expected = [["step"] * a + ["affine"] * k + (["split"] if level < L - 1 else []) for level in range(1, L + 1)]
    if not kinds or kinds[0] != "squeeze" or levels != expected or k == 0:
        raise WeightsError("unsupported SRFlow flow layout: jaxsr loads andreas128/SRFlow's, per level a squeeze, the "
                           "same number of uncoupled and of coupling steps (K > 0), and a split below level L-1; this "
                           f"file's layers are {', '.join(kinds) or 'none'}")
    return L, a, k


def infer_spec(sd):
    nf, in_ch = (int(d) for d in sd["RRDB.conv_first.weight"].shape[:2])
    num_block = seq_len(sd, "RRDB.RRDB_trunk")
    num_up = sum(1 for k in sd if re.fullmatch(r"RRDB\.upconv\d\.weight", k))
    if num_up not in (2, 3):
        raise WeightsError(f"SRFlow with {num_up} encoder upconvs: jaxsr loads x4 (2) and x8 (3) SRFlow files")
    scale = 2**num_up
    kinds = _layer_kinds(sd)
    L, noaffine, K = _levels(kinds)
    if L > num_up + 1:
        raise WeightsError(f"SRFlow x{scale} with {L} levels: the reference's levels end at the LR's half "
                           f"(fea_up0, L <= {num_up + 1})")
    a = f"flowUpsamplerNet.layers.{kinds.index('affine')}.affine.fAffine"
    cond_ch = int(sd[f"{a.replace('fAffine', 'fFeatures')}.0.weight"].shape[1])
    if cond_ch % nf:
        raise WeightsError(f"SRFlow's conditioning has {cond_ch} channels, no multiple of the encoder's {nf} features "
                           "(num_feat x (stacked blocks + 1)): not an SRFlow file jaxsr can load")
    return {"arch": "srflow", "scale": scale, "in_ch": in_ch, "out_ch": int(sd["RRDB.conv_last.weight"].shape[0]),
            "num_feat": nf, "num_block": num_block,
            "num_grow_ch": int(sd["RRDB.RRDB_trunk.0.RDB1.conv1.weight"].shape[0]),
            "K": K, "L": L, "noaffine_steps": noaffine, "hidden_ch": int(sd[f"{a}.0.weight"].shape[0]),
            "kernel_hidden": int(sd[f"{a}.2.weight"].shape[2]), "n_hidden_layers": (seq_len(sd, a) - 3) // 2,
            "stack_blocks": list(stack_blocks_for(scale, num_block, cond_ch // nf - 1)),
            "f_ch": int(sd["flowUpsamplerNet.f.0.weight"].shape[0])}


SPANDREL_GAPS = (
    (lambda s: True,
     "SRFlow: spandrel/chaiNNer do not know this family and will not load the export; andreas128/SRFlow's SRFlowNet "
     "and traiNNer's SRFlow_net load it (with the options of the spec: K, L, stackRRDB blocks)"),
)


ARCH = Arch(
    name="srflow",
    what="an SRFlow model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper=None,  # the released files and the reference's save_network: plain state dicts
    scales=(4, 8),
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "SRFlowNet", "build", "stack_blocks_for"]
