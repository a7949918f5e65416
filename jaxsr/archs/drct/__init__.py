"""DRCT: the reference's keys in and out, with the index and mask buffers spandrel's strict load needs.

Inference follows spandrel 0.4.2 (`architectures/DRCT/__init__.py`): in_ch/embed_dim from conv_first, one RDG per
`layers.N` with depths 6 each (the keys cannot tell depths; they only set the drop-path schedule), heads per group
from swin1's bias table, mlp_ratio swin1's fc1 / embed_dim, window_size (sqrt(table rows) + 1) / 2, scale from the
upsample convs, 1conv iff `conv_after_body.weight` (else identity), qkv_bias/patch_norm/ape from their keys, gc from
adjust1, img_size from the stored shift mask of swin2 (sqrt(windows) x window; no mask: the window, a model without
shifts). img_range (1) is not in the keys: exports with another value warn.

Refused by name: a file without conv_last (the reference's forward then returns its input: nothing to load) and a
reconstruction width other than the reference's fixed 64.
"""
import math
import re

from jaxsr.archs.attention import shift_mask
from jaxsr.archs.bridge import Arch, seq_len, state_dict
from jaxsr.archs.upsample import pixelshuffle_scale
from jaxsr.errors import WeightsError

from .model import DEFAULT_VARIANT, DEFAULTS, DRCT, NUM_FEAT, SPANDREL_MULTIPLE, VARIANTS, build, spec_for

_S1 = "layers.0.swin1."
# spandrel's detection keys
_REQUIRED = [
    "conv_first.weight", "conv_first.bias", f"{_S1}norm1.weight", f"{_S1}norm1.bias",
    f"{_S1}attn.relative_position_bias_table", f"{_S1}attn.relative_position_index", f"{_S1}attn.qkv.weight",
    f"{_S1}attn.proj.weight", f"{_S1}attn.proj.bias", f"{_S1}norm2.weight", f"{_S1}mlp.fc1.weight",
    f"{_S1}mlp.fc1.bias", f"{_S1}mlp.fc2.weight", "layers.0.adjust1.weight", "layers.0.swin2.norm1.weight",
    "layers.0.adjust2.weight", "layers.0.swin3.norm1.weight", "layers.0.adjust3.weight", "layers.0.swin4.norm1.weight",
    "layers.0.adjust4.weight", "layers.0.swin5.norm1.weight", "layers.0.adjust5.weight", "norm.weight", "norm.bias",
]
_MASK = re.compile(r"layers\.\d+\.swin[1-5]\.attn_mask$")


def detect(sd):
    """A DRCT-family state dict (incomplete ones included: infer_spec names what is missing)."""
    return f"{_S1}attn.relative_position_bias_table" in sd and "layers.0.adjust1.weight" in sd


def infer_spec(sd):
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise WeightsError(f"incomplete or unsupported DRCT variant: missing {', '.join(missing[:6])}"
                           f"{' ...' if len(missing) > 6 else ''}")
    if "conv_last.weight" not in sd:
        raise WeightsError("this DRCT has no conv_last (upsampler ''): the reference's forward then returns its input "
                           "unchanged, so there is nothing to load; jaxsr supports the pixelshuffle DRCT")
    nf = int(sd["conv_last.weight"].shape[1])
    if nf != NUM_FEAT:
        raise WeightsError(f"this DRCT has a {nf}-feature reconstruction; the reference (and spandrel) build it with "
                           f"{NUM_FEAT}, so the file comes from a modified DRCT that jaxsr does not support")
    in_ch, embed_dim = int(sd["conv_first.weight"].shape[1]), int(sd["conv_first.weight"].shape[0])
    window = (math.isqrt(int(sd[f"{_S1}attn.relative_position_bias_table"].shape[0])) + 1) // 2
    n_layers = seq_len(sd, "layers")
    mask = sd.get("layers.0.swin2.attn_mask")
    return {
        "arch": "drct",
        "scale": pixelshuffle_scale(sd, "upsample", NUM_FEAT)[0],
        "in_ch": in_ch,
        "out_ch": in_ch,
        "embed_dim": embed_dim,
        "depths": [6] * n_layers,  # spandrel's assumption: the keys do not tell
        "num_heads": [int(sd[f"layers.{i}.swin1.attn.relative_position_bias_table"].shape[1]) for i in range(n_layers)],
        "window_size": window,
        "img_size": window if mask is None else math.isqrt(int(mask.shape[0])) * window,
        "img_range": DEFAULTS["img_range"],  # not in the keys (spandrel's value too)
        "mlp_ratio": int(sd[f"{_S1}mlp.fc1.weight"].shape[0]) / embed_dim,
        "gc": int(sd["layers.0.adjust1.weight"].shape[0]),
        "qkv_bias": f"{_S1}attn.qkv.bias" in sd,
        "resi_connection": "1conv" if "conv_after_body.weight" in sd else "identity",
        "patch_norm": "patch_embed.norm.weight" in sd,
        "ape": "absolute_pos_embed" in sd,
    }


def from_torch(sd):
    """Drop the shift masks: they are built at trace time, and exports regenerate them."""
    return {k: v for k, v in sd.items() if not _MASK.match(k)}


def masks_for(spec):
    """{key: mask} for the shifted blocks (swin2, swin4 of every group), as the reference registers them for
    spec['img_size'] (none where img_size is the window: no shifts)."""
    spec = ARCH.full_spec(spec)
    ws, n = int(spec["window_size"]), int(spec["img_size"])
    if n <= ws:
        return {}
    mask = shift_mask(n, n, ws, ws, ws // 2, ws // 2)
    return {f"layers.{i}.swin{k}.attn_mask": mask for i in range(len(spec["num_heads"])) for k in (2, 4)}


def to_torch(model, spec):
    return {**state_dict(model), **masks_for(spec)}


SPANDREL_GAPS = (
    (lambda s: float(s["img_range"]) != DEFAULTS["img_range"],
     lambda s: f"the weights cannot tell spandrel/chaiNNer img_range={s['img_range']}: they would run this DRCT export "
               f"with img_range={DEFAULTS['img_range']:g} (jaxsr reads the spec stored with it)"),
    (lambda s: SPANDREL_MULTIPLE % int(s["window_size"]),
     lambda s: f"spandrel/chaiNNer pad inputs to multiples of {SPANDREL_MULTIPLE} only, so their forward of this "
               f"window-{s['window_size']} DRCT export fails on most sizes (jaxsr pads to multiples of "
               f"{math.lcm(SPANDREL_MULTIPLE, int(s['window_size']))})"),
)


ARCH = Arch(
    name="drct",
    what="a DRCT model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    from_torch=from_torch,
    to_torch=to_torch,
    pth_wrapper="params_ema",  # the authors' released files (BasicSR EMA weights); spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # pixelshuffle stages of x2 (none for x1), or one x3
    defaults={**DEFAULTS, **VARIANTS[DEFAULT_VARIANT]},
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "DRCT", "VARIANTS", "build", "spec_for"]
