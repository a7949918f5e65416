"""Pixel losses and the small helpers other losses share (criteria, Gaussian blur). NHWC float32."""
import jax
import jax.numpy as jnp
import numpy as np


def l1(a, b):
    return jnp.mean(jnp.abs(a - b))


def mse(a, b):
    return jnp.mean((a - b) ** 2)


def charbonnier(a, b, eps=1e-12):
    """BasicSR's charbonnier_loss, sqrt((a-b)^2 + eps) with eps added as is (not squared), minus its floor
    sqrt(eps) so that identical images give 0 (same gradients as BasicSR)."""
    return jnp.mean(jnp.sqrt((a - b) ** 2 + eps)) - jnp.sqrt(eps)


def chc(a, b):
    """neosr chc_loss as consistency_loss uses it (lambda 0, clip [0,1]): clipped pseudo-Huber, minus the
    1e-6 floor like `charbonnier`."""
    return jnp.mean(jnp.clip(jnp.sqrt((a - b) ** 2 + 1e-12), 0.0, 1.0)) - 1e-6


_ELEMENTWISE = {
    "l1": lambda a, b: jnp.abs(a - b),
    "l2": lambda a, b: (a - b) ** 2,
    "mse": lambda a, b: (a - b) ** 2,
    "charbonnier": lambda a, b: jnp.sqrt((a - b) ** 2 + 1e-12),
}
_REDUCED = {"l1": l1, "l2": mse, "mse": mse, "charbonnier": charbonnier, "chc": chc}


def get_criterion(name, reduce=True):
    """A criterion by name: mean-reduced (l1, l2/mse, charbonnier, chc) or elementwise."""
    table = _REDUCED if reduce else _ELEMENTWISE
    if name not in table:
        raise ValueError(f"unknown criterion {name!r}; choose one of {sorted(table)}")
    return table[name]


def gaussian_blur(x, kernel_size, sigma):
    """torchvision GaussianBlur(kernel_size, sigma) on NHWC: separable, reflect padding (no edge repeat)."""
    r = kernel_size // 2
    t = np.linspace(-r, r, kernel_size)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g = jnp.asarray(g / g.sum(), x.dtype)
    x = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    c = x.shape[-1]
    for shape in ((kernel_size, 1, 1, c), (1, kernel_size, 1, c)):
        x = jax.lax.conv_general_dilated(
            x, jnp.broadcast_to(g.reshape(shape[:2] + (1, 1)), shape), (1, 1), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c, precision=jax.lax.Precision.HIGHEST,
        )
    return x


def detail_loss(sr, gt, criterion="l1"):
    """Local detail: the criterion on horizontal and vertical finite differences (edges), summed.
    Penalises blurred or displaced edges that a pixel loss averages away."""
    crit = get_criterion(criterion)

    def grads(x):
        return x[:, 1:, :, :] - x[:, :-1, :, :], x[:, :, 1:, :] - x[:, :, :-1, :]

    (sy, sx), (gy, gx) = grads(sr), grads(gt)
    return crit(sy, gy) + crit(sx, gx)


def avg_pool2(x):
    """nn.AvgPool2d(2, stride=2) on NHWC: a trailing odd row/column is dropped, as torch floors."""
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


MULTISCALE_WEIGHTS = (1.0, 0.5, 0.25, 0.125, 0.125)


def multiscale_loss(sr, gt, criterion="l1", scales=5, weights=None):
    """PPON's multiscale pixel loss (victorca25/traiNNer `MultiscalePixelLoss`): sum_i w_i criterion(sr_i, gt_i),
    sr_i and gt_i halved i times by 2x2 average pooling; weights (1, .5, .25, .125, .125)[:scales]."""
    crit = get_criterion(criterion)
    weights = tuple(float(w) for w in (weights or MULTISCALE_WEIGHTS[: int(scales)]))
    total = 0.0
    for i, w in enumerate(weights):
        total = total + w * crit(sr, gt)
        if i != len(weights) - 1:
            sr, gt = avg_pool2(sr), avg_pool2(gt)
    return total
