"""SAFMN (Spatially-Adaptive Feature Modulation Network, Sun et al., ICCV 2023), mirroring spandrel's module
(`architectures/SAFMN/__arch/safmn.py`, which traiNNer-redux trains as `safmn` and `safmn_l`) attribute for attribute.

to_feat (3x3) -> `n_blocks` AttBlocks with a long skip -> to_img (3x3 conv to 3 * scale^2, PixelShuffle). An AttBlock
is x + SAFM(LN(x)), then x + CCM(LN(x)). SAFM splits the channels into four: the first goes through a depthwise 3x3,
the i-th (i = 1..3) is adaptive-max-pooled to (H // 2^i, W // 2^i), depthwise 3x3'd and nearest-upsampled back; a 1x1
`aggr` mixes them, and GELU of that modulates the input. CCM is a 3x3 conv to `ffn_scale` x the width, GELU, 1x1 back.

Numerics that follow torch: the reference's own channel LayerNorm, eps 1e-6 with the two-pass variance; torch's
adaptive max pooling windows [floor(i H / h), ceil((i + 1) H / h)) and its nearest index floor(j * (h / H)) in float32,
so sides that are no multiple of 8 compute as the PyTorch module does (jaxsr.upscale and exported graphs pad to 8, as
spandrel asks; then windows are plain 2^i blocks anchored at the origin, and tiles on that grid are exact).
"""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.common import Act, PixelShuffle, Sequential, conv, spec_kwargs

# A spec's fields and their defaults: SAFMN's paper model (traiNNer-redux's `safmn`; `safmn_l` is dim 128, 16 blocks).
# The scale is the run's.
DEFAULTS = dict(dim=36, n_blocks=8, ffn_scale=2.0)
N_LEVELS = 4


def layer_norm(dim, *, rngs, dtype):
    """The reference's channels-first LayerNorm: eps 1e-6 (not nn.LayerNorm's 1e-5), the biased two-pass variance."""
    return nnx.LayerNorm(dim, epsilon=1e-6, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def _windows(size, out):
    """torch's adaptive pooling windows along one axis: (index table (out, longest window), clipped to each window's
    last element, which leaves a max unchanged)."""
    i = np.arange(out)
    start, end = i * size // out, -(-(i + 1) * size // out)
    k = int((end - start).max())
    return np.minimum(start[:, None] + np.arange(k)[None], end[:, None] - 1)


def adaptive_max_pool(x, f):
    """F.adaptive_max_pool2d(x, (H // f, W // f)) on NHWC: f x f blocks where f divides both sides, torch's overlapping
    windows otherwise."""
    n, h, w, c = x.shape
    oh, ow = h // f, w // f
    if h % f == 0 and w % f == 0:
        return x.reshape(n, oh, f, ow, f, c).max(axis=(2, 4))
    rows, cols = _windows(h, oh), _windows(w, ow)
    x = jnp.take(x, rows.reshape(-1), axis=1).reshape(n, *rows.shape, w, c).max(axis=2)
    return jnp.take(x, cols.reshape(-1), axis=2).reshape(n, oh, *cols.shape, c).max(axis=3)


def _nearest_index(out, size):
    """torch's 'nearest' source index for an output of `out` from `size`: floor(j * float32(size / out)), clamped."""
    scale = np.float32(size) / np.float32(out)
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * scale).astype(np.int64), size - 1)


def upsample_nearest(x, h, w, f):
    """F.interpolate(x, size=(h, w), mode='nearest') on NHWC, back from `adaptive_max_pool(., f)`: each pixel repeated
    f times where f divides both sides (torch's float32 index is exact for powers of 2), torch's index otherwise."""
    if h % f == 0 and w % f == 0:
        return jnp.repeat(jnp.repeat(x, f, axis=1), f, axis=2)
    return jnp.take(jnp.take(x, _nearest_index(h, x.shape[1]), axis=1), _nearest_index(w, x.shape[2]), axis=2)


class SAFM(nnx.Module):
    def __init__(self, dim, *, rngs, dtype):
        chunk = dim // N_LEVELS
        self.mfr = nnx.List([conv(chunk, chunk, 3, groups=chunk, rngs=rngs, dtype=dtype) for _ in range(N_LEVELS)])
        self.aggr = conv(dim, dim, 1, padding=0, rngs=rngs, dtype=dtype)
        self.act = Act("gelu")

    def __call__(self, x):
        h, w = x.shape[1:3]
        if h < 2 ** (N_LEVELS - 1) or w < 2 ** (N_LEVELS - 1):  # not min(): symbolic sides compare one at a time
            raise ValueError(f"SAFMN needs sides of at least {2 ** (N_LEVELS - 1)} px (it pools by 8), got {h}x{w}")
        out = []
        for i, xc in enumerate(jnp.split(x, N_LEVELS, axis=-1)):
            if i == 0:
                out.append(self.mfr[0](xc))
            else:
                out.append(upsample_nearest(self.mfr[i](adaptive_max_pool(xc, 2**i)), h, w, 2**i))
        return self.act(self.aggr(jnp.concatenate(out, axis=-1))) * x


class CCM(nnx.Module):
    def __init__(self, dim, growth_rate, *, rngs, dtype):
        hidden = int(dim * growth_rate)
        self.ccm = Sequential([conv(dim, hidden, 3, rngs=rngs, dtype=dtype), Act("gelu"),
                               conv(hidden, dim, 1, padding=0, rngs=rngs, dtype=dtype)])

    def __call__(self, x):
        return self.ccm(x)


class AttBlock(nnx.Module):
    def __init__(self, dim, ffn_scale, *, rngs, dtype):
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.safm = SAFM(dim, rngs=rngs, dtype=dtype)
        self.ccm = CCM(dim, ffn_scale, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


class SAFMN(nnx.Module):
    def __init__(self, dim=36, n_blocks=8, ffn_scale=2.0, scale=4, *, rngs=None, dtype=jnp.float32):
        if scale < 1:
            raise ValueError(f"SAFMN needs scale >= 1, got {scale}")
        if dim % N_LEVELS:
            raise ValueError(f"SAFMN splits its {dim} channels into {N_LEVELS} equal parts: dim must be a multiple of {N_LEVELS}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.out_ch, self.dtype = scale, 3, 3, dtype  # 3 channels, fixed in the reference
        # pooled by 2, 4 and 8 from the origin: callers pad to 8 (spandrel's size requirement) and tiles start on it
        self.size_multiple = self.tile_multiple = 2 ** (N_LEVELS - 1)
        self.to_feat = conv(3, dim, 3, rngs=rngs, dtype=dtype)
        self.feats = Sequential([AttBlock(dim, ffn_scale, rngs=rngs, dtype=dtype) for _ in range(n_blocks)])
        self.to_img = Sequential([conv(dim, 3 * scale * scale, 3, rngs=rngs, dtype=dtype), PixelShuffle(scale)])

    def __call__(self, x):
        """x: (B, H, W, 3) float in [0, 1], H, W >= 8 -> (B, scale*H, scale*W, 3) float32."""
        x = self.to_feat(x.astype(self.dtype))
        x = self.feats(x) + x
        return self.to_img(x).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "SAFMN")
    return SAFMN(int(full["dim"]), int(full["n_blocks"]), float(full["ffn_scale"]), int(full["scale"]), rngs=rngs,
                 dtype=dtype)
