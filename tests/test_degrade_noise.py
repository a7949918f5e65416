"""Gaussian and Poisson noise statistics (BasicSR's `degradations.py` *_pt definitions)."""
import jax
import jax.numpy as jnp
import numpy as np
from conftest import photo

from jaxsr.degrade import ops

# Tolerances: relative error of a variance estimate from N samples is ~sqrt(2/N); we allow 5 of those.


def test_gaussian_colour_noise_mean_and_std():
    x = np.full((4, 64, 64, 3), 0.5, np.float32)
    sigma = jnp.array([2.0, 8.0, 20.0, 30.0]) / 255
    out = jax.jit(ops.gaussian_noise)(jax.random.key(0), x, sigma, jnp.zeros(4))
    noise = np.asarray(out) - 0.5
    n = noise[0].size
    std = noise.reshape(4, -1).std(1)
    np.testing.assert_allclose(std, np.asarray(sigma), rtol=5 * np.sqrt(0.5 / n))
    assert np.all(np.abs(noise.reshape(4, -1).mean(1)) < 5 * np.asarray(sigma) / np.sqrt(n))
    corr = np.corrcoef(noise[3, ..., 0].ravel(), noise[3, ..., 1].ravel())[0, 1]
    assert abs(corr) < 5 / np.sqrt(64 * 64)  # colour noise is independent per channel


def test_gaussian_gray_noise_is_one_field_per_batch_scaled_per_sample():
    x = np.full((3, 32, 32, 3), 0.5, np.float32)
    sigma = jnp.array([10.0, 20.0, 5.0]) / 255
    noise = np.asarray(jax.jit(ops.gaussian_noise)(jax.random.key(1), x, sigma, jnp.array([1.0, 1.0, 0.0]))) - 0.5
    assert np.all(noise[:2, ..., 0:1] == noise[:2])  # gray: the same noise in R, G and B
    np.testing.assert_allclose(noise[1], 2 * noise[0], atol=1e-6)  # Real-ESRGAN shares the gray field
    assert np.abs(noise[2, ..., 0] - noise[2, ..., 1]).mean() > 0.01  # colour sample


def test_gaussian_noise_clips_and_respects_the_canvas():
    x = np.zeros((2, 40, 40, 3), np.float32)
    x[:, :25, :30] = photo(h=25, w=30, top=200, left=200)
    out = np.asarray(jax.jit(ops.gaussian_noise)(jax.random.key(2), x, jnp.array([0.2, 0.2]), jnp.zeros(2),
                                                 (jnp.int32(25), jnp.int32(30))))
    assert out.min() >= 0 and out.max() <= 1
    assert not out[:, 25:].any() and not out[:, :, 30:].any()


def test_pow2_level_count():
    ramp = np.tile(np.arange(256, dtype=np.float32)[None, :, None] / 255, (8, 1, 3))[None]
    three = np.array([0.0, 0.5, 1.0], np.float32)[None, None, :, None].repeat(3, -1)
    count = jax.jit(lambda x, v: ops._pow2_levels(jnp.round(x * 255).astype(jnp.int32), v))
    assert float(count(ramp, None)[0]) == 256
    assert float(count(three, None)[0]) == 4
    assert float(count(ramp, (jnp.int32(8), jnp.int32(129)))[0]) == 256  # 129 levels -> next power of two
    assert float(count(ramp, (jnp.int32(8), jnp.int32(64)))[0]) == 64
    assert float(count(np.full((1, 4, 4, 3), 0.3, np.float32), None)[0]) == 1


def test_poisson_variance_grows_with_the_signal():
    """Ramp with all 256 levels, so 256 photon levels: Var(noise) = scale^2 * value / 256, mean 0."""
    x = np.tile(np.arange(256, dtype=np.float32)[None, :, None] / 255, (96, 1, 3))[None].repeat(4, 0)
    scale = jnp.array([1.0, 1.0, 2.0, 0.5])
    out = jax.jit(ops.poisson_noise)(jax.random.key(3), x, scale, jnp.zeros(4))
    noise = (np.asarray(out) - x) / np.asarray(scale)[:, None, None, None]
    variances, expected = [], []
    for lo in range(40, 200, 40):  # away from the clip at 0 and 1
        band = noise[:, :, lo:lo + 40].reshape(-1)
        value = (lo + 19.5) / 255
        variances.append(band.var())
        expected.append(value / 256)
        assert abs(band.mean()) < 5 * np.sqrt(value / 256 / band.size)
        np.testing.assert_allclose(band.var(), value / 256, rtol=5 * np.sqrt(2 / band.size) + 0.01)
    assert np.all(np.diff(variances) > 0)


def test_poisson_gray_noise_is_shared_by_the_channels():
    x = np.stack([photo(h=48, w=48, top=100, left=100), photo("coffee", 48, 48, 100, 100)])
    out = np.asarray(jax.jit(ops.poisson_noise)(jax.random.key(4), x, jnp.array([1.0, 1.0]), jnp.array([1.0, 0.0])))
    noise = out - x
    unclipped = np.all((out[0] > 0) & (out[0] < 1), axis=-1)  # clipping would make the channels differ
    assert unclipped.mean() > 0.9
    assert np.abs(noise[0, ..., 0] - noise[0, ..., 1])[unclipped].max() < 1e-6
    assert np.abs(noise[1, ..., 0] - noise[1, ..., 1]).mean() > 1e-3
