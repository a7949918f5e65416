"""PSNR/SSIM against BasicSR's formulas (transcribed here independently, with OpenCV's filter) and scikit-image."""
import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from conftest import photo
from jaxsr import metrics


def _basicsr_y(img255_rgb):
    """BasicSR to_y_channel on a BGR image as cv2 reads it: /255 in float32, bgr2ycbcr(y_only), x255."""
    bgr = img255_rgb[..., ::-1].astype(np.float32) / 255.0
    return (np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0)[..., None]


def _basicsr_prepare(a, b, crop, y):
    """BasicSR's order: float64, crop the border, then the Y channel."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    if y:
        a, b = _basicsr_y(a).astype(np.float64), _basicsr_y(b).astype(np.float64)
    return a, b


def _basicsr_psnr(a, b, crop, y):
    a, b = _basicsr_prepare(a, b, crop, y)
    mse = np.mean((a - b) ** 2)
    return 10.0 * np.log10(255.0**2 / mse)


def _basicsr_ssim(a, b, crop, y):
    a, b = _basicsr_prepare(a, b, crop, y)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.transpose())
    vals = []
    for c in range(a.shape[2]):
        x, z = a[..., c], b[..., c]
        mu1 = cv2.filter2D(x, -1, win)[5:-5, 5:-5]
        mu2 = cv2.filter2D(z, -1, win)[5:-5, 5:-5]
        s1 = cv2.filter2D(x**2, -1, win)[5:-5, 5:-5] - mu1**2
        s2 = cv2.filter2D(z**2, -1, win)[5:-5, 5:-5] - mu2**2
        s12 = cv2.filter2D(x * z, -1, win)[5:-5, 5:-5] - mu1 * mu2
        m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
        vals.append(m.mean())
    return np.mean(vals)


def _pair(seed, h=72, w=88, top=100, left=150, name="astronaut"):
    hr = photo(name, h, w, top, left)
    rng = np.random.default_rng(seed)
    sr = np.clip(hr + rng.normal(0, 0.04, hr.shape) + 0.02, 0, 1).astype(np.float32)
    return np.round(sr * 255).astype(np.uint8), np.round(hr * 255).astype(np.uint8)


@pytest.mark.parametrize("crop,y", [(4, True), (0, True), (2, False)])
def test_numpy_metrics_equal_basicsr(crop, y):
    sr, hr = _pair(0)
    assert metrics.psnr(sr, hr, crop, y) == pytest.approx(_basicsr_psnr(sr, hr, crop, y), abs=1e-10)
    assert metrics.ssim(sr, hr, crop, y) == pytest.approx(_basicsr_ssim(sr, hr, crop, y), abs=1e-10)
    # float [0,1] input means the same image
    assert metrics.psnr(sr / 255.0, hr / 255.0, crop, y) == pytest.approx(_basicsr_psnr(sr, hr, crop, y), abs=1e-9)


def test_ssim_matches_scikit_image_gaussian_ssim():
    sr, hr = _pair(1, name="coffee")
    for y in (True, False):
        a = _basicsr_y(sr.astype(np.float64))[..., 0] if y else sr.astype(np.float64)
        b = _basicsr_y(hr.astype(np.float64))[..., 0] if y else hr.astype(np.float64)
        ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
                                    channel_axis=None if y else -1)
        assert abs(metrics.ssim(sr, hr, 0, y) - ref) <= 1e-4
        # the jit-able maps the SSIM losses build on give the same index (float32, valid window)
        lum, cs = metrics.ssim_maps(jnp.asarray(a[None, ..., None] if y else a[None]) / 255.0,
                                    jnp.asarray(b[None, ..., None] if y else b[None]) / 255.0, metrics.gaussian_1d())
        assert abs(float(jnp.mean(lum * cs)) - ref) <= 1e-4


def test_score_rounds_like_tensor2img():
    """evaluate.score (evaluation and validation) measures 8-bit images, as BasicSR's tensor2img makes them."""
    from jaxsr.evaluate import score

    hr = photo("astronaut", 40, 40, 100, 150)
    sr = np.clip(hr + 0.003, 0, 1)
    got = score({"m": sr}, hr, 0)["m"]
    ref = metrics.psnr(np.round(sr * 255).astype(np.uint8), np.round(hr * 255).astype(np.uint8), 0)
    assert got["psnr"] == ref and got["psnr"] != metrics.psnr(sr, hr, 0)


def test_average_is_per_image_then_over_images_on_unequal_images():
    """Two images of different sizes: the mean of their PSNRs, not the PSNR of their pooled pixels."""
    a = _pair(0, 48, 64)
    b = _pair(5, 96, 40, name="coffee")
    b = (np.clip(b[0].astype(int) + 9, 0, 255).astype(np.uint8), b[1])  # a much worse second image
    pa, pb = _basicsr_psnr(*a, 2, True), _basicsr_psnr(*b, 2, True)
    got = metrics.mean_over_images([metrics.psnr(*a, 2), metrics.psnr(*b, 2)])
    assert got == pytest.approx((pa + pb) / 2, abs=1e-9)
    pooled = np.concatenate([(_basicsr_y(x.astype(np.float64)) - _basicsr_y(y.astype(np.float64)))[2:-2, 2:-2].ravel() for x, y in (a, b)])
    assert abs(got - 10 * np.log10(255**2 / np.mean(pooled**2))) > 0.5  # the wrong way is measurably different
    assert metrics.mean_over_images([metrics.ssim(*a, 2), metrics.ssim(*b, 2)]) == pytest.approx(
        (_basicsr_ssim(*a, 2, True) + _basicsr_ssim(*b, 2, True)) / 2, abs=1e-10)


def test_identical_images():
    hr = photo("astronaut", 32, 32)
    assert metrics.psnr(hr, hr, 0) == float("inf")
    assert metrics.ssim(hr, hr, 0) == pytest.approx(1.0, abs=1e-12)
