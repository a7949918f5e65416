"""Blur kernels against their closed forms (`basicsr/data/degradations.py`), the sinc kernel against scipy.special.j1."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxsr.degrade import kernels


def closed_form(kind, ks, sx, sy, theta, beta):
    """The BasicSR formulas evaluated pixel by pixel in float64 at size ks, then zero-padded to 21."""
    sigma = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    sigma = sigma @ np.diag([sx**2, sy**2]) @ sigma.T
    inv = np.linalg.inv(sigma)
    k = np.zeros((ks, ks))
    for r in range(ks):
        for c in range(ks):
            d = np.array([c - ks // 2, r - ks // 2])  # (x, y) = (column, row) offsets
            q = d @ inv @ d
            k[r, c] = {"gauss": math.exp(-0.5 * q), "generalized": math.exp(-0.5 * q**beta),
                       "plateau": 1 / (q**beta + 1)}[kind]
    k /= k.sum()
    p = (21 - ks) // 2
    return np.pad(k, p)


@pytest.mark.parametrize("kind,shape", [("gauss", 0), ("generalized", 1), ("plateau", 2)])
@pytest.mark.parametrize("ks,sx,sy,theta,beta", [(21, 2.5, 0.7, 0.6, 1.7), (7, 0.4, 1.9, -2.0, 0.6), (13, 1.2, 1.2, 0.0, 3.5)])
def test_bivariate_kernels_match_closed_form(kind, shape, ks, sx, sy, theta, beta):
    ours = jax.jit(kernels.bivariate_kernel, static_argnums=0)(shape, ks, sx, sy, theta, beta)
    np.testing.assert_allclose(np.asarray(ours), closed_form(kind, ks, sx, sy, theta, beta), atol=1e-6)


def test_anisotropic_orientation():
    """sigma_x along columns: theta=0 stretches the kernel horizontally, theta=pi/2 vertically."""
    gauss = jax.jit(lambda theta: kernels.bivariate_kernel(0, 21, 3.0, 0.5, theta, 1.0))
    k = np.asarray(gauss(0.0))
    assert k[10, 14] > 100 * k[14, 10]
    k = np.asarray(gauss(math.pi / 2))
    assert k[14, 10] > 100 * k[10, 14]


def test_j1_matches_scipy():
    x = np.linspace(0, 45, 2001, dtype=np.float32)
    assert np.abs(np.asarray(kernels.j1(jnp.asarray(x))) - scipy.special.j1(x.astype(np.float64))).max() < 2e-6


@pytest.mark.parametrize("omega_c,ks", [(math.pi / 3, 7), (2.0, 13), (math.pi, 21), (math.pi / 5, 19)])
def test_sinc_kernel_matches_scipy_j1(omega_c, ks):
    r = np.hypot(*np.meshgrid(np.arange(ks) - (ks - 1) / 2, np.arange(ks) - (ks - 1) / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = omega_c * scipy.special.j1(omega_c * r) / (2 * np.pi * r)
    ref[ks // 2, ks // 2] = omega_c**2 / (4 * np.pi)
    ref = np.pad(ref / ref.sum(), (21 - ks) // 2)
    np.testing.assert_allclose(np.asarray(kernels.sinc_kernel(omega_c, ks)), ref, atol=2e-6)


def test_drawn_kernels_are_normalised_and_confined_to_their_size():
    u = jax.random.uniform(jax.random.key(0), (256, kernels.N_BLUR_UNIFORMS))
    draw = jax.vmap(lambda v: kernels.draw_blur_params(v, list(kernels.KERNEL_TYPES), [1] * 6, 0.2, (0.2, 3),
                                                       (0.5, 4), (1, 2)))
    p = jax.jit(draw)(u)
    k = np.asarray(jax.jit(jax.vmap(kernels.blur_kernel))(p))
    np.testing.assert_allclose(k.sum((1, 2)), 1, atol=1e-5)
    ks = np.asarray(p["ks"])
    assert set(ks) == set(range(7, 22, 2))
    for kernel, size in zip(k, ks):
        pad = (21 - size) // 2
        outside = np.ones((21, 21), bool)
        outside[pad:21 - pad, pad:21 - pad] = False
        assert not kernel[outside].any()
    iso = np.isin(np.asarray(p["type"]), [0, 2, 4])
    assert np.all(np.asarray(p["sigma_x"])[iso] == np.asarray(p["sigma_y"])[iso])
    assert np.all(np.asarray(p["theta"])[iso] == 0)
