"""SSIM and MS-SSIM losses with traiNNer-redux's definition (`traiNNer/losses/mssim_loss.py`).

Inputs are clamped to [0,1]; by default only the YIQ luma Y = .299R + .587G + .114B is compared (data
range 1). The window is MATLAB's fspecial('gaussian', 11, 1.5). Each level filters 'valid', or 'same' with
zero padding once the image is narrower than the window. The contrast-structure map goes through a ReLU
so that a product of powers stays real.
"""
import jax
import jax.numpy as jnp

from jaxsr.metrics import gaussian_1d, ssim_maps

MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
YIQ_Y = (0.299, 0.587, 0.114)


def _preprocess(x, y_channel):
    x = jnp.clip(x.astype(jnp.float32), 0.0, 1.0)
    return x @ jnp.asarray(YIQ_Y, jnp.float32)[:, None] if y_channel else x


def _level(a, b, g, include_luminance):
    """(ssim, cs) per image at one scale."""
    lum, cs = ssim_maps(a, b, g, same=a.shape[2] < len(g))
    cs = jax.nn.relu(cs)
    full = lum * cs if include_luminance else cs
    return full.mean(axis=(1, 2, 3)), cs.mean(axis=(1, 2, 3))


def _avg_pool2(x):
    """F.avg_pool2d(kernel 2, padding=(H%2, W%2)), zero padding counted in the mean."""
    _, h, w, _ = x.shape
    ph, pw = h % 2, w % 2
    x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    oh, ow = (h + 2 * ph) // 2, (w + 2 * pw) // 2
    x = x[:, : 2 * oh, : 2 * ow]
    return x.reshape(x.shape[0], oh, 2, ow, 2, x.shape[-1]).mean(axis=(2, 4))


def ssim_index(x, y, y_channel=True, include_luminance=True):
    """Single-scale SSIM per image (traiNNer-redux `ssim`), shape (N,)."""
    g = gaussian_1d()
    return _level(_preprocess(x, y_channel), _preprocess(y, y_channel), g, include_luminance)[0]


def ms_ssim_index(x, y, y_channel=True, include_luminance=False, weights=MS_WEIGHTS):
    """MS-SSIM per image: prod_{i<last} cs_i^w_i * ssim_last^w_last (traiNNer-redux `ms_ssim`, is_prod)."""
    g = gaussian_1d()
    a, b = _preprocess(x, y_channel), _preprocess(y, y_channel)
    out = 1.0
    for i, w in enumerate(weights):
        full, cs = _level(a, b, g, include_luminance)
        out = out * (full if i == len(weights) - 1 else cs) ** w
        a, b = _avg_pool2(a), _avg_pool2(b)
    return out


def ssim_loss(sr, gt, y_channel=True):
    """1 - mean SSIM (luminance included). traiNNer's SSIMLoss returns the similarity itself; a loss
    must be 0 on identical images, so we return its complement."""
    return 1.0 - jnp.mean(ssim_index(sr, gt, y_channel))


def ms_ssim_loss(sr, gt, y_channel=True, include_luminance=False):
    """traiNNer-redux MSSIMLoss: 1 - clamp(batch mean of MS-SSIM, 0, 1)."""
    return 1.0 - jnp.clip(jnp.mean(ms_ssim_index(sr, gt, y_channel, include_luminance)), 0.0, 1.0)
