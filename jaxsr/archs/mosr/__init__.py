"""MoSR: the reference's keys in and out (`params_ema`, as traiNNer-redux saves its EMA model; neosr's `params` and
bare state dicts read too).

Detection and hyperparameters follow spandrel 0.4.2 (`architectures/MoSR/__init__.py`): a MoSR file has gblocks.0 and
the first GatedCNNBlock's norm, fc1, conv and fc2 (weights and biases). n_block = len(gblocks) - 6, in_ch and dim from
gblocks.0, expansion_ratio = fc1's outputs / inputs / 2, conv_ratio = the depthwise conv's channels / dim, kernel_size
from it; the upsampler is `dys` where the file has `upsampler.init_pos` (out_ch from its end conv, the scale from its
offset conv's 8 s^2 outputs), `gps` where it has `upsampler.in_to_k` (8 s^2 in_ch outputs), else `ps` (s^2 in_ch).
`drop_path` (training only, no weights) is the default 0, as spandrel assumes. Refused by name: files whose ratios do
not give their channels back through the reference's int(ratio * dim), or whose upsampler has no integer scale.
"""
import math

from jaxsr.archs.bridge import Arch, seq_len
from jaxsr.errors import WeightsError

from .model import DEFAULTS, DYSAMPLE_GROUPS, GPS_ENSEMBLE, MoSR, build, conv_channels, hidden_channels

_DETECT = ("gblocks.0.weight", "gblocks.0.bias", *(f"gblocks.1.{m}.{p}" for m in ("norm", "fc1", "conv", "fc2")
                                                    for p in ("weight", "bias")))


def detect(sd):
    return all(k in sd for k in _DETECT)


def _scale(channels, per_scale, what):
    """s with channels == per_scale * s^2, refused by name otherwise."""
    s = math.isqrt(channels // per_scale)
    if s < 1 or channels != per_scale * s * s:
        raise WeightsError(f"MoSR {what} with {channels} output channels: not {per_scale} x a square (no integer scale)")
    return s


def infer_spec(sd):
    w0 = sd["gblocks.0.weight"]
    dim, in_ch = int(w0.shape[0]), int(w0.shape[1])
    fc1, dw = sd["gblocks.1.fc1.weight"], sd["gblocks.1.conv.weight"]
    spec = {"arch": "mosr", **DEFAULTS, "in_ch": in_ch, "out_ch": in_ch, "n_block": seq_len(sd, "gblocks") - 6, "dim": dim,
            "kernel_size": int(dw.shape[2]), "expansion_ratio": int(fc1.shape[0]) / int(fc1.shape[1]) / 2,
            "conv_ratio": int(dw.shape[0]) / dim}
    if "upsampler.init_pos" in sd:
        spec["out_ch"] = int(sd["upsampler.end_conv.weight"].shape[0])
        spec.update(upsampler="dys", scale=_scale(int(sd["upsampler.offset.weight"].shape[0]), 2 * DYSAMPLE_GROUPS, "DySample"))
    elif "upsampler.in_to_k.weight" in sd:
        spec.update(upsampler="gps", scale=_scale(int(sd["upsampler.in_to_k.weight"].shape[0]), GPS_ENSEMBLE * in_ch, "GPS"))
    else:
        spec.update(upsampler="ps", scale=_scale(int(sd["upsampler.0.weight"].shape[0]), in_ch, "pixel shuffle"))
    hidden, conv_ch = int(fc1.shape[0]) // 2, int(dw.shape[0])
    got = hidden_channels(dim, spec["expansion_ratio"]), conv_channels(dim, spec["conv_ratio"])
    if 2 * hidden != int(fc1.shape[0]) or got != (hidden, conv_ch):
        raise WeightsError(f"MoSR with {int(fc1.shape[0])} fc1 and {conv_ch} depthwise channels at dim {dim}: the ratios "
                           f"{spec['expansion_ratio']} and {spec['conv_ratio']} rebuild {got[0]} hidden and {got[1]} "
                           "depthwise channels in the reference (spandrel cannot load this file either)")
    return spec


def _inferred(s):
    """(hidden, depthwise) channels that spandrel rebuilds from an export's: its ratios read back from the shapes."""
    hidden, conv_ch = hidden_channels(s["dim"], s["expansion_ratio"]), conv_channels(s["dim"], s["conv_ratio"])
    return hidden_channels(s["dim"], 2 * hidden / s["dim"] / 2), conv_channels(s["dim"], conv_ch / s["dim"])


SPANDREL_GAPS = (
    (lambda s: _inferred(s) != (hidden_channels(s["dim"], s["expansion_ratio"]), conv_channels(s["dim"], s["conv_ratio"])),
     lambda s: f"expansion_ratio={s['expansion_ratio']}, conv_ratio={s['conv_ratio']} at dim {s['dim']} give "
               f"{hidden_channels(s['dim'], s['expansion_ratio'])} hidden and {conv_channels(s['dim'], s['conv_ratio'])} "
               f"depthwise channels, which spandrel infers back as {_inferred(s)[0]} and {_inferred(s)[1]} and will not "
               "load this export (jaxsr will)"),
)


ARCH = Arch(
    name="mosr",
    what="a MoSR model",
    build=build,
    detect=detect,
    infer_spec=infer_spec,
    pth_wrapper="params_ema",  # traiNNer-redux saves its EMA generator so; spandrel unwraps it
    scales=(1, 2, 3, 4, 8),  # ps, gps and DySample take any factor; traiNNer-redux's template offers these
    defaults=DEFAULTS,
    spandrel_gaps=SPANDREL_GAPS,
)

__all__ = ["ARCH", "DEFAULTS", "MoSR", "build"]
