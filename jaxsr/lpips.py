"""LPIPS (Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features"), v0.1, as an evaluation metric.

distance = sum over 5 backbone layers of mean_{h,w} sum_c w_c (f0/|f0| - f1/|f1|)^2, on inputs mapped to
[-1, 1] and shifted/scaled by the reference's ScalingLayer. Backbones: torchvision's VGG16 or AlexNet
`features` (taps after relu1_2..relu5_3, resp. relu1..relu5). Both weight files come from the user and are
read by the bridge's safe reader; nothing is downloaded, nothing is random.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr.errors import WeightsError
from jaxsr.weights import read_state_dict

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# torchvision `features` as (kind, index in the Sequential, args); "tap" marks an LPIPS layer output.
_ALEX = [("conv", 0, 4, 2), "tap", ("pool", 3, 2), ("conv", 3, 1, 2), "tap", ("pool", 3, 2), ("conv", 6, 1, 1), "tap",
         ("conv", 8, 1, 1), "tap", ("conv", 10, 1, 1), "tap"]


def _vgg16_layers():
    layers, idx = [], 0
    for block, n in enumerate((2, 2, 3, 3, 3)):
        if block:
            layers.append(("pool", 2, 2))
            idx += 1
        for _ in range(n):
            layers.append(("conv", idx, 1, 1))
            idx += 2  # conv, relu
        layers.append("tap")
    return layers


HOW_TO_GET = (
    "LPIPS needs two files, never downloaded by jaxsr: the backbone, torchvision's ImageNet weights "
    "(vgg16-397923af.pth or alexnet-owt-7be5be79.pth from https://download.pytorch.org/models/, or "
    "~/.cache/torch/hub/checkpoints/ after torchvision used them once), and the linear layers of the `lpips` "
    "package (pip install lpips; site-packages/lpips/weights/v0.1/vgg.pth or alex.pth, matching the backbone)."
)


def _layers_for(sd):
    w = sd.get("features.0.weight")
    if w is None:
        raise WeightsError(f"not a torchvision VGG16/AlexNet state dict (no features.0.weight). {HOW_TO_GET}")
    return ("alex", _ALEX) if w.shape[-1] == 11 else ("vgg", _vgg16_layers())


def _features(x, layers, params):
    taps = []
    for layer in layers:
        if layer == "tap":
            taps.append(x)
        elif layer[0] == "pool":
            k, s = layer[1], layer[2]
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")
        else:
            _, i, stride, pad = layer
            w, b = params[i]
            x = jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                             precision=jax.lax.Precision.HIGHEST)
            x = jax.nn.relu(x + b)
    return taps


def _distance(params, lins, layers, a, b):
    """LPIPS of NHWC batches in [0, 1]; shape (N,)."""
    shift, scale = jnp.asarray(SHIFT), jnp.asarray(SCALE)
    fa, fb = (_features((2.0 * t - 1.0 - shift) / scale, layers, params) for t in (a, b))
    total = 0.0
    for x, y, lin in zip(fa, fb, lins):
        x = x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + 1e-10)
        y = y / (jnp.sqrt(jnp.sum(y * y, axis=-1, keepdims=True)) + 1e-10)
        total = total + jnp.mean(jnp.sum((x - y) ** 2 * lin, axis=-1), axis=(1, 2))
    return total


def load_lpips(backbone_path, linear_path):
    """A function (sr, hr) -> LPIPS distance (float) for HxWx3 float images in [0, 1]."""
    for p in (backbone_path, linear_path):
        if not os.path.isfile(p):
            raise WeightsError(f"LPIPS weights file {p!r} not found. {HOW_TO_GET}")
    sd, _ = read_state_dict(backbone_path)
    net, layers = _layers_for(sd)
    params, chans = {}, []
    for layer in layers:
        if layer == "tap":
            chans.append(int(params[last][0].shape[-1]))
        elif layer[0] == "conv":
            last = layer[1]
            try:
                params[last] = (jnp.asarray(np.asarray(sd[f"features.{last}.weight"]).transpose(2, 3, 1, 0)),  # OIHW -> HWIO
                                jnp.asarray(np.asarray(sd[f"features.{last}.bias"])))
            except KeyError:
                raise WeightsError(f"{backbone_path}: features.{last} missing for the {net} backbone. {HOW_TO_GET}") from None
    lin_sd, _ = read_state_dict(linear_path)
    lin_sd = {k.removeprefix("module."): v for k, v in lin_sd.items()}
    try:
        lins = [jnp.asarray(np.asarray(lin_sd[f"lin{k}.model.1.weight"]).reshape(-1)) for k in range(5)]
    except KeyError:
        raise WeightsError(f"{linear_path} has no lin0..lin4.model.1.weight: not an lpips v0.1 weights file. {HOW_TO_GET}") from None
    if [int(x.shape[0]) for x in lins] != chans:
        raise WeightsError(f"{linear_path} does not fit the {net} backbone in {backbone_path} "
                           f"(channels {[int(x.shape[0]) for x in lins]} vs {chans}): use the lpips file named after it")
    fn = jax.jit(lambda a, b: _distance(params, lins, layers, a, b))

    def lpips(sr, hr):
        return float(fn(jnp.asarray(sr, jnp.float32)[None], jnp.asarray(hr, jnp.float32)[None])[0])

    lpips.net = net
    return lpips

