"""RGT (Recursive Generalization Transformer; RGT and RGT-S are the same network at 8 and 6 groups): the reference's
keys in and out, with the shift-mask buffers its strict load needs.

Inference follows spandrel 0.4.2 (`architectures/RGT/__init__.py`): in_ch/embed_dim from conv_first, depth from the
blocks, num_heads from the window branches' position-bias heads (2h, or 2h + 1 where 2h does not divide embed_dim),
qkv_bias iff `attn.qkv.bias`, mlp_ratio fc1 out/in, 1conv iff `conv_after_body.weight` (else 3conv), c_ratio from
the first RG-SA's 1x1 conv (0.5 where no group has one), scale from the upsample convs; img_range (1) is not in the
keys. split_size is read from the position-bias coordinates (`rpe_biases`), which tell it exactly; spandrel guesses
it from the buffer lengths (square, else powers of 2 with split[0] < split[1]), so exports whose split_size that
guess misses warn, as do odd head counts (the keys cannot show them) and img_range other than 1. The shift masks
are always 64 px (the reference's blocks never see its img_size): dropped on reading, rebuilt on export.
"""
import math
import re

import numpy as np

from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.archs.dat.model import attn_masks, shifted
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import DEFAULT_VARIANT, DEFAULTS, MASK_SIZE, NUM_FEAT, RGT, VARIANTS, build, recursions, spec_for

_B0 = "layers.0.blocks.0."
# spandrel's detection keys (besides the conv_after_body alternatives)
_REQUIRED = [
    "conv_first.weight", "before_RG.1.weight", "norm.weight", "conv_before_upsample.0.weight", "conv_last.weight",
    *(_B0 + k for k in (
        "gamma", "norm1.weight", "attn.qkv.weight", "attn.proj.weight", "attn.attns.0.rpe_biases",
        "attn.attns.0.relative_position_index", "attn.attns.0.pos.pos_proj.weight", "mlp.fc1.weight",
        "mlp.fc2.weight", "norm2.weight")),
]
_MASK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.attn_mask_[01]$")


def detect(sd):
    """An RGT-family state dict (incomplete ones included: infer_spec names what is missing). DAT shares the first
    keys; RGT's blocks have `gamma`."""
    return "before_RG.1.weight" in sd and f"{_B0}gamma" in sd


def spandrel_heads(embed_dim, half):
    """The head count spandrel infers from a window branch's `half` heads."""
    return 2 * half if embed_dim % (2 * half) == 0 else 2 * half + 1


def spandrel_split(n, table):
    """The split_size spandrel guesses from the window's token count n and the bias table's length: square if that
    fits, else powers of 2 with split[0] < split[1]; None where it finds none (it refuses the file)."""
    fits = lambda a, b: a * b == n and (2 * a - 1) * (2 * b - 1) == table  # noqa: E731
    s = math.isqrt(n)
    if fits(s, s):
        return [s, s]
    return next(([2 ** i, 2 ** j] for i in range(1, 10) for j in range(i + 1, 10) if fits(2 ** i, 2 ** j)), None)


def infer_spec(sd):
    missing = [k for k in _REQUIRED if k not in sd]
    if "conv_after_body.weight" not in sd and "conv_after_body.0.weight" not in sd:
        missing.append("conv_after_body.weight (1conv) or conv_after_body.0.weight (3conv)")
    if missing:
        raise WeightsError(f"incomplete or unsupported RGT variant: missing {', '.join(missing[:6])}"
                           f"{' ...' if len(missing) > 6 else ''}")
    in_ch, embed_dim = int(sd["conv_first.weight"].shape[1]), int(sd["conv_first.weight"].shape[0])
    if int(sd["conv_before_upsample.0.weight"].shape[0]) != NUM_FEAT:
        raise WeightsError(f"unsupported RGT variant: {sd['conv_before_upsample.0.weight'].shape[0]} reconstruction "
                           f"features (the reference and spandrel fix {NUM_FEAT})")
    depth = [seq_len(sd, f"layers.{i}.blocks") for i in range(seq_len(sd, "layers"))]
    heads = [spandrel_heads(embed_dim, int(sd[f"layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight"].shape[0]))
             for i in range(len(depth))]
    c_ratio = VARIANTS[DEFAULT_VARIANT]["c_ratio"]  # spandrel's 0.5 too, where no group has an RG-SA block
    rg = next((i for i, d in enumerate(depth) if d >= 2), None)
    if rg is not None:
        cr = int(sd[f"layers.{rg}.blocks.1.attn.conv.weight"].shape[0])
        c_ratio = cr / embed_dim
        if int(embed_dim * c_ratio) != cr:
            raise WeightsError(f"unsupported RGT variant: RG-SA width {cr} of {embed_dim} is not int(embed_dim * "
                               "c_ratio) for the ratio spandrel reads (nor can the reference build it)")
    rpe = np.asarray(sd[f"{_B0}attn.attns.0.rpe_biases"], np.float64)
    split = [int(round(v)) + 1 for v in rpe[-1]]
    n = int(sd[f"{_B0}attn.attns.0.relative_position_index"].shape[0])
    if split[0] * split[1] != n or (2 * split[0] - 1) * (2 * split[1] - 1) != rpe.shape[0]:
        raise WeightsError(f"unsupported RGT variant: the position-bias coordinates (up to {rpe[-1].tolist()}) do not "
                           f"fit a window of {n} tokens")
    return {
        "arch": "rgt",
        "scale": pixelshuffle_scale(sd, "upsample", NUM_FEAT)[0],
        "in_ch": in_ch,
        "out_ch": in_ch,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": int(sd[f"{_B0}mlp.fc1.weight"].shape[0]) / int(sd[f"{_B0}mlp.fc1.weight"].shape[1]),
        "split_size": split,
        "c_ratio": c_ratio,
        "qkv_bias": f"{_B0}attn.qkv.bias" in sd,
        "img_range": DEFAULTS["img_range"],  # not in the keys (spandrel's value too)
        "resi_connection": "1conv" if "conv_after_body.weight" in sd else "3conv",
    }


def from_torch(sd):
    """Drop the shift masks: the model builds them for the traced size; export regenerates them."""
    return {k: v for k, v in sd.items() if not _MASK.match(k)}


def _shifted_blocks(spec):
    return [(i, j) for i, d in enumerate(spec["depth"]) for j in range(0, d, 2) if shifted(i, j)]


def to_torch(model, spec):
    """Our tensors plus the reference's `attn_mask_0/1` buffers of every shifted block (64 px)."""
    spec = ARCH.full_spec(spec)
    out = state_dict(model)
    blocks = _shifted_blocks(spec)
    if blocks:
        m0, m1 = attn_masks(MASK_SIZE, spec["split_size"])
        for i, j in blocks:
            out[f"layers.{i}.blocks.{j}.attn.attn_mask_0"] = m0
            out[f"layers.{i}.blocks.{j}.attn.attn_mask_1"] = m1
    return out


def _missed_split(s):
    s0, s1 = (int(v) for v in s["split_size"])
    return spandrel_split(s0 * s1, (2 * s0 - 1) * (2 * s1 - 1)) != [s0, s1]


SPANDREL_GAPS = (
    (_missed_split,
     lambda s: f"spandrel/chaiNNer guess RGT's split_size from buffer lengths and miss {list(s['split_size'])} "
               "(they take it square, else powers of 2 ascending): they would refuse or misread this export (jaxsr "
               "reads it)"),
    (lambda s: any(spandrel_heads(s["embed_dim"], int(h) // 2) != int(h) for h in s["num_heads"]),
     lambda s: f"spandrel/chaiNNer infer num_heads {[spandrel_heads(s['embed_dim'], int(h) // 2) for h in s['num_heads']]}"
               f" for this RGT's {list(s['num_heads'])} (the keys cannot show odd counts) and would compute otherwise"),
    (lambda s: float(s["img_range"]) != DEFAULTS["img_range"],
     lambda s: f"the weights cannot tell spandrel/chaiNNer img_range={s['img_range']}: they would run this RGT export "
               f"with img_range={DEFAULTS['img_range']:g} (jaxsr reads the spec stored with it)"),
)


ARCH = Arch(
    name="rgt",
    what="an RGT model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params",  # the authors' (BasicSR) release; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # pixelshuffle stages of x2 (none for x1), or one x3
    defaults={**DEFAULTS, **VARIANTS[DEFAULT_VARIANT]},
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "RGT", "VARIANTS", "build", "recursions", "spec_for"]
