"""The guided filter (He et al.) on NHWC arrays, differentiable, as White-box Cartoonization uses it: on a
generator's output with the input photo as guide at inference (r=1, eps=5e-3), and on output and cartoon for the
surface representation (r=5, eps=2e-1).

Per channel: with box means over the (2r+1)^2 window, A = cov(guide, x) / (var(guide) + eps), b = mean(x) - A *
mean(guide), and the output mean(A) * guide + mean(b). The window at the borders: `border='valid'` averages the
pixels inside the image, as the original's TF code does (a zero-padded box sum divided by the box sum of ones);
`border='reflect'` pads by reflection (torch's 'reflect', the edge not repeated), as victorca25/traiNNer's port
(`dataops/filters.py`) does. Away from the borders the two agree.
"""
import jax
import jax.numpy as jnp

BORDERS = ("valid", "reflect")


def _box_sum(x, r, border):
    """Sum over the (2r+1)^2 window around each pixel, NHWC."""
    k = 2 * r + 1
    if border == "reflect":
        x, pad = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect"), ((0, 0),) * 4
    else:
        pad = ((0, 0), (r, r), (r, r), (0, 0))
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, k, k, 1), (1, 1, 1, 1), pad)


def guided_filter(x, guide, r, eps, border="valid"):
    """`x` (N, H, W, C) filtered with `guide` (N, H, W, C or 1) as the guidance image, window radius `r`,
    regularisation `eps`; `border` 'valid' (the original's) or 'reflect' (victorca25's port's)."""
    if border not in BORDERS:
        raise ValueError(f"guided filter border: one of {BORDERS}, not {border!r}")
    if r < 1 or (border == "reflect" and min(x.shape[1:3]) <= r):
        raise ValueError(f"guided filter: radius r={r} must be >= 1 and, with reflection, below the sides "
                         f"{x.shape[1]}x{x.shape[2]}")
    x, guide = jnp.asarray(x, jnp.float32), jnp.asarray(guide, jnp.float32)
    if border == "valid":
        n = _box_sum(jnp.ones((1, *x.shape[1:3], 1), jnp.float32), r, border)
    else:
        n = float((2 * r + 1) ** 2)
    mean = lambda t: _box_sum(t, r, border) / n  # noqa: E731
    mean_g, mean_x = mean(guide), mean(x)
    cov = mean(guide * x) - mean_g * mean_x
    var = mean(guide * guide) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_x - a * mean_g
    return mean(a) * guide + mean(b)
