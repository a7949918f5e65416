"""ATD (Adaptive Token Dictionary): the reference's keys in and out, with its index buffer (and `no_norm`).

Inference follows spandrel 0.4.2 (`architectures/ATD/__init__.py`): in_ch/embed_dim from conv_first, window_size
sqrt(relative_position_index_SA rows), depths from each group's layers, heads from each group's first window-bias
table, num_tokens from attn_atd.scale, reducted_dim from attn_atd.wq, the ConvFFN kernel from its depthwise conv,
mlp_ratio fc1/embed_dim, qkv_bias from wqkv.bias, ape/patch_norm from their keys, 1conv iff `layers.0.conv.weight`
(else 3conv), the upsampler from which reconstruction keys exist (conv_up1: nearest+conv, always x4;
conv_before_upsample: pixelshuffle; conv_last alone: none, x1; else pixelshuffledirect), norm unless `no_norm`, and
category_size, which the keys do not tell, as spandrel guesses it: 128 for ATD-light (pixelshuffledirect, embed_dim
48), else 256. img_size comes from absolute_pos_embed (else 64, spandrel's) and img_range is 1.

Exports carry relative_position_index_SA (int64) and, with norm=False, `no_norm` (zeros(1)); the shift masks are
built at trace time, as the reference builds them per forward. Refused by name: a reconstruction width other than
64 (the reference fixes it). Exports spandrel would run otherwise warn: a category_size other than its guess, an
img_range other than 1, ape with an img_size other than 64, and a first group of one layer (spandrel detects ATD by
the first layer's dictionary refinement, which a group's last layer lacks).
"""
import math

from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import ATD, DEFAULT_VARIANT, DEFAULTS, NUM_FEAT, VARIANTS, build, spec_for

_L0 = "layers.0.residual_group.layers.0."
# spandrel's detection keys
_REQUIRED = [
    "relative_position_index_SA", "conv_first.weight", "conv_first.bias", "layers.0.residual_group.td",
    f"{_L0}sigma", f"{_L0}norm1.weight", f"{_L0}norm1.bias", f"{_L0}norm2.weight", f"{_L0}norm2.bias",
    f"{_L0}norm3.weight", f"{_L0}norm3.bias", f"{_L0}wqkv.weight", f"{_L0}attn_win.relative_position_bias_table",
    f"{_L0}attn_win.proj.weight", f"{_L0}attn_win.proj.bias", f"{_L0}attn_atd.scale", f"{_L0}attn_atd.wq.weight",
    f"{_L0}attn_atd.wk.weight", f"{_L0}attn_atd.wv.weight", f"{_L0}attn_aca.logit_scale",
    f"{_L0}attn_aca.proj.weight", f"{_L0}convffn.fc1.weight", f"{_L0}convffn.fc1.bias",
    f"{_L0}convffn.dwconv.depthwise_conv.0.weight", f"{_L0}convffn.dwconv.depthwise_conv.0.bias",
    f"{_L0}convffn.fc2.weight", f"{_L0}convffn.fc2.bias", "norm.weight", "norm.bias",
]


def detect(sd):
    """An ATD-family state dict: the token dictionary next to the window index (a first group of one layer included,
    which spandrel does not see)."""
    return "relative_position_index_SA" in sd and "layers.0.residual_group.td" in sd


def spandrel_category_size(upsampler, embed_dim):
    """The category_size spandrel gives an ATD file, which the keys do not tell: 128 for ATD-light, else 256."""
    return 128 if upsampler == "pixelshuffledirect" and embed_dim == 48 else 256


def infer_spec(sd):
    missing = [k for k in _REQUIRED if k not in sd and not k.startswith(f"{_L0}norm3") and k != f"{_L0}sigma"]
    if missing:
        raise WeightsError(f"incomplete or unsupported ATD variant: missing {', '.join(missing[:6])}"
                           f"{' ...' if len(missing) > 6 else ''}")
    in_ch, embed_dim = int(sd["conv_first.weight"].shape[1]), int(sd["conv_first.weight"].shape[0])
    if "conv_up1.weight" in sd:
        upsampler, scale = "nearest+conv", 4
    elif "conv_before_upsample.0.weight" in sd:
        upsampler = "pixelshuffle"
        scale = pixelshuffle_scale(sd, "upsample", NUM_FEAT)[0]
        nf = int(sd["conv_before_upsample.0.weight"].shape[0])
        if nf != NUM_FEAT:
            raise WeightsError(f"this ATD has a {nf}-feature reconstruction; the reference (and spandrel) build it "
                               f"with {NUM_FEAT}, so the file comes from a modified ATD that jaxsr does not support")
    elif "conv_last.weight" in sd:
        upsampler, scale = "", 1
    else:
        upsampler, scale = "pixelshuffledirect", math.isqrt(int(sd["upsample.0.weight"].shape[0]) // in_ch)
    n_layers = seq_len(sd, "layers")
    img_size = DEFAULTS["img_size"]  # spandrel's too: only absolute_pos_embed stores it
    if "absolute_pos_embed" in sd:
        img_size = math.isqrt(int(sd["absolute_pos_embed"].shape[1]))
    return {
        "arch": "atd",
        "scale": scale,
        "in_ch": in_ch,
        "out_ch": in_ch,
        "embed_dim": embed_dim,
        "depths": [seq_len(sd, f"layers.{i}.residual_group.layers") for i in range(n_layers)],
        "num_heads": [int(sd[f"layers.{i}.residual_group.layers.0.attn_win.relative_position_bias_table"].shape[1])
                      for i in range(n_layers)],
        "window_size": math.isqrt(int(sd["relative_position_index_SA"].shape[0])),
        "category_size": spandrel_category_size(upsampler, embed_dim),  # not in the keys: spandrel's guess
        "num_tokens": int(sd[f"{_L0}attn_atd.scale"].shape[0]),
        "reducted_dim": int(sd[f"{_L0}attn_atd.wq.weight"].shape[0]),
        "convffn_kernel_size": int(sd[f"{_L0}convffn.dwconv.depthwise_conv.0.weight"].shape[2]),
        "mlp_ratio": int(sd[f"{_L0}convffn.fc1.weight"].shape[0]) / embed_dim,
        "qkv_bias": f"{_L0}wqkv.bias" in sd,
        "img_size": img_size,
        "img_range": DEFAULTS["img_range"],  # not in the keys (spandrel's value too)
        "upsampler": upsampler,
        "resi_connection": "1conv" if "layers.0.conv.weight" in sd else "3conv",
        "patch_norm": "patch_embed.norm.weight" in sd,
        "ape": "absolute_pos_embed" in sd,
        "norm": "no_norm" not in sd,
    }


def from_torch(sd):
    """The dictionary attention's `scale` parameter is a Flax leaf named `scale`, which the mechanical mapping calls
    `weight` (LayerNorm's): rename the file's key to that."""
    return {(k[: -len("scale")] + "weight" if k.endswith(".attn_atd.scale") else k): v for k, v in sd.items()}


def to_torch(model, spec):
    """The reference's keys: `attn_atd.weight` back to `attn_atd.scale`."""
    return {(k[: -len("weight")] + "scale" if k.endswith(".attn_atd.weight") else k): v
            for k, v in state_dict(model).items()}


def _gap(applies, why):
    """(applies, message) for a spec spandrel/chaiNNer would load otherwise than jaxsr, for the reason `why`."""
    return applies, lambda s: f"spandrel/chaiNNer would not run this ATD export as jaxsr does ({why(s)}); jaxsr will"


SPANDREL_GAPS = (
    _gap(lambda s: int(s["category_size"]) != spandrel_category_size(s["upsampler"], s["embed_dim"]),
         lambda s: f"category_size={s['category_size']}, which the weights cannot tell: spandrel guesses "
                   f"{spandrel_category_size(s['upsampler'], s['embed_dim'])}"),
    _gap(lambda s: float(s["img_range"]) != DEFAULTS["img_range"],
         lambda s: f"img_range={s['img_range']}, which the weights cannot tell: spandrel uses 1"),
    _gap(lambda s: s["ape"] and int(s["img_size"]) != DEFAULTS["img_size"],
         lambda s: f"ape=True with img_size {s['img_size']}: spandrel builds the embedding for 64"),
    _gap(lambda s: int(s["depths"][0]) < 2,
         lambda s: "a first group of one layer: spandrel detects ATD by its first layer's norm3/sigma"),
)


ARCH = Arch(
    name="atd",
    what="an ATD model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params_ema",  # the authors' released files (BasicSR EMA weights); spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # x1 without an upsampler; pixelshuffle 2^n or 3; nearest+conv x4; direct any
    defaults={**DEFAULTS, **VARIANTS[DEFAULT_VARIANT]},
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "ATD", "DEFAULTS", "VARIANTS", "build", "spec_for"]
