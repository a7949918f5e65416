"""Colour-space conversions and colour losses: Oklab consistency (neosr `neosr/losses/consistency_loss.py`; Oklab
from B. Ottosson, "A perceptual color space for image processing", 2020), HSLuv, CbCr colour and L* luma
(traiNNer-redux `traiNNer/losses/`). Images are NHWC sRGB in [0,1], float32.

Branches that `jnp.where` discards still get differentiated, so every pow/cbrt gets an input that is
safe on both sides of the branch (the "double where"), or gradients turn into 0*inf = NaN.
"""
import jax.numpy as jnp

from jaxsr.losses.pixel import get_criterion, gaussian_blur

# Oklab (Ottosson): linear sRGB -> LMS, cube root, -> Lab.
OKLAB_M1 = ((0.4122214708, 0.5363325363, 0.0514459929),
            (0.2119034982, 0.6806995451, 0.1073969566),
            (0.0883024619, 0.2817188376, 0.6299787005))
OKLAB_M2 = ((0.2104542553, 0.7936177850, -0.0040720468),
            (1.9779984951, -2.4285922050, 0.4505937099),
            (0.0259040371, 0.7827717662, -0.8086757660))
# HSLuv reference constants (hsluv-python).
HSLUV_M = ((3.240969941904521, -1.537383177570093, -0.498610760293),
           (-0.96924363628087, 1.87596750150772, 0.041555057407175),
           (0.055630079696993, -0.20397695888897, 1.056971514242878))
HSLUV_M_INV = ((0.41239079926595, 0.35758433938387, 0.18048078840183),
               (0.21263900587151, 0.71516867876775, 0.072192315360733),
               (0.019330818715591, 0.11919477979462, 0.95053215224966))
REF_U, REF_V = 0.19783000664283, 0.46831999493879
KAPPA, EPSILON = 903.2962962, 0.0088564516
YCBCR = ((65.481, -37.797, 112.0), (128.553, -74.203, -93.786), (24.966, 112.0, -18.214))


def _mat(x, m):
    """Apply a 3x3 matrix given row-wise (out = m @ pixel) to the last axis."""
    return x @ jnp.asarray(m, x.dtype).T


def srgb_to_linear(x):
    return jnp.where(x <= 0.04045, x / 12.92, ((jnp.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4)


def _cbrt(x):
    """sign(x)|x|^(1/3) with a finite gradient everywhere (cbrt's slope at 0 is infinite)."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x), 1e-12) ** (1.0 / 3.0)


def rgb_to_oklab(rgb):
    """sRGB [0,1] -> Oklab (L, a, b)."""
    return _mat(_cbrt(_mat(srgb_to_linear(rgb), OKLAB_M1)), OKLAB_M2)


def rgb_to_luma(rgb):
    """CIE L*/100 of the linear luminance, clamped to [0,1], as neosr/traiNNer-redux compute it.
    Their dark branch is Y*(Y*24389/27) (a quirk we keep: it is their definition)."""
    y = srgb_to_linear(jnp.clip(rgb, 1e-12, 1.0)) @ jnp.asarray((0.2126, 0.7152, 0.0722), rgb.dtype)
    dark = y <= 216 / 24389
    lstar = jnp.where(dark, y * (y * 24389 / 27), jnp.where(dark, 1.0, y) ** (1.0 / 3.0) * 116 - 16)
    return jnp.clip(lstar / 100, 0.0, 1.0)


def _y_to_l(y):
    big = y > EPSILON
    return jnp.where(big, 116 * jnp.where(big, y, 1.0) ** (1.0 / 3.0) - 16, y * KAPPA)


def _max_chroma(l, h_rad):
    """Largest chroma inside sRGB for lightness l and hue h: the nearest of six gamut lines along the ray."""
    sub1 = (l + 16) ** 3 / 1560896
    sub2 = jnp.where(sub1 > EPSILON, sub1, l / KAPPA)
    sin, cos = jnp.sin(h_rad), jnp.cos(h_rad)
    lengths = []
    for m1, m2, m3 in HSLUV_M:
        for t in (0, 1):
            top1 = (284517 * m1 - 94839 * m3) * sub2
            top2 = (838422 * m3 + 769860 * m2 + 731718 * m1) * l * sub2 - 769860 * t * l
            bottom = _safe_denominator((632260 * m3 - 126452 * m2) * sub2 + 126452 * t)
            length = (top2 / bottom) / _safe_denominator(sin - (top1 / bottom) * cos)
            lengths.append(jnp.where(length >= 0, length, jnp.inf))
    return jnp.min(jnp.stack(lengths), axis=0)


def _safe_denominator(d, floor=1e-3):
    """traiNNer-redux's float32 guard: keep the sign, but |d| >= floor."""
    return jnp.where(d >= 0, 1.0, -1.0) * jnp.maximum(jnp.abs(d), floor)


def rgb_to_hsluv(rgb):
    """sRGB [0,1] -> HSLuv (H in degrees [0,360), S and L in [0,100]), with traiNNer-redux's float32 guards."""
    xyz = _mat(srgb_to_linear(jnp.clip(rgb, 1e-12, 1.0)), HSLUV_M_INV)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    l = _y_to_l(y)
    div = jnp.maximum(x + 15 * y + 3 * z, 1e-6)
    lit = l >= 1e-4
    u = jnp.where(lit, 13 * l * (4 * x / div - REF_U), 0.0)
    v = jnp.where(lit, 13 * l * (9 * y / div - REF_V), 0.0)
    u = jnp.where(u == 0, 1e-12, u)  # atan2 and sqrt have no gradient at the origin
    v = jnp.where(v == 0, 1e-12, v)
    c = jnp.sqrt(u**2 + v**2)
    h = jnp.degrees(jnp.arctan2(v, u))
    h = jnp.where(h < 0, h + 360, h)
    h = jnp.where(c < 0.028972067, 0.0, h)  # grey: hue undefined
    s = c / jnp.maximum(_max_chroma(l, jnp.radians(h)), 1e-2) * 100
    s = jnp.where((l > 99.99) | (l < 0.01), 0.0, s)
    return jnp.stack([h, jnp.clip(s, 0, 100), jnp.clip(l, 0, 100)], axis=-1)


def hsluv_loss(sr, gt, hue_weight=1 / 3, saturation_weight=1 / 3, lightness_weight=1 / 3, criterion="l1", blur_strength=0):
    """traiNNer-redux HSLuvLoss (no downscale): hue on the circle, saturation weighted by how mid-grey the
    lightness is, lightness by the criterion. Returns the three components; their sum is the loss."""
    if blur_strength:
        sr, gt = gaussian_blur(sr, 4 * blur_strength + 1, blur_strength), gaussian_blur(gt, 4 * blur_strength + 1, blur_strength)
    crit = get_criterion(criterion, reduce=False)
    hx, sx, lx = jnp.moveaxis(rgb_to_hsluv(sr) / jnp.asarray((360.0, 100.0, 100.0)), -1, 0)
    hy, sy, ly = jnp.moveaxis(rgb_to_hsluv(gt) / jnp.asarray((360.0, 100.0, 100.0)), -1, 0)
    eps = 0.1
    d = jnp.abs(hx - hy)
    hue = jnp.minimum(d, 1 - d) * 2
    hue = jnp.where((sx < eps) & (sy < eps), 0.0, hue)
    hue = jnp.where(((sx < eps) & (sy > eps)) | ((sx > eps) & (sy < eps)), jnp.maximum(sx, sy), hue)
    hue = jnp.where(((lx < eps) & (ly < eps)) | ((lx > 1 - eps) & (ly > 1 - eps)), 0.0, hue)
    weight = jnp.clip(jnp.minimum(lx, 1 - lx), 0, 0.5) + jnp.clip(jnp.minimum(ly, 1 - ly), 0, 0.5)
    return {
        "hue": jnp.mean(hue) * hue_weight,
        "saturation": jnp.mean(crit(sx, sy) * weight) * saturation_weight,
        "lightness": jnp.mean(crit(lx, ly)) * lightness_weight,
    }


def color_loss(sr, gt, criterion="l1", scale=4):
    """traiNNer-redux ColorLoss: criterion on the CbCr channels (BT.601, [0,1]) after scale x scale average pooling."""
    def cbcr(x):
        c = (x @ jnp.asarray(YCBCR, x.dtype)[:, 1:] + jnp.asarray((128.0, 128.0), x.dtype)) / 255.0
        n, h, w, _ = c.shape
        h, w = h // scale * scale, w // scale * scale
        return c[:, :h, :w].reshape(n, h // scale, scale, w // scale, scale, 2).mean(axis=(2, 4))

    return get_criterion(criterion)(cbcr(sr), cbcr(gt))


def luma_loss(sr, gt, criterion="l1"):
    """traiNNer-redux LumaLoss: criterion on L*/100."""
    return get_criterion(criterion)(rgb_to_luma(sr), rgb_to_luma(gt))


def _cosine_similarity(a, b, axis):
    """nn.CosineSimilarity(eps=1e-20)."""
    return jnp.sum(a * b, axis) / jnp.sqrt(jnp.maximum(jnp.sum(a * a, axis) * jnp.sum(b * b, axis), 1e-40))


def consistency_loss(sr, gt, criterion="chc", blur=True, cosim=True, saturation=1.0, brightness=1.0):
    """neosr consistency_loss: L* luma of the (Gaussian 21/3 blurred) images and Oklab chroma (a, b) + 0.5.

    The cosine-similarity term is added only once it is below 1e-3, as neosr does, to avoid early
    instability. neosr takes the luma cosine along the image height (torch dim 1 of (B,H,W)); so do we.
    """
    crit = get_criterion(criterion)
    sr, gt = jnp.clip(sr, 1 / 255, 1.0), jnp.clip(gt, 1 / 255, 1.0)
    if blur:
        luma_x = rgb_to_luma(jnp.clip(gaussian_blur(sr, 21, 3.0), 0, 1))
        luma_y = rgb_to_luma(jnp.clip(gaussian_blur(gt, 21, 3.0), 0, 1)) * brightness
    else:
        luma_x, luma_y = rgb_to_luma(sr), rgb_to_luma(gt) * brightness
    chroma_x = jnp.clip(rgb_to_oklab(sr)[..., 1:] + 0.5, 0, 1)
    chroma_y = jnp.clip(rgb_to_oklab(gt)[..., 1:] * saturation + 0.5, 0, 1)
    loss = crit(luma_x, luma_y) + crit(chroma_x, chroma_y)
    if cosim:
        cos = 0.5 * (1 - _cosine_similarity(chroma_x, chroma_y, -1).mean()) + 0.5 * (1 - _cosine_similarity(luma_x, luma_y, 1).mean())
        loss = loss + jnp.where(cos < 1e-3, cos, 0.0)
    return loss
