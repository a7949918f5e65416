"""SRFormer: the reference's keys in and out, with every buffer spandrel's strict load needs.

Inference follows spandrel_extra_arches 0.2.0 (`architectures/SRFormer/__init__.py`): in_ch/embed_dim from conv_first,
ape/patch_norm/qkv_bias from their keys, mlp_ratio fc1/embed_dim, depths from the blocks and heads from each
group's bias table, the upsampler from which reconstruction keys exist (conv_hr: nearest+conv x4,
conv_before_upsample: pixelshuffle with its factor from the upsample convs, upsample.0: pixelshuffledirect
sqrt(out/in_ch), none: x1), 1conv iff `conv_after_body.weight` (else 3conv), window_size sqrt(bias table rows) + 1,
and img_size as the first of spandrel's "nice" sizes whose window-rounded value is the stored mask's resolution.
Where spandrel cannot see the resolution (no `layers.0...blocks.1.attn_mask`) we read it from any other group's
mask or from `absolute_pos_embed`; exports spandrel then cannot load warn (`SPANDREL_GAPS`). img_range is not in
the keys: spandrel runs 1. Refused by name: incomplete files, a reconstruction width other than 64.
"""
import math
import re

from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import (DEFAULT_VARIANT, DEFAULTS, NUM_FEAT, VARIANTS, SRFormer, build, padded_size, psa_mask,
                    spec_for)

_B0 = "layers.0.residual_group.blocks.0."
_MASK = re.compile(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.attn_mask$")
# spandrel's detection keys
_REQUIRED = ("conv_first.weight", f"{_B0}norm1.weight", f"{_B0}attn.aligned_relative_position_index",
             f"{_B0}mlp.fc1.bias", f"{_B0}mlp.fc1.weight", f"{_B0}attn.relative_position_bias_table")
_NICE_SIZES = (512, 256, 128, 96, 64, 48, 32, 24, 16)  # spandrel's guesses for img_size, in its order


def detect(sd):
    """An SRFormer-family state dict (the permuted attention's aligned index is its own; infer_spec names what an
    incomplete one lacks)."""
    return f"{_B0}attn.aligned_relative_position_index" in sd


def img_size_for(resolution, window_size):
    """spandrel's img_size for a block resolution: the first nice size that rounds up to it, else the resolution."""
    return next((n for n in _NICE_SIZES if padded_size(n, window_size) == resolution), resolution)


def infer_spec(sd):
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise WeightsError(f"incomplete SRFormer file: missing {', '.join(missing)} (spandrel needs them too)")
    in_ch, embed_dim = int(sd["conv_first.weight"].shape[1]), int(sd["conv_first.weight"].shape[0])
    if "conv_before_upsample.0.weight" in sd:
        nf = int(sd["conv_before_upsample.0.weight"].shape[0])
        if nf != NUM_FEAT:
            raise WeightsError(f"this SRFormer has a {nf}-feature reconstruction; the reference (and spandrel) build "
                               f"it with {NUM_FEAT}, so the file comes from a modified SRFormer that jaxsr does not "
                               "support")
    if "conv_hr.weight" in sd:
        upsampler, scale = "nearest+conv", 4
    elif "conv_before_upsample.0.weight" in sd:
        upsampler, scale = "pixelshuffle", pixelshuffle_scale(sd, "upsample", NUM_FEAT)[0]
    elif "upsample.0.weight" in sd:
        upsampler, scale = "pixelshuffledirect", math.isqrt(int(sd["upsample.0.weight"].shape[0]) // in_ch)
    else:
        upsampler, scale = "", 1
    rows = int(sd[f"{_B0}attn.relative_position_bias_table"].shape[0])
    window = math.isqrt(rows) + 1
    if (window - 1) ** 2 != rows:
        raise WeightsError(f"this SRFormer's bias table has {rows} rows, not (window - 1)**2 for an even window: "
                           "not a file of the reference")
    n_layers = seq_len(sd, "layers")
    resolution = window  # no stored mask: no block shifts, as when img_size does not exceed the window
    masks = sorted((int(m[1]), int(m[2]), k) for k in sd if (m := _MASK.match(k)))
    if masks:
        resolution = math.isqrt(int(sd[masks[0][2]].shape[0])) * window
    ape = "absolute_pos_embed" in sd
    if ape:
        resolution = math.isqrt(int(sd["absolute_pos_embed"].shape[1]))
    return {
        "arch": "srformer",
        "scale": scale,
        "in_ch": in_ch,
        "out_ch": in_ch,
        "embed_dim": embed_dim,
        "depths": [seq_len(sd, f"layers.{i}.residual_group.blocks") for i in range(n_layers)],
        "num_heads": [int(sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1])
                      for i in range(n_layers)],
        "window_size": window,
        "mlp_ratio": float(int(sd[f"{_B0}mlp.fc1.weight"].shape[0]) / embed_dim),
        "qkv_bias": f"{_B0}attn.q.bias" in sd,
        "img_size": img_size_for(resolution, window),
        "img_range": DEFAULTS["img_range"],  # not in the keys (spandrel's value too)
        "upsampler": upsampler,
        "resi_connection": "1conv" if "conv_after_body.weight" in sd else "3conv",
        "patch_norm": "patch_embed.norm.weight" in sd,
        "ape": ape,
    }


def from_torch(sd):
    """Drop the shift masks: they are built at trace time for the traced size (exports regenerate them)."""
    return {k: v for k, v in sd.items() if not _MASK.match(k)}


def _shifts(s):
    return padded_size(int(s["img_size"]), int(s["window_size"])) > int(s["window_size"])


def masks_for(spec):
    """{key: mask} for every shifted (odd) block, as the reference registers them at its input_resolution."""
    spec = ARCH.full_spec(spec)
    ws = int(spec["window_size"])
    if not _shifts(spec):
        return {}
    res = padded_size(int(spec["img_size"]), ws)
    mask = psa_mask(res, res, ws, ws // 2)
    return {f"layers.{i}.residual_group.blocks.{j}.attn_mask": mask
            for i, d in enumerate(spec["depths"]) for j in range(1, d, 2)}


def to_torch(model, spec):
    return {**state_dict(model), **masks_for(spec)}


def _first_mask_seen(s):
    """Whether spandrel finds the block resolution where it looks: layers.0's block 1 mask."""
    return s["depths"][0] >= 2 and _shifts(s)


# what spandrel reads otherwise than the spec says (it looks for the resolution in layers.0's block 1 only)
SPANDREL_GAPS = (
    (lambda s: float(s["img_range"]) != DEFAULTS["img_range"],
     lambda s: f"the weights cannot tell spandrel/chaiNNer img_range={s['img_range']:g}: they would run this SRFormer "
               f"export with {DEFAULTS['img_range']:g} (jaxsr reads the spec stored with it)"),
    (lambda s: s["ape"] and not _first_mask_seen(s),
     "spandrel/chaiNNer will not load this SRFormer export (ape=True without a shifted block 1 in the first group "
     "makes its loader fail); jaxsr will"),
    (lambda s: not s["ape"] and _shifts(s) and not _first_mask_seen(s) and max(s["depths"]) >= 2,
     "spandrel/chaiNNer will not load this SRFormer export (a first group of depth 1 hides img_size from it, so it "
     "builds no shifted windows and refuses the other groups' masks); jaxsr will"),
)


ARCH = Arch(
    name="srformer",
    what="an SRFormer model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params_ema",  # BasicSR / traiNNer-redux EMA weights; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # pixelshuffle 2^n or 3, pixelshuffledirect any, nearest+conv 4, none 1
    defaults={**DEFAULTS, **VARIANTS[DEFAULT_VARIANT]},
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "SRFormer", "VARIANTS", "build", "spec_for"]
