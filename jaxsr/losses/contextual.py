"""Contextual loss (Mechrez, Talmi, Zelnik-Manor, "The Contextual Loss for Image Transformation with Non-Aligned
Data", ECCV 2018, arXiv 1803.02077) on the VGG19 features of `jaxsr.losses.perceptual`.

It compares the *sets* of feature vectors of SR and GT, not their positions, so it tolerates misalignment. For
features x_i of SR and y_j of GT: d_ij (cosine: (1 - cos(x_i - mu_y, y_j - mu_y)) / 2, or squared L2),
d~_ij = d_ij / (min_k d_ik + 1e-5), w_ij = exp((b - d~_ij) / h), CX_ij = w_ij / sum_k w_ik,
CX = mean_j max_i CX_ij, loss = -log CX per image, averaged; summed over layers with their weights. The numbers
follow traiNNer-redux's `ContextualLoss` (traiNNer/losses/contextual_loss.py): h = band_width 0.5, b = 1.
It builds an (H*W)^2 matrix per image and layer: layers deeper than conv3 keep that small; maps larger than
max_1d_size^2 positions are refused (traiNNer samples them at random instead).
"""
import jax
import jax.numpy as jnp

from jaxsr.losses.perceptual import VGGFeatureLoss

_HI = jax.lax.Precision.HIGHEST


def _normalize(x, eps=1e-12):
    """F.normalize(x, dim=-1): x / max(||x||, eps), with a finite gradient at 0."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def contextual_similarity(x, y, distance="cosine", band_width=0.5, b=1.0):
    """CX(x, y) per image for feature maps (N, H, W, C) (the mean over y's positions of the best match in x)."""
    n, c = x.shape[0], x.shape[-1]
    x, y = x.reshape(n, -1, c).astype(jnp.float32), y.reshape(n, -1, c).astype(jnp.float32)
    if distance == "cosine":
        mu = jnp.mean(y, axis=(0, 1))
        x, y = _normalize(x - mu), _normalize(y - mu)
        d = jnp.maximum((1 - jnp.einsum("npc,nqc->npq", x, y, precision=_HI)) / 2, 0.0)
    elif distance == "l2":
        xy = jnp.einsum("npc,nqc->npq", x, y, precision=_HI)
        d = jnp.maximum(jnp.sum(x * x, -1)[:, :, None] + jnp.sum(y * y, -1)[:, None, :] - 2 * xy, 0.0)
    else:
        raise ValueError(f"contextual distance must be 'cosine' or 'l2', got {distance!r}")
    rel = d / (jnp.min(d, axis=-1, keepdims=True) + 1e-5)
    w = jnp.exp((b - rel) / band_width)
    cx = w / jnp.sum(w, axis=-1, keepdims=True)
    return jnp.mean(jnp.max(cx, axis=1), axis=-1)


class ContextualLoss(VGGFeatureLoss):
    """sum_k w_k * mean(-log CX(phi_k(sr), phi_k(gt))); 'symmetric' averages CX(sr, gt) and CX(gt, sr)."""

    def __init__(self, vgg_weights=None, layer_weights=None, distance="cosine", band_width=0.5, b=1.0, calc_type="regular",
                 use_input_norm=True, range_norm=False, max_1d_size=100, config_field="contextual.vgg_weights"):
        if calc_type not in ("regular", "symmetric"):
            raise ValueError(f"contextual calc_type must be 'regular' or 'symmetric', got {calc_type!r}")
        if float(band_width) <= 0:
            raise ValueError(f"contextual band_width must be positive, got {band_width}")
        super().__init__(vgg_weights, layer_weights or {"conv3_2": 1.0, "conv4_2": 1.0}, use_input_norm, range_norm, config_field)
        self.opts = dict(distance=distance, band_width=float(band_width), b=float(b))
        self.symmetric = calc_type == "symmetric"
        self.max_positions = int(max_1d_size) ** 2

    def _loss(self, x, y):
        if x.shape[1] * x.shape[2] > self.max_positions:
            raise ValueError(f"contextual loss: a {x.shape[1]}x{x.shape[2]} feature map exceeds max_1d_size^2 = "
                             f"{self.max_positions} positions; use deeper layers, a smaller crop, or raise max_1d_size")
        loss = jnp.mean(-jnp.log(contextual_similarity(x, y, **self.opts)))
        if self.symmetric:
            loss = (loss + jnp.mean(-jnp.log(contextual_similarity(y, x, **self.opts)))) / 2
        return loss

    def __call__(self, sr, gt, params=None):
        fx, fy = self.features(sr, gt, params)
        return sum(w * self._loss(fx[k], fy[k]) for k, w in self.layer_weights.items())
