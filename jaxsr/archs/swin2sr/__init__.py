"""Swin2SR: the reference's keys in and out, with every buffer spandrel's strict load needs.

Inference follows spandrel 0.4.2 (`architectures/Swin2SR/__init__.py`): in_ch/embed_dim from conv_first, the
upsampler from which reconstruction keys exist (conv_bicubic: pixelshuffle_aux, conv_hr: nearest+conv,
conv_after_body_hf: pixelshuffle_hf, conv_before_upsample: pixelshuffle, upsample.0: pixelshuffledirect, none: x1),
the factor from the upsample convs (nearest+conv: 4), window_size sqrt(relative_position_index rows), depths from the
blocks, heads from each group's logit_scale, mlp_ratio fc1/embed_dim, qkv_bias (q_bias), patch_norm and ape from their
keys, 1conv/3conv from conv_after_body, img_range 255 iff window_size is 7 (the JPEG models), and img_size from a
stored shift mask, else the window (then the blocks do not shift, as spandrel builds it). Where spandrel reads only
layers.0's block-1 mask we read any, and ape's table gives img_size too; exports spandrel would then read otherwise
warn. Refused by name: a patch size other than 1 (the reference's forward cannot run it), a reconstruction width
other than 64, files without `patch_embed.proj`.
"""
import math
import re

from jaxsr.archs.attention import shift_mask
from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import DEFAULT_VARIANT, DEFAULTS, NUM_FEAT, VARIANTS, Swin2SR, build, spec_for

_B0 = "layers.0.residual_group.blocks.0."
_MASK = re.compile(r"layers(_hf)?\.(\d+)\.residual_group\.blocks\.(\d+)\.attn_mask$")


def detect(sd):
    """spandrel's Swin2SR keys (SwinIR's, plus the stem's patch_embed.proj), or SwinIR's with SwinV2 attention."""
    swin = (f"{_B0}norm1.weight" in sd and "conv_first.weight" in sd and f"{_B0}mlp.fc1.bias" in sd
            and f"{_B0}attn.relative_position_index" in sd)
    return swin and ("patch_embed.proj.weight" in sd or f"{_B0}attn.logit_scale" in sd)


def spandrel_img_range(window_size):
    """The img_range spandrel gives a Swin2SR file, which the keys do not tell: 255 for the JPEG models (window 7),
    else 1."""
    return 255.0 if window_size == 7 else DEFAULTS["img_range"]


def _upsampler(sd):
    for key, name in (("conv_bicubic.weight", "pixelshuffle_aux"), ("conv_hr.weight", "nearest+conv"),
                      ("conv_after_body_hf.weight", "pixelshuffle_hf"),
                      ("conv_before_upsample.0.weight", "pixelshuffle"), ("upsample.0.weight", "pixelshuffledirect")):
        if key in sd:
            return name
    return ""


def infer_spec(sd):
    if "patch_embed.proj.weight" not in sd:
        raise WeightsError("this Swin2SR file has no patch_embed.proj.weight (the stem's projection); it is incomplete "
                           "or from a modified Swin2SR that jaxsr does not support")
    patch = int(sd["patch_embed.proj.weight"].shape[2])
    if patch != 1:
        raise WeightsError(f"this Swin2SR has patch_size {patch}; the reference's forward runs at patch size 1 only "
                           "(spandrel cannot run it either), so jaxsr does not support it")
    upsampler = _upsampler(sd)
    if "conv_before_upsample.0.weight" in sd and int(sd["conv_before_upsample.0.weight"].shape[0]) != NUM_FEAT:
        nf = int(sd["conv_before_upsample.0.weight"].shape[0])
        raise WeightsError(f"this Swin2SR has a {nf}-feature reconstruction; the reference (and spandrel) build it "
                           f"with {NUM_FEAT}, so the file comes from a modified Swin2SR that jaxsr does not support")
    if "conv_after_body.0.weight" in sd:
        resi = "3conv"
    elif "conv_after_body.weight" in sd:
        resi = "1conv"
    else:
        raise WeightsError("this Swin2SR has neither conv_after_body.weight (1conv) nor conv_after_body.0.weight "
                           "(3conv); the file is incomplete")
    first = sd["conv_first.weight"]
    in_ch, embed_dim = int(first.shape[1]), int(first.shape[0])
    if upsampler == "":
        scale = 1
    elif upsampler == "nearest+conv":
        scale = 4
    elif upsampler == "pixelshuffledirect":
        scale = math.isqrt(int(sd["upsample.0.weight"].shape[0]) // in_ch)
    else:
        scale = pixelshuffle_scale(sd, "upsample", NUM_FEAT)[0]
    window = math.isqrt(int(sd[f"{_B0}attn.relative_position_index"].shape[0]))
    n_layers = seq_len(sd, "layers")
    depths = [seq_len(sd, f"layers.{i}.residual_group.blocks") for i in range(n_layers)]
    heads = [int(sd[f"layers.{i}.residual_group.blocks.0.attn.logit_scale"].shape[0]) for i in range(n_layers)]
    ape = "absolute_pos_embed" in sd
    masks = sorted(k for k in sd if _MASK.match(k))
    if masks:
        img_size = math.isqrt(int(sd[masks[0]].shape[0])) * window
    elif ape:
        img_size = math.isqrt(int(sd["absolute_pos_embed"].shape[1]))
    else:
        img_size = window  # spandrel's assumption: no stored mask, no shifted windows
    return {
        "arch": "swin2sr",
        "scale": scale,
        "in_ch": in_ch,
        "out_ch": in_ch,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": float(int(sd[f"{_B0}mlp.fc1.weight"].shape[0]) / embed_dim),
        "qkv_bias": f"{_B0}attn.q_bias" in sd,
        "img_size": img_size,
        "img_range": spandrel_img_range(window),
        "upsampler": upsampler,
        "resi_connection": resi,
        "patch_norm": "patch_embed.norm.weight" in sd,
        "ape": ape,
    }


def from_torch(sd):
    """Drop the shift masks: they are built at trace time (exports regenerate them)."""
    return {k: v for k, v in sd.items() if not _MASK.match(k)}


def masks_for(spec):
    """{key: mask} for every shifted (odd) block of `layers` (and `layers_hf`), as the reference registers them for
    spec['img_size']; none where img_size is the window (no shifts)."""
    spec = ARCH.full_spec(spec)
    ws, n = int(spec["window_size"]), int(spec["img_size"])
    if n <= ws:
        return {}
    mask = shift_mask(n, n, ws, ws, ws // 2, ws // 2)
    bodies = ("layers", "layers_hf") if spec["upsampler"] == "pixelshuffle_hf" else ("layers",)
    return {f"{b}.{i}.residual_group.blocks.{j}.attn_mask": mask
            for b in bodies for i, d in enumerate(spec["depths"]) for j in range(1, d, 2)}


def _stored_first_mask(s):
    """Whether an export holds layers.0's block-1 mask, the one spandrel reads img_size from."""
    return s["img_size"] > s["window_size"] and s["depths"][0] >= 2


def _gap(applies, why):
    return applies, lambda s: ("spandrel/chaiNNer will not run this Swin2SR export as jaxsr does "
                               f"({why(s) if callable(why) else why}); jaxsr will")


# what spandrel assumes fixed or reads from elsewhere than we do
SPANDREL_GAPS = (
    _gap(lambda s: float(s["img_range"]) != spandrel_img_range(s["window_size"]),
         lambda s: f"img_range={s['img_range']} with window_size {s['window_size']} (spandrel uses 255 for window 7, "
                   "else 1)"),
    _gap(lambda s: s["img_size"] > s["window_size"] and not _stored_first_mask(s) and max(s["depths"]) >= 2,
         "shifted windows with a depth-1 first group: spandrel reads img_size from layers.0's block-1 mask and, "
         "without it, builds no shifts"),
    _gap(lambda s: s["ape"] and not _stored_first_mask(s),
         "ape=True without layers.0's block-1 shift mask: spandrel cannot read img_size then"),
    _gap(lambda s: s["upsampler"] == "pixelshuffle_hf",
         "pixelshuffle_hf: spandrel loads it, but the module returns three images, which spandrel refuses to run"),
)


def to_torch(model, spec):
    return {**state_dict(model), **masks_for(spec)}


ARCH = Arch(
    name="swin2sr",
    what="a Swin2SR model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params",  # KAIR's layout, which the authors trained with; spandrel unwraps params_ema too
    scales=(1, 2, 3, 4, 8),  # x1 without an upsampler; pixelshuffle 2^n or 3; nearest+conv 4
    defaults={**DEFAULTS, **VARIANTS[DEFAULT_VARIANT]},
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "Swin2SR", "VARIANTS", "build", "spec_for"]
