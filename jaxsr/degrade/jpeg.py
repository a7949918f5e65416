"""JPEG compression simulated on the device, with a per-sample float quality (BasicSR `basicsr/utils/diffjpeg.py`).

Two styles share one code path (YCbCr, 4:2:0 chroma, 8x8 DCT, quantisation by the standard tables):
- 'diffjpeg' reproduces BasicSR's DiffJPEG, which Real-ESRGAN trains with: float tables scaled by the
  quality factor (neither rounded nor clipped), the luminance table transposed as DiffJPEG has it,
  zero padding to 16, chroma averaged 2x2 and repeated back, no 8-bit rounding between stages.
- 'libjpeg' follows what libjpeg (Pillow) does, so the output is close to a real JPEG: integer tables
  clipped to [1, 255] in their natural orientation, edge-replicated padding, 8-bit samples after colour
  conversion, libjpeg's biased 2x2 chroma averaging and its "fancy" triangular chroma upsampling.

`differentiable=True` replaces every rounding by a straight-through estimator (forward unchanged,
gradient of the identity), so the simulation can sit inside a loss.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

# ITU T.81 Annex K tables in natural order: row = vertical frequency.
LUMA_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32)
CHROMA_TABLE = np.array([
    [17, 18, 24, 47, 99, 99, 99, 99], [18, 21, 26, 66, 99, 99, 99, 99], [24, 26, 56, 99, 99, 99, 99, 99],
    [47, 66, 99, 99, 99, 99, 99, 99]] + [[99] * 8] * 4, np.float32)


def _dct_matrix():
    """C[u, x] = 0.5 a(u) cos((2x+1) u pi / 16), a(0) = 1/sqrt(2): the 2-D DCT of a block P is C P C^T."""
    u, x = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    alpha = np.where(u == 0, 1 / math.sqrt(2), 1.0)
    return (0.5 * alpha * np.cos((2 * x + 1) * u * math.pi / 16)).astype(np.float32)


DCT = _dct_matrix()
HIGHEST = jax.lax.Precision.HIGHEST


def _ste(fn):
    def f(x):
        return x + jax.lax.stop_gradient(fn(x) - x)
    return f


def quality_scale(quality):
    """The IJG quality scaling in percent: 5000/q below 50, else 200 - 2q."""
    return jnp.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality)


def _tables(quality, style, floor):
    s = quality_scale(quality)[:, None, None]
    if style == "diffjpeg":
        return LUMA_TABLE.T * s / 100, CHROMA_TABLE * s / 100
    luma = jnp.clip(floor((LUMA_TABLE * s + 50) / 100), 1, 255)
    return luma, jnp.clip(floor((CHROMA_TABLE * s + 50) / 100), 1, 255)


def _code_plane(p, table, rnd, libjpeg):
    """DCT, quantise, dequantise and inverse DCT every 8x8 block of planes p (B, H, W) with tables (B, 8, 8)."""
    b, h, w = p.shape
    blocks = p.reshape(b, h // 8, 8, w // 8, 8) - 128.0
    d = jnp.einsum("ux,bixjy,vy->biujv", DCT, blocks, DCT, precision=HIGHEST)
    t = table[:, None, :, None, :]
    d = rnd(d / t) * t
    out = jnp.einsum("ux,biujv,vy->bixjy", DCT, d, DCT, precision=HIGHEST).reshape(b, h, w) + 128.0
    return jnp.clip(rnd(out), 0, 255) if libjpeg else out


def _fancy_upsample(c, floor):
    """libjpeg's h2v2 fancy upsampling: a 3/4-1/4 triangle filter in each direction, with its rounding biases."""
    def up(x, axis, bias_even, bias_odd, shift):
        n = x.shape[axis]
        prev = jnp.take(x, jnp.maximum(jnp.arange(n) - 1, 0), axis=axis)
        nxt = jnp.take(x, jnp.minimum(jnp.arange(n) + 1, n - 1), axis=axis)
        even, odd = 3 * x + prev + bias_even, 3 * x + nxt + bias_odd
        out = jnp.stack([even, odd], axis=axis + 1)
        shape = list(x.shape)
        shape[axis] *= 2
        return floor(out.reshape(shape) / shift) if shift > 1 else out.reshape(shape)

    colsum = up(c, 1, 0, 0, 1)  # vertical: 3*nearer + further, kept unscaled
    return up(colsum, 2, 8, 7, 16)


def jpeg(x, quality, style="diffjpeg", differentiable=False):
    """JPEG-compress and decode NHWC [0,1] images x with per-sample quality (B,) floats; returns [0,1]."""
    rnd = _ste(jnp.round) if differentiable else jnp.round
    floor = _ste(jnp.floor) if differentiable else jnp.floor
    libjpeg = style == "libjpeg"
    if style not in ("diffjpeg", "libjpeg"):
        raise ValueError(f"unknown JPEG style {style!r}")
    b, h, w, _ = x.shape
    ph, pw = -h % 16, -w % 16
    img = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge" if libjpeg else "constant") * 255.0
    r, g, bl = img[..., 0], img[..., 1], img[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128.0
    if libjpeg:
        y, cb, cr = (jnp.clip(rnd(v), 0, 255) for v in (y, cb, cr))

    def down(c):
        s = c.reshape(b, c.shape[1] // 2, 2, c.shape[2] // 2, 2).sum((2, 4))
        if not libjpeg:
            return s / 4
        bias = 1.0 + (jnp.arange(s.shape[2]) % 2)  # libjpeg alternates +1, +2 across columns
        return floor((s + bias) / 4)

    luma_t, chroma_t = _tables(jnp.asarray(quality, jnp.float32).reshape(b), style, floor)
    y = _code_plane(y, luma_t, rnd, libjpeg)
    cb, cr = (_code_plane(down(c), chroma_t, rnd, libjpeg) for c in (cb, cr))
    if libjpeg:
        cb, cr = _fancy_upsample(cb, floor), _fancy_upsample(cr, floor)
    else:
        cb, cr = (jnp.repeat(jnp.repeat(c, 2, axis=1), 2, axis=2) for c in (cb, cr))
    cb, cr = cb - 128.0, cr - 128.0
    rgb = jnp.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    rgb = jnp.clip(rnd(rgb) if libjpeg else rgb, 0, 255) / 255.0
    return rgb[:, :h, :w]
