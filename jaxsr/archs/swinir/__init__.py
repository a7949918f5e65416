"""SwinIR: the reference's keys in and out, with every buffer spandrel's strict load needs.

Inference follows spandrel 0.4.2 (`architectures/SwinIR/__init__.py`): the upsampler from which reconstruction
keys exist (conv_up1: nearest+conv, conv_before_upsample: pixelshuffle, upsample.0: pixelshuffledirect, none: x1),
start_unshuffle from a `conv_first.1` conv (sqrt(in/3)), the upsampler's factor from its convs, embed_dim from
conv_first, mlp_ratio fc1/embed_dim, window_size sqrt(relative_position_index rows), img_size from a stored shift
mask (else 64), depths/heads from the blocks and bias tables, 1conv iff `conv_after_body.weight`, and
img_range 255 iff window_size is 7 (the JPEG models). Where spandrel assumes a fixed value, the keys decide here
and exports that spandrel would then not load warn: `qkv_bias` (attn.qkv.bias), `patch_norm`
(patch_embed.norm), `ape` (absolute_pos_embed, which also gives img_size). Refused by name: Swin2SR files
(SwinV2 attention), a reconstruction width other than 64, start_unshuffle without a conv_last.
"""
import math
import re
import warnings

from jaxsr.archs.attention import shift_mask
from jaxsr.archs.bridge import Arch, state_dict
from jaxsr.errors import WeightsError

from .model import NUM_FEAT, VARIANTS, SwinIR, build, spec_for

_B0 = "layers.0.residual_group.blocks.0."
_MASK = re.compile(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.attn_mask$")


def detect(sd):
    """spandrel's SwinIR keys (Swin2SR files match too; infer_spec refuses them by name)."""
    return (f"{_B0}norm1.weight" in sd and ("conv_first.weight" in sd or "conv_first.1.weight" in sd)
            and f"{_B0}mlp.fc1.bias" in sd and f"{_B0}attn.relative_position_index" in sd)


def _seq_len(sd, prefix):
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _pixelshuffle_params(sd, prefix="upsample"):
    """(factor, num_feat) of an nn.Sequential of [conv, PixelShuffle] stages, as spandrel reads them."""
    scale, nf = 1, NUM_FEAT
    for i in range(0, 10, 2):
        w = sd.get(f"{prefix}.{i}.weight")
        if w is None:
            break
        nf = int(w.shape[1])
        scale *= math.isqrt(int(w.shape[0]) // nf)
    return scale, nf


def infer_spec(sd):
    if "patch_embed.proj.weight" in sd or any(k.endswith(".attn.logit_scale") for k in sd):
        raise WeightsError("this is a Swin2SR model (SwinV2 attention: logit_scale, cpb_mlp), which jaxsr does not "
                           "support; SwinIR is supported")
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
        up = _pixelshuffle_params(sd)[0]
    elif upsampler == "pixelshuffledirect":
        up = math.isqrt(int(sd["upsample.0.bias"].shape[0]) // num_out)
    else:
        up = 1
    if up % unshuffle:
        raise WeightsError(f"this SwinIR upsamples x{up} after a x{unshuffle} pixel-unshuffle: not a whole scale")
    embed_dim = int(first.shape[0])
    window = math.isqrt(int(sd[f"{_B0}attn.relative_position_index"].shape[0]))
    n_layers = _seq_len(sd, "layers")
    depths = [_seq_len(sd, f"layers.{i}.residual_group.blocks") for i in range(n_layers)]
    heads = [int(sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1])
             for i in range(n_layers)]
    img_size = 64  # spandrel's default; a stored shift mask tells the real one
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
        "img_range": 255.0 if window == 7 else 1.0,  # spandrel: the JPEG models are the window-7 ones
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
    ws, n = int(spec["window_size"]), int(spec.get("img_size", 64))
    mask = shift_mask(n, n, ws, ws, ws // 2, ws // 2)
    return {f"layers.{i}.residual_group.blocks.{j}.attn_mask": mask
            for i, d in enumerate(spec["depths"]) for j in range(1, d, 2)}


def _spandrel_gaps(spec):
    gaps = []
    if not spec.get("qkv_bias", True):
        gaps.append("qkv_bias=False")
    if not spec.get("patch_norm", True):
        gaps.append("patch_norm=False")
    if spec.get("ape", False):
        gaps.append("ape=True")
    if float(spec.get("img_range", 1.0)) != (255.0 if spec["window_size"] == 7 else 1.0):
        gaps.append(f"img_range={spec['img_range']} with window_size {spec['window_size']} (spandrel uses 255 for "
                    "window 7, else 1)")
    if spec.get("start_unshuffle", 1) > 1 and spec.get("in_ch", 3) != 3:
        gaps.append("start_unshuffle with in_ch != 3")
    if spec.get("img_size", 64) != 64 and spec["depths"][0] < 2 and max(spec["depths"]) >= 2:
        gaps.append("img_size != 64 with a depth-1 first group (spandrel reads img_size from its block 1)")
    return gaps


def to_torch(model, spec):
    gaps = _spandrel_gaps(spec)
    if gaps:
        warnings.warn(f"spandrel/chaiNNer will not load this SwinIR export as it is ({'; '.join(gaps)}); jaxsr will",
                      stacklevel=2)
    sd = {**state_dict(model), **masks_for(spec)}
    if spec.get("start_unshuffle", 1) > 1:  # nn.Sequential(PixelUnshuffle, Conv2d), as such files store it
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
)

__all__ = ["ARCH", "SwinIR", "VARIANTS", "build", "spec_for"]
