"""HAT (Hybrid Attention Transformer): the reference's keys in and out, with its index buffers.

Inference follows spandrel 0.4.2 (`architectures/HAT/__init__.py`): in_ch/embed_dim from conv_first, num_feat from
conv_last, scale from the upsample convs, window_size sqrt(relative_position_index_SA rows), overlap_ratio from the
OCA index's width (the first "nice" ratio that gives it), depths from the blocks, heads from each OCAB's bias
table, 1conv iff `conv_after_body.weight` (else identity), compress_ratio/squeeze_factor as a number b with
embed_dim // b equal to the CAB widths (whole where possible), qkv_bias/patch_norm/ape from their keys,
mlp_ratio fc1/embed_dim, img_size from absolute_pos_embed (else 64). conv_scale (0.01) and img_range (1.0) are
not in the keys: exports with other values warn, since spandrel would load them with the defaults.

Exports carry the two index buffers (`relative_position_index_SA`/`_OCA`, int64); HAT stores no masks.
Tiling: the channel attention pools over the whole image, so a tiled run differs from the whole-image one
however large the overlap; tests/test_hat.py measures the gap.
"""
import math

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import DEFAULT_VARIANT, DEFAULTS, HAT, VARIANTS, build, spec_for

_B0 = "layers.0.residual_group.blocks.0."
_OCA = "layers.0.residual_group.overlap_attn."
# spandrel's detection keys
_REQUIRED = [
    "relative_position_index_SA", "conv_first.weight", f"{_B0}norm1.weight", f"{_B0}conv_block.cab.0.weight",
    f"{_B0}conv_block.cab.2.weight", f"{_B0}conv_block.cab.3.attention.1.weight",
    f"{_B0}conv_block.cab.3.attention.3.weight", f"{_B0}mlp.fc1.bias", f"{_B0}mlp.fc2.weight",
    f"{_OCA}relative_position_bias_table", f"{_OCA}qkv.weight", f"{_OCA}proj.weight", f"{_OCA}mlp.fc1.weight",
    f"{_OCA}mlp.fc2.weight", "conv_last.weight",
]
_NICE_RATIOS = (0, 1, 0.5, 0.25, 0.75, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9)


def detect(sd):
    """A HAT-family state dict (incomplete ones included: infer_spec names what is missing)."""
    return "relative_position_index_SA" in sd and f"{_B0}conv_block.cab.0.weight" in sd


def _overlap_ratio(ws, ows):
    """The ratio r with int(ws + ws * r) == ows that spandrel picks: a round one if any, else a nudged quotient."""
    for r in _NICE_RATIOS:
        if int(ws + ws * r) == ows:
            return r
    return (ows - ws) / ws + 0.01


def _divisor(a, c, what):
    """A number b with a // b == c, as spandrel picks it: a / c if whole, else its ceiling or floor, else a / c
    nudged by 0.01."""
    b = a / c
    if b.is_integer():
        return int(b)
    for cand in (math.ceil(b), math.floor(b), b, b - 0.01, b + 0.01):
        if a // cand == c:
            return cand
    raise WeightsError(f"cannot recover HAT's {what} from embed_dim {a} and width {c}")


def infer_spec(sd):
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise WeightsError(f"incomplete or unsupported HAT variant: missing {', '.join(missing[:6])}"
                           f"{' ...' if len(missing) > 6 else ''}")
    in_ch, embed_dim = int(sd["conv_first.weight"].shape[1]), int(sd["conv_first.weight"].shape[0])
    num_feat = int(sd["conv_last.weight"].shape[1])
    scale = pixelshuffle_scale(sd, "upsample")[0]
    window = math.isqrt(int(sd["relative_position_index_SA"].shape[0]))
    ows = math.isqrt(int(sd["relative_position_index_OCA"].shape[1]))
    n_layers = seq_len(sd, "layers")
    img_size = DEFAULTS["img_size"]  # spandrel's default too: only absolute_pos_embed stores it
    if "absolute_pos_embed" in sd:
        img_size = math.isqrt(int(sd["absolute_pos_embed"].shape[1]))
    return {
        "arch": "hat",
        "scale": scale,
        "in_ch": in_ch,
        "out_ch": in_ch,
        "embed_dim": embed_dim,
        "depths": [seq_len(sd, f"layers.{i}.residual_group.blocks") for i in range(n_layers)],
        "num_heads": [int(sd[f"layers.{i}.residual_group.overlap_attn.relative_position_bias_table"].shape[1])
                      for i in range(n_layers)],
        "window_size": window,
        "compress_ratio": _divisor(embed_dim, int(sd[f"{_B0}conv_block.cab.0.weight"].shape[0]), "compress_ratio"),
        "squeeze_factor": _divisor(embed_dim, int(sd[f"{_B0}conv_block.cab.3.attention.1.weight"].shape[0]),
                                   "squeeze_factor"),
        "conv_scale": DEFAULTS["conv_scale"],  # not in the keys (spandrel's value too)
        "overlap_ratio": _overlap_ratio(window, ows),
        "mlp_ratio": int(sd[f"{_B0}mlp.fc1.weight"].shape[0]) / embed_dim,
        "qkv_bias": f"{_B0}attn.qkv.bias" in sd,
        "img_size": img_size,
        "img_range": DEFAULTS["img_range"],  # not in the keys (spandrel's value too)
        "num_feat": num_feat,
        "upsampler": "pixelshuffle",
        "resi_connection": "1conv" if "conv_after_body.weight" in sd else "identity",
        "patch_norm": "patch_embed.norm.weight" in sd,
        "ape": "absolute_pos_embed" in sd,
    }


def _unseen(field):
    """(applies, message) for a field the keys cannot tell spandrel, which then runs the export with the default."""
    return (lambda s: float(s[field]) != DEFAULTS[field],
            lambda s: f"the weights cannot tell spandrel/chaiNNer {field}={s[field]}: they would run this HAT export "
                      f"with conv_scale={DEFAULTS['conv_scale']:g} and img_range={DEFAULTS['img_range']:g} (jaxsr reads "
                      "the spec stored with it)")


SPANDREL_GAPS = (_unseen("conv_scale"), _unseen("img_range"))


ARCH = Arch(
    name="hat",
    what="a HAT model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper="params_ema",  # the authors' released files (BasicSR EMA weights); spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # pixelshuffle stages of x2 (none for x1), or one x3
    defaults={**DEFAULTS, **VARIANTS[DEFAULT_VARIANT]},
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "HAT", "VARIANTS", "build", "spec_for"]
