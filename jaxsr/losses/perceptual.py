"""Perceptual loss on VGG19 features (BasicSR `PerceptualLoss`), with torchvision's VGG19 as the feature net.

`VGG19Features` mirrors torchvision's `vgg19().features` (an nn.Sequential), so a torchvision
`vgg19-*.pth` maps key for key (`features.N.weight/bias`) through `jaxsr.archs.bridge`. The net is
truncated after the deepest layer the loss needs. Weights are never downloaded and never random:
without a weights file the loss refuses to build.
"""
import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.bridge import load_state_dict
from jaxsr.archs.common import conv
from jaxsr.errors import WeightsError
from jaxsr.weights import read_state_dict
from jaxsr.losses.pixel import get_criterion

# torchvision cfg "E" (VGG19); 'M' is MaxPool2d(2, 2).
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}

HOW_TO_GET_VGG = (
    "Set it to torchvision's ImageNet VGG19 weights (vgg19-dcbb9e9d.pth), e.g. downloaded once with "
    "`python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` (saved under "
    "~/.cache/torch/hub/checkpoints/) or from https://download.pytorch.org/models/vgg19-dcbb9e9d.pth. "
    "jaxsr never downloads it and never uses random weights."
)


def vgg19_layer_names():
    """BasicSR's names for the torchvision feature indices: conv1_1, relu1_1, ..., pool5."""
    names, block, i = [], 1, 1
    for v in _VGG19:
        if v == "M":
            names.append(f"pool{block}")
            block, i = block + 1, 1
        else:
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            i += 1
    return names


class _ReLU(nnx.Module):
    def __call__(self, x):
        return jax.nn.relu(x)


class _MaxPool2(nnx.Module):
    def __call__(self, x):
        return nnx.max_pool(x, (2, 2), strides=(2, 2))


class VGG19Features(nnx.Module):
    """torchvision vgg19().features[: n_layers], NHWC; returns the named intermediate outputs."""

    def __init__(self, n_layers=len(vgg19_layer_names()), *, rngs):
        layers, c = [], 3
        for v in _VGG19:
            if v == "M":
                layers.append(_MaxPool2())
            else:
                layers += [conv(c, v, 3, rngs=rngs), _ReLU()]
                c = v
        self.features = nnx.List(layers[:n_layers])
        self.names = tuple(vgg19_layer_names()[:n_layers])

    def __call__(self, x, wanted):
        out = {}
        for name, layer in zip(self.names, self.features):
            x = layer(x)
            if name in wanted:
                out[name] = x
        return out


def load_vgg19(path, layers, field="perceptual.vgg_weights"):
    """VGG19Features truncated after the deepest of `layers`, with torchvision weights from `path`."""
    if not path:
        raise WeightsError(f"the perceptual loss needs VGG19 weights: config field `{field}` is not set. {HOW_TO_GET_VGG}")
    if not os.path.isfile(path):
        raise WeightsError(f"`{field}` = {path!r}: no such file. {HOW_TO_GET_VGG}")
    names = vgg19_layer_names()
    unknown = sorted(set(layers) - set(names))
    if unknown:
        raise ValueError(f"unknown VGG19 layers {unknown}; valid names are {names}")
    n = max(names.index(k) for k in layers) + 1
    model = VGG19Features(n, rngs=nnx.Rngs(0))
    sd, _ = read_state_dict(path)  # the bridge's safe reader: no pickled code runs
    sd = {k: v for k, v in sd.items() if k.startswith("features.") and int(k.split(".")[1]) < n}
    try:
        load_state_dict(model, sd, strict=True)
    except WeightsError as e:
        raise WeightsError(f"`{field}` = {path!r} is not torchvision's VGG19: {e}. {HOW_TO_GET_VGG}") from e
    return model


class VGGFeatureLoss:
    """What the VGG19 feature losses share: the truncated net from the user's weights file, its weights as a pytree
    (`params`, so a trainer passes them into its jitted step instead of baking 80 MB of constants into the
    program), ImageNet input normalisation and the named features of SR and (gradient-stopped) GT."""

    inputs = ("sr", "target", "params")

    def __init__(self, vgg_weights, layer_weights, use_input_norm=True, range_norm=False, config_field="perceptual.vgg_weights"):
        self.layer_weights = {k: float(v) for k, v in dict(layer_weights).items()}
        model = load_vgg19(vgg_weights, self.layer_weights, config_field)
        self.graphdef, self.params = nnx.split(model)
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm

    def features(self, sr, gt, params=None):
        model = nnx.merge(self.graphdef, self.params if params is None else params)

        def norm(x):
            if self.range_norm:
                x = (x + 1) / 2
            if self.use_input_norm:
                x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
            return x

        return model(norm(sr), self.layer_weights), model(norm(jax.lax.stop_gradient(gt)), self.layer_weights)


class PerceptualLoss(VGGFeatureLoss):
    """BasicSR PerceptualLoss (style weight 0): sum_k w_k * criterion(phi_k(sr), phi_k(gt)) on
    pre-activation (convX_Y) or post-activation features, ImageNet-normalised inputs."""

    def __init__(self, vgg_weights=None, layer_weights=None, criterion="l1", use_input_norm=True, range_norm=False,
                 config_field="perceptual.vgg_weights"):
        super().__init__(vgg_weights, layer_weights or DEFAULT_LAYER_WEIGHTS, use_input_norm, range_norm, config_field)
        self.criterion = criterion

    def _crit(self, a, b):
        if self.criterion == "fro":
            return jnp.sqrt(jnp.sum((a - b) ** 2))
        return get_criterion(self.criterion)(a, b)

    def __call__(self, sr, gt, params=None):
        fx, fy = self.features(sr, gt, params)
        return sum(w * self._crit(fx[k], fy[k]) for k, w in self.layer_weights.items())
