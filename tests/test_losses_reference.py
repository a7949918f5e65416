"""SSIM-family and colour losses against independent implementations: pytorch-msssim, the hsluv package,
Oklab's published values, torchvision's GaussianBlur definition."""
import importlib

import hsluv
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import photo
from jaxsr import metrics
from jaxsr.losses import color, ssim

pms = importlib.import_module("pytorch_msssim.ssim")
ms_ssim_index = jax.jit(ssim.ms_ssim_index, static_argnames=("y_channel", "include_luminance"))


def _y_nchw(x):
    """YIQ luma of an NHWC batch as a (N,1,H,W) float64 torch tensor (same definition traiNNer uses)."""
    y = np.asarray(x, np.float64) @ np.array([0.299, 0.587, 0.114])
    return torch.from_numpy(y[:, None])


def _pairs(h, w, noise=0.03):
    hr = np.stack([photo("astronaut", h, w, 40, 60), photo("coffee", h, w, 30, 100)])
    rng = np.random.default_rng(0)
    sr = np.clip(hr + rng.normal(0, noise, hr.shape), 0, 1).astype(np.float32)
    return sr, hr


@pytest.mark.parametrize("h,w", [(176, 176), (181, 170)])
def test_ms_ssim_matches_pytorch_msssim(h, w):
    sr, hr = _pairs(h, w)
    # standard MS-SSIM (luminance at the last level): pytorch-msssim's ms_ssim with the same window and K
    ref = pms.ms_ssim(_y_nchw(sr), _y_nchw(hr), data_range=1.0, size_average=False, win_size=11, win_sigma=1.5).numpy()
    ours = np.asarray(ms_ssim_index(jnp.asarray(sr), jnp.asarray(hr), include_luminance=True))
    assert np.abs(ours - ref).max() <= 1e-4, (ours, ref)
    # traiNNer-redux's default (no luminance term): prod over all five levels of relu(cs)^w, from pytorch-msssim's _ssim
    x, y = _y_nchw(sr), _y_nchw(hr)
    win = pms._fspecial_gauss_1d(11, 1.5).repeat(1, 1, 1, 1).to(torch.float64)  # (1,1,1,11) for one channel
    ms = torch.ones(2, dtype=torch.float64)
    for wgt in ssim.MS_WEIGHTS:
        _, cs = pms._ssim(x, y, data_range=1.0, win=win, size_average=False)
        ms = ms * torch.relu(cs[:, 0]) ** wgt
        pad = [s % 2 for s in x.shape[2:]]
        x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    ours = np.asarray(ms_ssim_index(jnp.asarray(sr), jnp.asarray(hr)))
    assert np.abs(ours - ms.numpy()).max() <= 1e-4
    loss = float(jax.jit(ssim.ms_ssim_loss)(jnp.asarray(sr), jnp.asarray(hr)))
    assert loss == pytest.approx(1 - ms.numpy().mean(), abs=1e-4) and loss > 1e-3


def test_ssim_index_matches_pytorch_msssim_ssim():
    sr, hr = _pairs(48, 56, 0.05)
    ref = pms.ssim(_y_nchw(sr), _y_nchw(hr), data_range=1.0, size_average=False, win_size=11, win_sigma=1.5).numpy()
    ours = np.asarray(ssim.ssim_index(jnp.asarray(sr), jnp.asarray(hr)))
    assert np.abs(ours - ref).max() <= 1e-4


def test_ssim_window_is_matlabs_fspecial_and_cv2s():
    """The one Gaussian window (metrics.gaussian_1d) equals MATLAB's fspecial('gaussian', 11, 1.5) and
    cv2.getGaussianKernel(11, 1.5), which BasicSR's SSIM uses."""
    import cv2

    g = metrics.gaussian_1d()
    np.testing.assert_allclose(g, cv2.getGaussianKernel(11, 1.5)[:, 0], atol=1e-15)
    m = np.exp(-(np.arange(-5, 6)[:, None] ** 2 + np.arange(-5, 6)[None] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(np.outer(g, g), m / m.sum(), atol=1e-15)


def test_hsluv_matches_the_hsluv_package():
    rng = np.random.default_rng(0)
    rgb = rng.random((3000, 3)).astype(np.float32)
    rgb[:50] = rgb[:50, :1]  # greys: hue undefined, saturation 0
    rgb[50:60] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0], [0.5, 0.2, 0.9], [0.01, 0.0, 0.02]]
    ours = np.asarray(color.rgb_to_hsluv(jnp.asarray(rgb)), np.float64)
    ref = np.array([hsluv.rgb_to_hsluv(tuple(float(v) for v in c)) for c in rgb])
    assert np.abs(ours[:, 2] - ref[:, 2]).max() <= 1e-4  # L in [0,100]
    assert np.abs(ours[:, 1] - ref[:, 1]).max() <= 2e-3  # S in [0,100]; float32 greys reach ~1e-3
    chromatic = ref[:, 1] > 1.0
    dh = np.abs((ours[:, 0] - ref[:, 0] + 180) % 360 - 180)
    assert chromatic.sum() > 2900 and dh[chromatic].max() <= 2e-3  # degrees


def test_oklab_matches_published_values():
    """Ottosson's sRGB primaries in Oklab (as in CSS Color 4), and his published inverse recovers the input."""
    published = {(1, 0, 0): (0.627955, 0.224863, 0.125846), (0, 1, 0): (0.866440, -0.233888, 0.179498),
                 (0, 0, 1): (0.452014, -0.032457, -0.311528), (1, 1, 1): (1.0, 0.0, 0.0)}
    for rgb, lab in published.items():
        np.testing.assert_allclose(np.asarray(color.rgb_to_oklab(jnp.asarray([rgb], jnp.float32)))[0], lab, atol=2e-5)
    rgb = np.random.default_rng(1).random((500, 3))
    lab = np.asarray(color.rgb_to_oklab(jnp.asarray(rgb, jnp.float32)), np.float64)
    L, a, b = lab.T
    lms = np.stack([L + 0.3963377774 * a + 0.2158037573 * b, L - 0.1055613458 * a - 0.0638541728 * b,
                    L - 0.0894841775 * a - 1.2914855480 * b]) ** 3
    lin = np.array([[4.0767416621, -3.3077115913, 0.2309699292], [-1.2684380046, 2.6097574011, -0.3413193965],
                    [-0.0041960863, -0.7034186147, 1.7076147010]]) @ lms
    srgb_lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(lin.T, srgb_lin, atol=1e-5)


def test_gaussian_blur_is_torchvisions_definition():
    """torchvision GaussianBlur(21, 3): 1D taps exp(-x^2/2s^2) on linspace(-10,10,21), normalised, reflect pad."""
    from jaxsr.losses.pixel import gaussian_blur

    x = photo("astronaut", 40, 48, 100, 150)[None]
    t = np.linspace(-10, 10, 21)
    k = np.exp(-0.5 * (t / 3.0) ** 2)
    k = torch.tensor(k / k.sum(), dtype=torch.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    xt = F.pad(xt, (10, 10, 10, 10), mode="reflect")
    ref = F.conv2d(xt, (k[:, None] * k[None, :]).expand(3, 1, 21, 21), groups=3).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(gaussian_blur(jnp.asarray(x), 21, 3.0)), ref, atol=1e-6)
