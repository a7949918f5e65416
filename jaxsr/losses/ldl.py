"""LDL: the artifact map of Liang, Zeng, Zhang, "Details or Artifacts: A Locally Discriminative Learning Approach to
Realistic Image Super-Resolution", CVPR 2022 (arXiv 2203.09195), as traiNNer-redux's `LDLLoss` computes it
(traiNNer/losses/ldl_loss.py, after the authors' csjliang/LDL).

It needs the EMA model's output on the same input (`sr_ema`): pixels where the trained model is closer to the GT
than its EMA are not artifacts (weight 0). Elsewhere the weight is var(residual over the image)^(1/5) times the
local variance of the residual in a ksize x ksize window (unbiased, reflect padding), and the loss is the
criterion between weight * sr and weight * gt. The gradient flows through the weight, as in the reference.
"""
import jax
import jax.numpy as jnp

from jaxsr.losses.pixel import get_criterion


def _local_variance(r, k):
    """Unbiased variance of each k x k window around every pixel of (N, H, W, 1), reflect-padded, from window sums
    of the residual centred on its image mean (the variance does not change; the float32 cancellation shrinks)."""
    p = (k - 1) // 2
    r = r - jnp.mean(r, axis=(1, 2, 3), keepdims=True)
    rp = jnp.pad(r, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    box = lambda x: jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, k, k, 1), (1, 1, 1, 1), "VALID")  # noqa: E731
    s, s2 = box(rp), box(rp * rp)
    return jnp.maximum(s2 - s * s / (k * k), 0.0) / (k * k - 1)


def _fifth_root(v):
    """v^(1/5) with a zero (not infinite) gradient where v = 0 (identical images)."""
    pos = v > 0
    return jnp.where(pos, jnp.where(pos, v, 1.0) ** 0.2, 0.0)


def artifact_map(gt, sr, sr_ema, ksize=7):
    """LDL's refined artifact map (N, H, W, 1): the per-pixel weight of the artifact loss."""
    r_sr = jnp.sum(jnp.abs(gt - sr), axis=-1, keepdims=True)
    r_ema = jnp.sum(jnp.abs(gt - jax.lax.stop_gradient(sr_ema)), axis=-1, keepdims=True)
    n = r_sr[0].size
    mean = jnp.mean(r_sr, axis=(1, 2, 3), keepdims=True)
    patch = _fifth_root(jnp.sum((r_sr - mean) ** 2, axis=(1, 2, 3), keepdims=True) / (n - 1))
    weight = patch * _local_variance(r_sr, int(ksize))
    return jnp.where(r_sr < r_ema, 0.0, weight)


class LDLLoss:
    """criterion(map * sr, map * gt) with LDL's artifact map; called as (sr, gt, sr_ema)."""

    inputs = ("sr", "target", "sr_ema")

    def __init__(self, criterion="l1", ksize=7):
        self.crit = get_criterion(criterion)
        self.ksize = int(ksize)

    def __call__(self, sr, gt, sr_ema):
        w = artifact_map(gt, sr, sr_ema.astype(jnp.float32), self.ksize)
        return self.crit(w * sr, w * gt)
