"""PSNR and SSIM exactly as BasicSR defines them (`basicsr/metrics/psnr_ssim.py`, `metric_util.py`).

`psnr` and `ssim` measure one HWC RGB image in float64, BasicSR-exact; `jaxsr.evaluate.score` (evaluation and
the trainer's validation) feeds them 8-bit images. They take uint8 [0,255] or float [0,1] images (floats are
scaled by 255, so both give BasicSR's 0-255 numbers). `y_channel=True` measures the BT.601 luma
Y = (65.481 R + 128.553 G + 24.966 B + 16) on [0,255]; `crop_border` px are dropped on each side first
(usually the scale).

Averaging is per image, then over images (`mean_over_images`), as BasicSR does: never pool pixels of
different images. `gaussian_filter` and `ssim_maps` are the jit-able SSIM pieces the SSIM losses build on.
"""
import jax
import jax.numpy as jnp
import numpy as np

Y_COEFFS = (65.481, 128.553, 24.966)  # RGB weights for Y on [0,255] output from [0,1] input, plus 16


def gaussian_1d(size=11, sigma=1.5):
    """Normalised 1-D Gaussian taps (float64), as cv2.getGaussianKernel(size, sigma); BasicSR's SSIM window is the
    outer product of the 11/1.5 taps, and MATLAB's fspecial('gaussian', 11, 1.5) equals it."""
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


# ---------------------------------------------------------------- numpy, BasicSR-exact


def _to_255(img):
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    return img.astype(np.float64) * 255.0


def _prepare(img, crop_border, y_channel):
    """BasicSR's order: crop, then Y (via float32 /255 as `to_y_channel` does), then float64."""
    img = _to_255(img)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        x = (img.astype(np.float32) / 255.0).astype(np.float64)
        img = (x @ np.array(Y_COEFFS) + 16.0)[..., None]
    return img.astype(np.float64)


def psnr(sr, hr, crop_border=0, y_channel=True):
    """BasicSR `calculate_psnr` on HWC RGB images; inf for identical images."""
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _valid_filter_np(x, g):
    """2D 'valid' correlation with the separable window outer(g, g)."""
    k = len(g)
    x = np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=1) @ g


def _ssim_channel_np(a, b):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = gaussian_1d()
    mu1, mu2 = _valid_filter_np(a, g), _valid_filter_np(b, g)
    s11 = _valid_filter_np(a * a, g) - mu1**2
    s22 = _valid_filter_np(b * b, g) - mu2**2
    s12 = _valid_filter_np(a * b, g) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return m.mean()


def ssim(sr, hr, crop_border=0, y_channel=True):
    """BasicSR `calculate_ssim`: Gaussian 11/1.5 window, valid region, mean over channels."""
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    return float(np.mean([_ssim_channel_np(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


def mean_over_images(values):
    """Average of per-image values (a list of scalars or of per-image arrays from several batches)."""
    flat = np.concatenate([np.atleast_1d(np.asarray(v, np.float64)) for v in values])
    return float(flat.mean())


# ---------------------------------------------------------------- jax, for the SSIM losses


def gaussian_filter(x, g, same=False):
    """Depthwise separable filter of NHWC `x` with 1D taps `g`: 'valid', or zero-padded 'same'."""
    k, c = len(g), x.shape[-1]
    g = jnp.asarray(g, jnp.float32)
    pad = ((k - 1) // 2, k // 2) if same else (0, 0)
    for shape, padding in (((k, 1, 1, c), (pad, (0, 0))), ((1, k, 1, c), ((0, 0), pad))):
        x = jax.lax.conv_general_dilated(
            x, jnp.broadcast_to(g.reshape(shape[:2] + (1, 1)), shape), (1, 1), padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
            precision=jax.lax.Precision.HIGHEST,
        )
    return x


def ssim_maps(a, b, g, c1=0.01**2, c2=0.03**2, same=False):
    """Luminance and contrast-structure maps of SSIM for [0,1] NHWC inputs.

    With 'valid' filtering, moments are taken around each image's mean, which changes nothing
    mathematically and avoids float32 cancellation in E[x^2] - E[x]^2 (zero padding forbids the shift).
    """
    shift = 0.0
    if not same:
        shift = jax.lax.stop_gradient(0.5 * (a.mean(axis=(1, 2, 3), keepdims=True) + b.mean(axis=(1, 2, 3), keepdims=True)))
    a0, b0 = a - shift, b - shift
    m1, m2 = gaussian_filter(a0, g, same), gaussian_filter(b0, g, same)
    s11 = gaussian_filter(a0 * a0, g, same) - m1 * m1
    s22 = gaussian_filter(b0 * b0, g, same) - m2 * m2
    s12 = gaussian_filter(a0 * b0, g, same) - m1 * m2
    mu1, mu2 = m1 + shift, m2 + shift
    lum = (2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1)
    cs = (2 * s12 + c2) / (s11 + s22 + c2)
    return lum, cs
