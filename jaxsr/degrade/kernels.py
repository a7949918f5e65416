"""Random blur kernels of Real-ESRGAN, drawn on the device (`basicsr/data/degradations.py`, as `realesrgan/data/realesrgan_dataset.py` draws them).

Every kernel lives on a fixed 21x21 grid (`PAD`): a kernel of size ks is the same formula masked to its
central ks x ks window and normalised, which equals Real-ESRGAN's "build at ks, then zero-pad to 21".
So the random kernel size never changes a shape. Grid convention as in BasicSR: x is the column offset,
y the row offset, both in [-10, 10].
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

PAD = 21  # every kernel is zero-padded to 21x21
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def _grid():
    ax = jnp.arange(PAD, dtype=jnp.float32) - PAD // 2
    yy, xx = jnp.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _window(ks):
    """1 inside the central ks x ks window of the 21x21 grid, 0 outside."""
    xx, yy = _grid()
    half = ks // 2
    return ((jnp.abs(xx) <= half) & (jnp.abs(yy) <= half)).astype(jnp.float32)


def _normalise(k, ks):
    k = k * _window(ks)
    return k / jnp.sum(k)


def quadratic_form(sigma_x, sigma_y, theta):
    """d^T Sigma^-1 d on the grid, Sigma = R diag(sx^2, sy^2) R^T with R the rotation by theta."""
    xx, yy = _grid()
    c, s = jnp.cos(theta), jnp.sin(theta)
    # Rotating the offset into the kernel's own axes gives the same form without a matrix inverse.
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def bivariate_kernel(kind, ks, sigma_x, sigma_y, theta, beta):
    """Gaussian (kind 0), generalized Gaussian (1) or plateau (2) kernel, size ks padded to 21, sum 1."""
    q = quadratic_form(sigma_x, sigma_y, theta)
    qb = jnp.power(jnp.maximum(q, 1e-30), beta) * (q > 0)  # q**beta with 0**beta = 0 and a finite gradient
    k = jax.lax.switch(kind, [lambda: jnp.exp(-0.5 * q), lambda: jnp.exp(-0.5 * qb), lambda: 1.0 / (qb + 1.0)])
    return _normalise(k, ks)


def j1(x):
    """Bessel J1 for x >= 0, from J1(x) = (1/2pi) int_0^2pi cos(t - x sin t) dt.

    The trapezoid rule is spectrally accurate for this periodic integrand: with 128 nodes the aliasing
    error is below 1e-9 for x < 60; our arguments stay below pi * 10 * sqrt(2) ~ 44.5.
    """
    t = jnp.arange(128, dtype=jnp.float32) * (2 * math.pi / 128)
    return jnp.mean(jnp.cos(t - x[..., None] * jnp.sin(t)), axis=-1)


def sinc_kernel(omega_c, ks):
    """Circular low-pass kernel K(r) = wc J1(wc r) / (2 pi r), centre wc^2 / (4 pi), size ks padded to 21."""
    xx, yy = _grid()
    r = jnp.sqrt(xx**2 + yy**2)
    r_safe = jnp.where(r == 0, 1.0, r)
    k = jnp.where(r == 0, omega_c**2 / (4 * math.pi), omega_c * j1(omega_c * r_safe) / (2 * math.pi * r_safe))
    return _normalise(k, ks)


def pulse_kernel():
    """The identity kernel: 1 at the centre of the 21x21 grid."""
    return jnp.zeros((PAD, PAD), jnp.float32).at[PAD // 2, PAD // 2].set(1.0)


def pick(u, probs):
    """Index i drawn with probability probs[i] from one uniform u in [0, 1) (inverse CDF)."""
    cdf = np.cumsum(probs) / np.sum(probs)
    return jnp.sum(u >= jnp.asarray(cdf[:-1], jnp.float32)).astype(jnp.int32)


def _kernel_size(u, size_range):
    sizes = np.arange(size_range[0], size_range[1] + 1, 2)
    return jnp.asarray(sizes)[pick(u, np.ones(len(sizes)))]


def _uniform(u, lo, hi):
    return lo + u * (hi - lo)


# Per-sample draws take a vector u of independent U[0,1) numbers, so that a whole batch needs one call of
# the random generator (each call costs compile time).
N_BLUR_UNIFORMS = 9
N_SINC_UNIFORMS = 3


def draw_blur_params(u, kernel_list, kernel_prob, sinc_prob, sigma, betag, betap, size_range=(7, 21)):
    """One sample's kernel parameters from u (N_BLUR_UNIFORMS,). `type` indexes KERNEL_TYPES, or is 6 for sinc."""
    ks = _kernel_size(u[0], size_range)
    mixed = jnp.asarray([KERNEL_TYPES.index(t) for t in kernel_list])[pick(u[1], kernel_prob)]
    is_sinc = u[2] < sinc_prob
    # Real-ESRGAN: cutoff U(pi/3, pi) for ks < 13, else U(pi/5, pi).
    omega_c = _uniform(u[3], jnp.where(ks < 13, math.pi / 3, math.pi / 5), math.pi)
    sx = _uniform(u[4], *sigma)
    is_iso = (mixed % 2) == 0  # iso, generalized_iso, plateau_iso
    lo, hi = jnp.where(mixed >= 4, betap[0], betag[0]), jnp.where(mixed >= 4, betap[1], betag[1])
    # BasicSR's beta: with p=0.5 U(lo, 1), else U(1, hi).
    beta = jnp.where(u[7] < 0.5, _uniform(u[8], lo, 1.0), _uniform(u[8], 1.0, hi))
    return dict(
        type=jnp.where(is_sinc, 6, mixed),
        ks=ks,
        omega_c=omega_c,
        sigma_x=sx,
        sigma_y=jnp.where(is_iso, sx, _uniform(u[5], *sigma)),
        theta=jnp.where(is_iso, 0.0, _uniform(u[6], -math.pi, math.pi)),
        beta=beta,
    )


def draw_final_sinc_params(u, prob, size_range=(7, 21)):
    """Final sinc from u (N_SINC_UNIFORMS,): with p=prob a sinc kernel, cutoff U(pi/3, pi), else the pulse (type 7)."""
    return dict(type=jnp.where(u[0] < prob, 6, 7), ks=_kernel_size(u[1], size_range),
                omega_c=_uniform(u[2], math.pi / 3, math.pi))


def blur_kernel(p):
    """The 21x21 kernel for one sample's parameters from draw_blur_params."""
    t = p["type"]
    shape = jnp.array([0, 0, 1, 1, 2, 2])[jnp.minimum(t, 5)]
    bivariate = bivariate_kernel(shape, p["ks"], p["sigma_x"], p["sigma_y"], p["theta"], p["beta"])
    return jnp.where(t == 6, sinc_kernel(p["omega_c"], p["ks"]), bivariate)


def final_sinc_kernel(p):
    """The 21x21 kernel for one sample's parameters from draw_final_sinc_params."""
    return jnp.where(p["type"] == 6, sinc_kernel(p["omega_c"], p["ks"]), pulse_kernel())
