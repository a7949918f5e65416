"""DISTS (Ding et al., 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity", IEEE TPAMI
44(5)) as an evaluation metric, transcribed from the formulas of the reference package DISTS_pytorch 0.1
(https://github.com/dingkeyan93/DISTS, DISTS_pytorch/DISTS_pt.py).

Features: the image itself (stage 0, as given in [0, 1]) and torchvision's VGG16 `features` on the ImageNet-normalised
image, tapped after relu1_2..relu5_3, with each max pooling replaced by L2 pooling: sqrt(hanning-window filter of x^2
+ 1e-12), a normalised 3x3 window ([.5, 1, .5] outer itself), stride 2, padding 1, per channel. Per stage and channel,
with spatial means m, variances v and covariance cov = E[xy] - E[x]E[y]:
  structure S1 = (2 m_x m_y + c1) / (m_x^2 + m_y^2 + c1), texture S2 = (2 cov + c2) / (v_x + v_y + c2), c1 = c2 = 1e-6;
  DISTS = 1 - sum over all 1475 channels of (alpha S1 + beta S2), alpha and beta divided by sum(alpha) + sum(beta).
Both weight files come from the user and are read by the bridge's safe reader; nothing is downloaded, nothing is random.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr.errors import WeightsError
from jaxsr.weights import read_state_dict

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
C1 = C2 = 1e-6
# VGG16 blocks as (channels, conv indices in torchvision's `features`); the L2 pooling sits where the max pool was.
_BLOCKS = [(64, (0, 2)), (128, (5, 7)), (256, (10, 12, 14)), (512, (17, 19, 21)), (512, (24, 26, 28))]
CHANNELS = [3] + [c for c, _ in _BLOCKS]  # 1475 alpha/beta weights in all

HOW_TO_GET = (
    "DISTS needs two files, never downloaded by jaxsr: the backbone, torchvision's ImageNet VGG16 weights "
    "(vgg16-397923af.pth from https://download.pytorch.org/models/, or ~/.cache/torch/hub/checkpoints/ after "
    "torchvision used them once), and the alpha/beta weights of the DISTS_pytorch package (pip install --no-deps "
    "DISTS_pytorch; site-packages/DISTS_pytorch/weights.pt, or DISTS_pytorch/weights.pt in github.com/dingkeyan93/DISTS)."
)


def _l2pool_filter(channels):
    a = np.hanning(5)[1:-1]
    g = a[:, None] * a[None, :]
    return jnp.asarray(np.tile((g / g.sum()).astype(np.float32)[:, :, None, None], (1, 1, 1, channels)))  # HWIO, depthwise


def _conv(x, w, **kw):
    return jax.lax.conv_general_dilated(x, w, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST, **kw)


def _features(x, params, pools):
    """The six DISTS stages of an NHWC batch in [0, 1]."""
    feats = [x]
    h = (x - jnp.asarray(MEAN)) / jnp.asarray(STD)
    for block, (_, convs) in enumerate(_BLOCKS):
        if block:  # L2 pooling instead of VGG's max pooling
            out = _conv(h * h, pools[block], window_strides=(2, 2), padding=[(1, 1)] * 2, feature_group_count=h.shape[-1])
            h = jnp.sqrt(out + 1e-12)
        for i in convs:
            w, b = params[i]
            h = jax.nn.relu(_conv(h, w, window_strides=(1, 1), padding=[(1, 1)] * 2) + b)
        feats.append(h)
    return feats


def _distance(params, pools, alpha, beta, a, b):
    """DISTS of NHWC batches in [0, 1]; shape (N,)."""
    w_sum = jnp.sum(alpha) + jnp.sum(beta)
    splits = np.cumsum(CHANNELS)[:-1]
    alphas, betas = jnp.split(alpha / w_sum, splits), jnp.split(beta / w_sum, splits)
    total = 0.0
    for x, y, al, be in zip(_features(a, params, pools), _features(b, params, pools), alphas, betas):
        mx, my = jnp.mean(x, axis=(1, 2)), jnp.mean(y, axis=(1, 2))
        vx = jnp.mean((x - mx[:, None, None]) ** 2, axis=(1, 2))
        vy = jnp.mean((y - my[:, None, None]) ** 2, axis=(1, 2))
        cov = jnp.mean(x * y, axis=(1, 2)) - mx * my  # as the reference computes it
        s1 = (2 * mx * my + C1) / (mx ** 2 + my ** 2 + C1)
        s2 = (2 * cov + C2) / (vx + vy + C2)
        total = total + jnp.sum(al * s1 + be * s2, axis=-1)
    return 1.0 - total


def _backbone(path):
    sd, _ = read_state_dict(path)
    params, cin = {}, 3
    for cout, convs in _BLOCKS:
        for i in convs:
            w, b = sd.get(f"features.{i}.weight"), sd.get(f"features.{i}.bias")
            if w is None or b is None:
                raise WeightsError(f"{path}: features.{i} missing, not a torchvision VGG16 state dict. {HOW_TO_GET}")
            if tuple(w.shape) != (cout, cin, 3, 3) or tuple(b.shape) != (cout,):
                raise WeightsError(f"{path}: features.{i}.weight is {tuple(w.shape)}, VGG16 has {(cout, cin, 3, 3)}: "
                                   f"not torchvision's VGG16. {HOW_TO_GET}")
            params[i] = (jnp.asarray(np.asarray(w, np.float32).transpose(2, 3, 1, 0)), jnp.asarray(np.asarray(b, np.float32)))
            cin = cout
    return params


def _alpha_beta(path):
    sd, _ = read_state_dict(path)
    n = sum(CHANNELS)
    if not {"alpha", "beta"} <= set(sd):
        raise WeightsError(f"{path} has no alpha/beta (keys: {', '.join(list(sd)[:4])}): "
                           f"not DISTS_pytorch's weights.pt. {HOW_TO_GET}")
    if any(np.size(sd[k]) != n for k in ("alpha", "beta")):
        raise WeightsError(f"{path}: alpha/beta hold {np.size(sd['alpha'])}/{np.size(sd['beta'])} values, DISTS has {n} "
                           f"(shape (1, {n}, 1, 1)): not DISTS_pytorch's weights.pt. {HOW_TO_GET}")
    return (jnp.asarray(np.asarray(sd[k], np.float32).reshape(n)) for k in ("alpha", "beta"))


def load_dists(backbone_path, alpha_beta_path):
    """A function (sr, hr) -> DISTS (float, lower = more similar) for HxWx3 float images in [0, 1]."""
    for p in (backbone_path, alpha_beta_path):
        if not os.path.isfile(p):
            raise WeightsError(f"DISTS weights file {p!r} not found. {HOW_TO_GET}")
    params = _backbone(backbone_path)
    alpha, beta = _alpha_beta(alpha_beta_path)
    pools = {k: _l2pool_filter(CHANNELS[k]) for k in range(1, 5)}  # before block k: block k-1's channels
    fn = jax.jit(lambda a, b: _distance(params, pools, alpha, beta, a, b))

    def dists(sr, hr):
        sr, hr = jnp.asarray(sr, jnp.float32), jnp.asarray(hr, jnp.float32)
        if sr.shape != hr.shape:
            raise ValueError(f"DISTS compares images of one shape, got {sr.shape} and {hr.shape}")
        return float(fn(sr[None], hr[None])[0])

    dists.net = "dists"
    return dists
