"""DAT (Dual Aggregation Transformer): the reference's native keys in and out, with every buffer spandrel's
strict load needs.

Inference of the architecture follows spandrel 0.4.2 (`architectures/DAT/__init__.py`):
in_ch/embed_dim from conv_first, depth from `layers.i.blocks.*`, heads from `temperature` (or pos3 for depth 1),
upsampler pixelshuffle iff `conv_last.weight`, resi 1conv iff `conv_after_body.weight`, scale from the upsample
convs, qkv_bias iff `attn.qkv.bias`, expansion factor fc1/embed_dim, split_size = rpe_biases[-1] + 1 and img_size
from a stored shift mask (else 64). Files that spandrel cannot load either are refused with a message naming what
was found (traiNNer-redux's `unshuffle_mod`, missing pieces).
"""
import math
import re

import numpy as np

from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import DAT, DEFAULT_VARIANT, DEFAULTS, VARIANTS, attn_masks, build, shifted, spec_for

_B0 = "layers.0.blocks.0."
# spandrel's detection keys (besides the conv_after_body / upsampler alternatives)
_REQUIRED = [
    "conv_first.weight", "before_RG.1.weight", "before_RG.1.bias", "norm.weight",
    *(_B0 + k for k in (
        "norm1.weight", "norm2.weight", "ffn.fc1.weight", "ffn.sg.norm.weight", "ffn.sg.conv.weight", "ffn.fc2.weight",
        "attn.qkv.weight", "attn.proj.weight", "attn.dwconv.0.weight", "attn.dwconv.1.running_mean",
        "attn.channel_interaction.1.weight", "attn.channel_interaction.2.running_mean",
        "attn.channel_interaction.4.weight", "attn.spatial_interaction.0.weight",
        "attn.spatial_interaction.1.running_mean", "attn.spatial_interaction.3.weight", "attn.attns.0.rpe_biases",
        "attn.attns.0.relative_position_index", "attn.attns.0.pos.pos_proj.weight", "attn.attns.0.pos.pos1.0.weight",
        "attn.attns.0.pos.pos3.0.weight")),
]
_MASK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.attn_mask_[01]$")


def detect(sd):
    """A DAT-family state dict (including variants we refuse in infer_spec with a message); RGT's blocks, which share
    these keys, carry a `gamma`."""
    return "before_RG.1.weight" in sd and f"{_B0}attn.qkv.weight" in sd and f"{_B0}gamma" not in sd


def infer_spec(sd):
    if "conv_first.1.weight" in sd and "conv_first.weight" not in sd:
        raise WeightsError(
            "this DAT was trained with traiNNer-redux's unshuffle_mod (conv_first.1.*: PixelUnshuffle + conv), "
            "a variant that jaxsr does not support (nor does spandrel/chaiNNer)")
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise WeightsError(f"incomplete or unsupported DAT variant: missing {', '.join(missing[:6])}"
                           f"{' ...' if len(missing) > 6 else ''}")
    in_ch, embed_dim = int(sd["conv_first.weight"].shape[1]), int(sd["conv_first.weight"].shape[0])
    n_layers = seq_len(sd, "layers")
    depth = [seq_len(sd, f"layers.{i}.blocks") for i in range(n_layers)]
    heads = []
    for i, d in enumerate(depth):
        if d >= 2:
            heads.append(int(sd[f"layers.{i}.blocks.1.attn.temperature"].shape[0]))
        else:  # only even head counts can be recovered (heads // 2 per branch)
            heads.append(2 * int(sd[f"layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight"].shape[0]))
    if "conv_after_body.weight" in sd:
        resi = "1conv"
    elif "conv_after_body.4.weight" in sd:
        resi = "3conv"
    else:
        raise WeightsError("unsupported DAT variant: no conv_after_body.weight (1conv) or conv_after_body.4.weight (3conv)")
    num_feat = DEFAULTS["num_feat"]  # spandrel's too: the pixelshuffledirect keys do not tell
    if "upsample.init_pos" in sd:  # jaxsr's DySample option
        upsampler = "dysample"
        n = int(sd["upsample.init_pos"].shape[1])
        scale = len(np.unique(np.round(np.asarray(sd["upsample.init_pos"], np.float64).ravel(), 6)))
        groups = n // (2 * scale * scale)
        num_feat = int(sd["upsample.offset.weight"].shape[1])
    elif "conv_last.weight" in sd:
        upsampler = "pixelshuffle"
        scale, num_feat = pixelshuffle_scale(sd, "upsample", num_feat)
    elif "upsample.0.weight" in sd:
        upsampler = "pixelshuffledirect"
        scale = int(math.sqrt(int(sd["upsample.0.weight"].shape[0]) // in_ch))
    else:
        raise WeightsError("unsupported DAT variant: no upsampler found (conv_last.* for pixelshuffle, "
                           "upsample.0.* for pixelshuffledirect)")
    img_size = DEFAULTS["img_size"]  # spandrel's default too; a stored shift mask tells the real one
    masks = sorted((int(m[1]), int(m[2]), k) for k in sd if (m := _MASK.match(k)) and k.endswith("_0"))
    if masks:
        nw, n, _ = sd[masks[0][2]].shape
        img_size = math.isqrt(int(nw) * int(n))
    split = [int(v) for v in np.asarray(sd[f"{_B0}attn.attns.0.rpe_biases"])[-1] + 1]
    spec = {
        "arch": "dat",
        "scale": int(scale),
        "in_ch": in_ch,
        "out_ch": in_ch,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": heads,
        "split_size": split,
        "expansion_factor": float(sd[f"{_B0}ffn.fc1.weight"].shape[0] / embed_dim),
        "qkv_bias": f"{_B0}attn.qkv.bias" in sd,
        "upsampler": upsampler,
        "resi_connection": resi,
        "img_size": int(img_size),
        "img_range": DEFAULTS["img_range"],  # not in the keys
        "num_feat": num_feat,
    }
    if upsampler == "dysample":
        spec["dysample_groups"] = int(groups)
    return spec


def from_torch(sd):
    """Drop the shift masks (our model builds them for any size at trace time; export regenerates them), fill
    BatchNorm's `num_batches_tracked` where a file lacks it and accept it as (1,) (torch tolerates both)."""
    out = {k: v for k, v in sd.items() if not _MASK.match(k)}
    for k in list(out):
        if k.endswith(".running_mean"):
            nbt = k[: -len("running_mean")] + "num_batches_tracked"
            out.setdefault(nbt, np.zeros((), np.int64))
        elif k.endswith(".num_batches_tracked") and np.size(out[k]) == 1:
            out[k] = np.asarray(out[k]).reshape(())  # torch's BatchNorm also accepts a (1,)-shaped counter
    return out


def masks_for(spec):
    """{key: mask} for every shifted block, as the reference registers them for spec['img_size']."""
    spec = ARCH.full_spec(spec)
    m0, m1 = attn_masks(int(spec["img_size"]), spec["split_size"])
    out = {}
    for i, d in enumerate(spec["depth"]):
        for j in range(d):
            if j % 2 == 0 and shifted(i, j):
                out[f"layers.{i}.blocks.{j}.attn.attn_mask_0"] = m0
                out[f"layers.{i}.blocks.{j}.attn.attn_mask_1"] = m1
    return out


def to_torch(model, spec):
    return {**state_dict(model), **masks_for(spec)}


SPANDREL_GAPS = (
    (lambda s: s["num_feat"] != DEFAULTS["num_feat"] or s["upsampler"] == "dysample",
     f"spandrel/chaiNNer build DAT with num_feat={DEFAULTS['num_feat']} and no DySample upsampler and will not load "
     "this export (jaxsr will)"),
)


ARCH = Arch(
    name="dat",
    what="a DAT model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params",  # the authors' (BasicSR) and traiNNer-redux's wrapping; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # pixelshuffle stages of x2, or one x3
    defaults={**DEFAULTS, **VARIANTS[DEFAULT_VARIANT]},
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DAT", "DEFAULTS", "VARIANTS", "build", "spec_for"]
