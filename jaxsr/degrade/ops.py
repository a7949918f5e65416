"""Image operations of the degradation pipeline, with PyTorch's and MATLAB's numerics.

All take NHWC float32 batches. Several accept `valid=(h, w)`: the image is then the top-left h x w of a
larger zero-filled canvas, h and w may be traced values, and the result keeps that layout (see
pipeline.py for why). Resizes are dense interpolation matrices built on the device and applied with two
matmuls: one code path for every mode, for static and for traced sizes, exact torch index arithmetic.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr.metrics import gaussian_1d


HIGHEST = jax.lax.Precision.HIGHEST


def canvas_mask(shape_hw, valid):
    """(H, W, 1) float mask of the top-left valid region of a canvas."""
    h = jnp.arange(shape_hw[0])[:, None, None] < valid[0]
    w = jnp.arange(shape_hw[1])[None, :, None] < valid[1]
    return (h & w).astype(jnp.float32)


def reflect_index(i, n):
    """torch 'reflect' padding index (edge not repeated), folded periodically so any i stays in [0, n)."""
    period = jnp.maximum(2 * (n - 1), 1)
    i = jnp.mod(i, period)
    return jnp.where(i >= n, period - i, i)


def _reflect_pad(x, p, valid):
    if valid is None:
        return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    rows = reflect_index(jnp.arange(x.shape[1] + 2 * p) - p, valid[0])
    cols = reflect_index(jnp.arange(x.shape[2] + 2 * p) - p, valid[1])
    return jnp.take(jnp.take(x, rows, axis=1), cols, axis=2)


def _depthwise(x, k):
    """Valid cross-correlation of each image x[b] (all channels) with its own kernel k[b] (kh, kw)."""
    b, h, w, c = x.shape
    kh, kw = k.shape[1:]
    # Fold the batch into channels: one grouped conv with B*C groups, as torch does for filter2D.
    lhs = x.transpose(1, 2, 0, 3).reshape(1, h, w, b * c)
    rhs = jnp.repeat(k, c, axis=0).transpose(1, 2, 0)[:, :, None, :]
    out = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       feature_group_count=b * c, precision=HIGHEST)
    return out.reshape(h - kh + 1, w - kw + 1, b, c).transpose(2, 0, 1, 3)


def filter2d(x, kernel, valid=None):
    """BasicSR filter2D: reflect padding by k//2 and cross-correlation with a per-sample (B,k,k) or shared (k,k) kernel."""
    if kernel.ndim == 2:
        kernel = jnp.broadcast_to(kernel, (x.shape[0],) + kernel.shape)
    out = _depthwise(_reflect_pad(x, kernel.shape[-1] // 2, valid), kernel)
    return out if valid is None else out * canvas_mask(x.shape[1:3], valid)


def reflect_filter_matrix(n, taps):
    """(n, n) matrix of a 1-D cross-correlation with `taps` after reflect padding by len(taps)//2 (numpy)."""
    p = len(taps) // 2
    m = np.zeros((n, n))
    rows = np.repeat(np.arange(n), len(taps))
    cols = (np.arange(n)[:, None] + np.arange(len(taps)) - p).ravel()
    cols = np.abs(cols)
    cols = np.where(cols >= n, 2 * (n - 1) - cols, cols)
    np.add.at(m, (rows, cols), np.tile(taps, n))
    return m.astype(np.float32)


def filter2d_separable(x, taps):
    """filter2D with the shared kernel outer(taps, taps) and reflect padding, as two matmuls.

    Folding the padding into (H, H) and (W, W) matrices makes it two dense matmuls, which run near peak
    on accelerators and on CPU, unlike a long 1-D depthwise convolution.
    """
    h, w = x.shape[1:3]
    return apply_separable(x, reflect_filter_matrix(h, taps), reflect_filter_matrix(w, taps))


# ----------------------------------------------------------------------------------------------- resize


def _cubic_weights(t, a=-0.75):
    """torch's 4 bicubic tap weights for fractional offset t (Keys, A=-0.75)."""
    def near(s):
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s):
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return jnp.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def resize_matrix(mode, n_in, n_out, in_len, out_len, inv_scale=None):
    """(out_len, in_len) matrix M with resized = M @ signal, for torch F.interpolate(align_corners=False).

    n_in, n_out: the valid lengths (may be traced, <= in_len/out_len); rows >= n_out are zero and no
    column >= n_in is read. inv_scale: 1/scale_factor as float32 when torch was given a scale factor,
    None when it was given a size (torch then uses n_in/n_out).
    """
    n_in = jnp.asarray(n_in, jnp.int32)
    n_out = jnp.asarray(n_out, jnp.int32)
    if inv_scale is None:
        inv_scale = n_in.astype(jnp.float32) / n_out.astype(jnp.float32)
    inv_scale = jnp.asarray(inv_scale, jnp.float32)
    i = jnp.arange(out_len)
    j = jnp.arange(in_len)
    last = n_in - 1

    def taps(idx, w):  # scatter weights w (out, T) at column indices idx (out, T) into a dense matrix
        return jnp.sum((idx[..., None] == j) * w[..., None], axis=1)

    if mode == "area":  # adaptive_avg_pool: integer start/end per output pixel
        start = (i * n_in) // n_out
        end = ((i + 1) * n_in + n_out - 1) // n_out
        m = ((j >= start[:, None]) & (j < end[:, None])) / (end - start)[:, None].astype(jnp.float32)
    elif mode == "nearest":
        src = jnp.floor(i.astype(jnp.float32) * inv_scale).astype(jnp.int32)
        src = jnp.where(n_out == n_in, i, jnp.where(n_out == 2 * n_in, i // 2, jnp.minimum(src, last)))
        m = (src[:, None] == j).astype(jnp.float32)
    elif mode == "bilinear":
        src = jnp.maximum(inv_scale * (i + 0.5).astype(jnp.float32) - 0.5, 0.0)
        i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), last)
        lam = jnp.clip(src - i0, 0.0, 1.0)
        m = taps(jnp.stack([i0, jnp.minimum(i0 + 1, last)], -1), jnp.stack([1 - lam, lam], -1))
    elif mode == "bicubic":
        src = inv_scale * (i + 0.5).astype(jnp.float32) - 0.5
        i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), last)
        t = jnp.clip(src - i0, 0.0, 1.0)
        idx = jnp.clip(i0[:, None] + jnp.arange(-1, 3), 0, last)
        m = taps(idx, _cubic_weights(t))
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    return jnp.where((i < n_out)[:, None], m, 0.0).astype(jnp.float32)


def apply_separable(x, mh, mw):
    """Apply a row matrix (H', H) and a column matrix (W', W) to NHWC x."""
    y = jnp.einsum("oh,bhwc->bowc", mh, x, precision=HIGHEST)
    return jnp.einsum("pw,bowc->bopc", mw, y, precision=HIGHEST)


def resize(x, mode, scale_factor=None, size=None):
    """torch F.interpolate(x, scale_factor=s | size=(h, w), mode) for static shapes (align_corners=False, no antialias).

    With a scale factor the output is floor(in * s) and the scale itself maps coordinates, as torch does.
    """
    h, w = x.shape[1:3]
    if size is None:
        size = (math.floor(h * scale_factor), math.floor(w * scale_factor))
        inv = float(np.float32(1.0 / scale_factor))
    else:
        inv = None
    return apply_separable(x, _static_matrix(mode, h, size[0], h, size[0], inv),
                           _static_matrix(mode, w, size[1], w, size[1], inv))


# All arguments static: one small compile per size instead of many eager ops.
_static_matrix = jax.jit(resize_matrix, static_argnums=(0, 1, 2, 3, 4, 5))


# ----------------------------------------------------------------------------------------------- imresize


def _matlab_cubic(d):
    d = np.abs(d)
    return np.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1, np.where(d <= 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0))


def matlab_resize_matrix(n_in, scale, antialiasing=True):
    """(ceil(n_in*scale), n_in) float64 matrix of MATLAB imresize's bicubic contributions, symmetric boundary."""
    n_out = math.ceil(n_in * scale)
    aa = antialiasing and scale < 1
    width = 4.0 / scale if aa else 4.0
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)
    idx = np.floor(u - width / 2)[:, None] + np.arange(math.ceil(width) + 2)
    d = u[:, None] - idx
    w = scale * _matlab_cubic(d * scale) if aa else _matlab_cubic(d)
    w = w / w.sum(1, keepdims=True)
    # 1-based index k -> 0-based k-1, mirrored with the edge pixel repeated (MATLAB 'symmetric').
    j = np.mod(idx.astype(np.int64) - 1, 2 * n_in)
    j = np.where(j >= n_in, 2 * n_in - 1 - j, j)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), w.shape[1]), j.ravel()), w.ravel())
    return m


def imresize(x, scale, antialiasing=True):
    """MATLAB imresize(x, scale, 'bicubic') as BasicSR's clone: HWC or NHWC, numpy in -> numpy out, jax -> jax.

    Output size ceil(in * scale). Rows then columns, each a fixed weight matrix (float64 numpy for numpy
    input, so the data pipeline can use it on the host without a device).
    """
    h, w = x.shape[-3:-1]
    mh = matlab_resize_matrix(h, scale, antialiasing)
    mw = matlab_resize_matrix(w, scale, antialiasing)
    if isinstance(x, np.ndarray):
        y = np.einsum("oh,...hwc->...owc", mh, x.astype(np.float64))
        return np.einsum("pw,...owc->...opc", mw, y).astype(np.float32)
    y = jnp.einsum("oh,...hwc->...owc", mh.astype(np.float32), x, precision=HIGHEST)
    return jnp.einsum("pw,...owc->...opc", mw.astype(np.float32), y, precision=HIGHEST)


# ----------------------------------------------------------------------------------------------- noise


def rgb_to_gray(x):
    """torchvision rgb_to_grayscale weights (BasicSR's Poisson gray noise uses them), keepdims."""
    return 0.2989 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]


def _mask(x, valid):
    return x if valid is None else x * canvas_mask(x.shape[1:3], valid)


def gaussian_noise(key, x, sigma, gray, valid=None):
    """x + N(0, sigma^2), clipped to [0,1]; sigma (B,) in [0,1] units, gray (B,) in {0,1}.

    As Real-ESRGAN: colour noise is drawn per channel; gray noise is one HxW field shared by the
    whole batch, scaled by each sample's sigma.
    """
    b, h, w, c = x.shape
    s = sigma.reshape(b, 1, 1, 1)
    g = gray.reshape(b, 1, 1, 1).astype(jnp.float32)
    z = jax.random.normal(key, (b + 1, h, w, c))  # one generator call: b colour fields and the gray one
    color, mono = z[:b] * s, z[b:, :, :, :1] * s
    return _mask(jnp.clip(x + color * (1 - g) + mono * g, 0.0, 1.0), valid)


def _pow2_levels(qi, valid):
    """Per sample, the smallest power of two >= the number of distinct 8-bit values (within valid).

    Distinct values are counted with a 256-bit presence set (8 uint32 words) built by a bitwise-or
    reduction: elementwise work and one reduce, no sort or scatter.
    """
    word = qi >> 5
    bit = jnp.left_shift(jnp.uint32(1), (qi & 31).astype(jnp.uint32))
    inside = canvas_mask(qi.shape[1:3], valid or qi.shape[1:3])[None, ..., None] > 0
    bits = jnp.where((word[..., None] == jnp.arange(8)) & inside, bit[..., None], jnp.uint32(0))
    present = jax.lax.reduce(bits, np.uint32(0), jax.lax.bitwise_or, (1, 2, 3))
    count = jnp.sum(jax.lax.population_count(present), axis=-1).astype(jnp.int32)
    return jnp.left_shift(1, 32 - jax.lax.clz(count - 1)).astype(jnp.float32)


def poisson_noise(key, x, scale, gray, valid=None):
    """Real-ESRGAN Poisson noise: on the 8-bit-rounded image with 2^ceil(log2 #levels) photon levels per
    sample, colour or (gray (B,) = 1) on the gray image; x + noise * scale (B,), clipped to [0,1]."""
    b = x.shape[0]
    img = jnp.concatenate([x, rgb_to_gray(x)], axis=-1)  # colour channels and the gray one, one Poisson call
    qi = jnp.clip(jnp.round(img * 255.0), 0, 255).astype(jnp.int32)
    q = qi.astype(jnp.float32) / 255.0
    vals = jnp.stack([_pow2_levels(qi[..., :3], valid), _pow2_levels(qi[..., 3:], valid)], -1)
    vals = vals.reshape(b, 1, 1, 2)[..., jnp.array([0, 0, 0, 1])]
    noise = jax.random.poisson(key, q * vals).astype(jnp.float32) / vals - q
    g = gray.reshape(b, 1, 1, 1).astype(jnp.float32)
    noise = noise[..., :3] * (1 - g) + noise[..., 3:] * g
    return _mask(jnp.clip(x + noise * scale.reshape(b, 1, 1, 1), 0.0, 1.0), valid)


# ----------------------------------------------------------------------------------------------- misc


def usm_sharp(x, weight=0.5, threshold=10, radius=50):
    """BasicSR USMSharp: Gaussian blur of size radius (made odd, sigma from cv2's rule, 8.0 for 51), a soft
    mask where |x - blur| > threshold/255, and x + weight*(x - blur) blended in by that mask."""
    radius += 1 - radius % 2
    taps = gaussian_1d(radius, 0.3 * ((radius - 1) * 0.5 - 1) + 0.8)
    residual = x - filter2d_separable(x, taps)
    mask = (jnp.abs(residual) * 255 > threshold).astype(jnp.float32)
    soft = filter2d_separable(mask, taps)
    sharp = jnp.clip(x + weight * residual, 0.0, 1.0)
    return soft * sharp + (1 - soft) * x


def quantize(x, levels=256):
    """Round to `levels` evenly spaced values in [0,1] (256: 8 bits, torch.round half-to-even)."""
    n = levels - 1
    return jnp.clip(jnp.round(x * n), 0, n) / n
