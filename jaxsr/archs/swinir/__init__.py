"""SwinIR: the reference's keys in and out, with every buffer spandrel's strict load needs.

Inference follows spandrel 0.4.2 (`architectures/SwinIR/__init__.py`): the upsampler from which reconstruction
keys exist (conv_up1: nearest+conv, conv_before_upsample: pixelshuffle, upsample.0: pixelshuffledirect, none: x1),
start_unshuffle from a `conv_first.1` conv (sqrt(in/3)), the upsampler's factor from its convs, embed_dim from
conv_first, mlp_ratio fc1/embed_dim, window_size sqrt(relative_position_index rows), img_size from a stored shift
mask (else 64), depths/heads from the blocks and bias tables, 1conv iff `conv_after_body.weight`, and
img_range 255 iff window_size is 7 (the JPEG models). Where spandrel assumes a fixed value, the keys decide here
and exports that spandrel would then not load warn: `qkv_bias` (attn.qkv.bias), `patch_norm`
(patch_embed.norm), `ape` (absolute_pos_embed, which also gives img_size). Swin2SR files (SwinIR's keys with the
stem's patch_embed.proj and SwinV2 attention) are not detected here: they go to `archs/swin2sr`. Refused by name: a
reconstruction width other than 64, start_unshuffle without a conv_last.
"""
import math
import re

from jaxsr.archs.attention import shift_mask
from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import DEFAULT_VARIANT, DEFAULTS, NUM_FEAT, VARIANTS, SwinIR, build, spec_for

_B0 = "layers.0.residual_group.blocks.0."
_MASK = re.compile(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.attn_mask$")


def detect(sd):
    """spandrel's SwinIR keys, without Swin2SR's (the stem's patch_embed.proj, SwinV2's logit_scale)."""
    return (f"{_B0}norm1.weight" in sd and ("conv_first.weight" in sd or "conv_first.1.weight" in sd)
            and f"{_B0}mlp.fc1.bias" in sd and f"{_B0}attn.relative_position_index" in sd
            and "patch_embed.proj.weight" not in sd and f"{_B0}attn.logit_scale" not in sd)


def spandrel_img_range(window_size):
    """The img_range spandrel gives a SwinIR file, which the keys do not tell: 255 for the JPEG models, the window-7
    ones, else the default (1)."""
    return 255.0 if window_size == 7 else DEFAULTS["img_range"]


def infer_spec(sd):
    if "conv_before_upsample.0.weight" in sd:
        upsampler = "nearest+conv" if "conv_up1.weight" in sd else "pixelshuffle"
        nf = int(sd["conv_before_upsample.0.weight"].shape[0])
        if nf != NUM_FEAT:
            raise WeightsError(f"this SwinIR has a {nf}-feature reconstruction; the reference (and spandrel) build "
                               f"it with {NUM_FEAT}, so the file comes from a modified SwinIR that jaxsr does not "
                               "support")
    elif "upsample.0.weight" in sd:
        upsampler = "pixelshuffledirect"
    else:
        upsampler = ""
    first = sd.get("conv_first.weight", sd.get("conv_first.1.weight"))
    unshuffle = 1
    if "conv_first.1.weight" in sd:
        unshuffle = round(math.sqrt(int(first.shape[1]) // 3))
        if upsampler not in ("pixelshuffle", "nearest+conv"):
            raise WeightsError("this SwinIR pixel-unshuffles its input (conv_first.1.*) but has no conv_last; "
                               "spandrel cannot load such a file and jaxsr does not support it")
    num_in = int(first.shape[1])
    num_out = int(sd["conv_last.weight"].shape[0]) if "conv_last.weight" in sd else num_in
    if upsampler == "nearest+conv":
        up = 2 ** sum(1 for k in sd if "conv_up" in k and "bias" not in k)
    elif upsampler == "pixelshuffle":
        up = pixelshuffle_scale(sd, "upsample", NUM_FEAT)[0]
    elif upsampler == "pixelshuffledirect":
        up = math.isqrt(int(sd["upsample.0.bias"].shape[0]) // num_out)
    else:
        up = 1
    if up % unshuffle:
        raise WeightsError(f"this SwinIR upsamples x{up} after a x{unshuffle} pixel-unshuffle: not a whole scale")
    embed_dim = int(first.shape[0])
    window = math.isqrt(int(sd[f"{_B0}attn.relative_position_index"].shape[0]))
    n_layers = seq_len(sd, "layers")
    depths = [seq_len(sd, f"layers.{i}.residual_group.blocks") for i in range(n_layers)]
    heads = [int(sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1])
             for i in range(n_layers)]
    img_size = DEFAULTS["img_size"]  # spandrel's default too; a stored shift mask tells the real one
    masks = sorted((int(m[1]), int(m[2]), k) for k in sd if (m := _MASK.match(k)))
    if masks:
        img_size = int(math.sqrt(int(sd[masks[0][2]].shape[0])) * window)
    ape = "absolute_pos_embed" in sd
    if ape:
        img_size = math.isqrt(int(sd["absolute_pos_embed"].shape[1]))
    return {
        "arch": "swinir",
        "scale": up // unshuffle,
        "in_ch": num_in // unshuffle ** 2,
        "out_ch": num_in // unshuffle ** 2,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": float(int(sd[f"{_B0}mlp.fc1.bias"].shape[0]) / embed_dim),
        "qkv_bias": f"{_B0}attn.qkv.bias" in sd,
        "img_size": img_size,
        "img_range": spandrel_img_range(window),
        "upsampler": upsampler,
        "resi_connection": "1conv" if "conv_after_body.weight" in sd else "3conv",
        "patch_norm": "patch_embed.norm.weight" in sd,
        "ape": ape,
        "start_unshuffle": unshuffle,
    }


def from_torch(sd):
    """Drop the shift masks (built at trace time; exports regenerate them) and take `conv_first.1` (after a
    PixelUnshuffle at index 0) as our `conv_first`, as spandrel does."""
    out = {k: v for k, v in sd.items() if not _MASK.match(k)}
    for leaf in ("weight", "bias"):
        if f"conv_first.1.{leaf}" in out:
            out[f"conv_first.{leaf}"] = out.pop(f"conv_first.1.{leaf}")
    return out


def masks_for(spec):
    """{key: mask} for every shifted (odd) block, as the reference registers them for spec['img_size']."""
    spec = ARCH.full_spec(spec)
    ws, n = int(spec["window_size"]), int(spec["img_size"])
    mask = shift_mask(n, n, ws, ws, ws // 2, ws // 2)
    return {f"layers.{i}.residual_group.blocks.{j}.attn_mask": mask
            for i, d in enumerate(spec["depths"]) for j in range(1, d, 2)}


def _gap(applies, why):
    """(applies, message) for a spec whose export spandrel cannot load as it is, for the reason `why` (spec -> str, or
    a str)."""
    return applies, lambda s: ("spandrel/chaiNNer will not load this SwinIR export as it is "
                               f"({why(s) if callable(why) else why}); jaxsr will")


# what spandrel assumes fixed or reads from elsewhere than we do
SPANDREL_GAPS = (
    _gap(lambda s: not s["qkv_bias"], "qkv_bias=False"),
    _gap(lambda s: not s["patch_norm"], "patch_norm=False"),
    _gap(lambda s: s["ape"], "ape=True"),
    _gap(lambda s: float(s["img_range"]) != spandrel_img_range(s["window_size"]),
         lambda s: f"img_range={s['img_range']} with window_size {s['window_size']} (spandrel uses 255 for window 7, "
                   "else 1)"),
    _gap(lambda s: s["start_unshuffle"] > 1 and s["in_ch"] != 3, "start_unshuffle with in_ch != 3"),
    _gap(lambda s: s["img_size"] != DEFAULTS["img_size"] and s["depths"][0] < 2 and max(s["depths"]) >= 2,
         f"img_size != {DEFAULTS['img_size']} with a depth-1 first group (spandrel reads img_size from its block 1)"),
)


def to_torch(model, spec):
    sd = {**state_dict(model), **masks_for(spec)}
    if ARCH.full_spec(spec)["start_unshuffle"] > 1:  # nn.Sequential(PixelUnshuffle, Conv2d), as such files store it
        for leaf in ("weight", "bias"):
            sd[f"conv_first.1.{leaf}"] = sd.pop(f"conv_first.{leaf}")
    return sd


ARCH = Arch(
    name="swinir",
    what="a SwinIR model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params",  # the authors' classical/lightweight files (KAIR); spandrel unwraps params_ema too
    scales=(1, 2, 3, 4, 8),  # x1 without an upsampler; pixelshuffle 2^n or 3; nearest+conv 2, 4, 8
    defaults={**DEFAULTS, **VARIANTS[DEFAULT_VARIANT]},
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "SwinIR", "VARIANTS", "build", "spec_for"]
