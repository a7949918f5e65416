"""JPEG simulation against Pillow's libjpeg on real photographs and against BasicSR DiffJPEG golden values (`basicsr/utils/diffjpeg.py`)."""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import photo
from PIL import Image

from jaxsr.degrade.jpeg import jpeg

# Measured PSNR (dB) of our output against Pillow's decode of a real JPEG, 4:2:0, on 128x128 and 120x136
# crops of astronaut/coffee/chelsea: 'libjpeg' style 47-51 dB at every quality; 'diffjpeg' style (BasicSR's
# algorithm, transposed table and nearest chroma) 33-42 dB. The floors below leave a margin.
FLOOR = {"libjpeg": 44.0, "diffjpeg": 31.0}
GAIN = {"libjpeg": 8.0, "diffjpeg": 2.0}  # dB closer to libjpeg's output than the uncompressed input, q <= 75


def psnr(a, b):
    return 10 * np.log10(1 / np.mean((a.astype(np.float64) - b) ** 2))


def pillow_roundtrip(img_u8, quality):
    buf = io.BytesIO()
    Image.fromarray(img_u8).save(buf, "JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(buf)).astype(np.float32) / 255


@pytest.fixture(scope="module")
def photos():
    crops = [photo("astronaut", 128, 128, 30, 180), photo("coffee", 128, 128, 150, 250), photo("chelsea", 120, 136, 60, 120)]
    return [np.round(c * 255).astype(np.uint8) for c in crops]


@pytest.mark.parametrize("style", ["libjpeg", "diffjpeg"])
def test_jpeg_against_pillow(photos, style):
    fn = jax.jit(lambda x, q: jpeg(x, q, style))
    for img in photos:
        x = img.astype(np.float32)[None] / 255
        for q in (30, 50, 75, 95):
            ref = pillow_roundtrip(img, q)
            ours = np.asarray(fn(x, jnp.array([q], jnp.float32)))[0]
            assert psnr(ours, ref) >= FLOOR[style], (style, q, psnr(ours, ref))
            if q <= 75:  # it really is the same compression, not just a near-identity
                assert psnr(ours, ref) > psnr(x[0], ref) + GAIN[style]


def test_diffjpeg_golden_values():
    b, c, h, w = np.meshgrid(np.arange(2), np.arange(3), np.arange(16), np.arange(16), indexing="ij")
    x = (((16 * h + 7 * w + 31 * c + 13 * b) % 256) / 255).astype(np.float32).transpose(0, 2, 3, 1)
    y = np.asarray(jax.jit(jpeg)(x, jnp.array([30.0, 90.0])))
    np.testing.assert_allclose(y.mean((1, 2, 3)), [0.49871, 0.501289], atol=2e-6)
    np.testing.assert_allclose(y[0, 0, 0], [0.190013, 0.0, 0.587293], atol=2e-6)
    np.testing.assert_allclose(y[1, 5, 9], [0.616393, 0.742305, 0.857522], atol=2e-6)


def test_quality_is_per_sample_and_lower_quality_loses_more(photos):
    x = np.stack([photos[0]] * 3).astype(np.float32) / 255
    y = np.asarray(jax.jit(jpeg)(x, jnp.array([30.0, 60.5, 95.0])))
    errors = [np.mean((y[i] - x[i]) ** 2) for i in range(3)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("style", ["libjpeg", "diffjpeg"])
def test_straight_through_gradient(photos, style):
    x = photos[1][:32, :32].astype(np.float32)[None] / 255
    q = jnp.array([50.0])

    @jax.jit
    def run(v):
        def loss(v, differentiable):
            return jnp.sum(jpeg(v, q, style, differentiable) * x)
        return (jpeg(v, q, style), jpeg(v, q, style, True), jax.grad(loss)(v, True), jax.grad(loss)(v, False))

    hard, soft, g, g_hard = (np.asarray(a) for a in run(x))
    np.testing.assert_array_equal(soft, hard)
    assert np.all(np.isfinite(g)) and np.abs(g).mean() > 0.1
    assert np.abs(g_hard).max() == 0  # plain rounding blocks the gradient; the STE is what makes it flow
