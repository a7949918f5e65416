"""What the window-attention transformers (DAT, SwinIR, HAT) share, with PyTorch's numerics.

- torch-numerics layers: Linear with timm's trunc_normal(0.02) init, LayerNorm eps 1e-5, timm's DropPath, the
  Swin/HAT `Mlp`, `PatchEmbed` and absolute position embedding, the 1conv/3conv residual convolution, and remat per
  block (`run_block`);
- windows: partition/merge in row-major window order (Swin's `window_partition`/`window_reverse`), the
  relative-position index of a window, and the shifted-window masks of Swin (arXiv 2103.14030, Sec. 3.2):
  a token may only attend to tokens of the same region of the rolled map. The masks are a pure function of
  the (padded) feature size, so they are built at trace time for whatever size is traced
  (`trace_shift_mask`, from a small table of region ids) instead of being stored in the model; `shift_mask`
  gives the numpy arrays the references register as buffers, for exports;
- `window_attention`: softmax(q k^T * scale + bias [+ mask]) v per window and head, through explicit einsums
  (XLA) or `jax.nn.dot_product_attention` (cuDNN's fused kernel on GPU) with the bias fused, never tiled over
  the batch. Queries and keys may have different lengths (HAT's overlapping cross-attention).

Tokens stay (B, H, W, C) throughout, the memory order of the references' (B, H*W, C).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.common import Act, Buffer, LeakyReLU, Sequential, conv, precision, trunc_normal_002


def linear(din, dout, *, rngs, dtype, bias=True):
    """nn.Linear with the transformers' init (trunc_normal std 0.02, bias 0)."""
    return nnx.Linear(din, dout, use_bias=bias, kernel_init=trunc_normal_002,
                      bias_init=nnx.initializers.zeros_init(), dtype=dtype, param_dtype=jnp.float32,
                      precision=precision(dtype), rngs=rngs)


def layer_norm(dim, *, rngs, dtype):
    return nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def drop_path(rate, rngs):
    """timm DropPath on (B, H, W, C): one Bernoulli(1-rate) per sample, kept samples scaled by 1/(1-rate).
    Off in eval mode (the default); `model.train()` turns it on, drawing from the `dropout` RNG stream."""
    return nnx.Dropout(rate, broadcast_dims=(1, 2, 3), deterministic=True, rngs=rngs)


class Mlp(nnx.Module):
    """Swin's feed-forward: fc1 -> GELU -> fc2 (its dropouts are 0 in every SR model)."""

    def __init__(self, dim, hidden, *, rngs, dtype=jnp.float32):
        self.fc1 = linear(dim, hidden, rngs=rngs, dtype=dtype)
        self.act = Act("gelu")
        self.fc2 = linear(hidden, dim, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed(nnx.Module):
    """Swin's PatchEmbed at patch size 1, as SwinIR and HAT use it: a reshape in the reference (ours is the identity on
    (B, H, W, C)) and, with patch_norm, a LayerNorm."""

    def __init__(self, dim, patch_norm, *, rngs, dtype):
        if patch_norm:
            self.norm = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.patch_norm = patch_norm

    def __call__(self, x):
        return self.norm(x) if self.patch_norm else x


def add_absolute_pos_embed(x, table, img_size):
    """x (B, H, W, C) plus Swin's learned absolute position embedding (`ape`, a (1, img_size**2, C) table), which
    fits an img_size x img_size map only."""
    B, H, W, C = x.shape
    if (H, W) != (img_size, img_size):
        raise ValueError(f"ape=True: the (padded) feature map must be img_size x img_size ({img_size}), got {H}x{W}")
    return x + table.reshape(1, H, W, C).astype(x.dtype)


def resi_conv(dim, kind, *, rngs, dtype):
    """The convolution closing a residual group and the body: '1conv', '3conv' (dim/4 bottleneck, LeakyReLU 0.2)
    or HAT's 'identity'."""
    if kind == "1conv":
        return conv(dim, dim, 3, rngs=rngs, dtype=dtype)
    if kind == "3conv":
        return Sequential([conv(dim, dim // 4, 3, rngs=rngs, dtype=dtype), LeakyReLU(0.2),
                           conv(dim // 4, dim // 4, 1, rngs=rngs, dtype=dtype), LeakyReLU(0.2),
                           conv(dim // 4, dim, 3, rngs=rngs, dtype=dtype)])
    if kind == "identity":
        return Act("identity")
    raise ValueError(f"unknown resi_connection {kind!r} (1conv, 3conv, identity)")


def _call(block, *args):
    return block(*args)


def run_block(block, *args, remat=False):
    """block(*args), recomputed in the backward pass instead of storing its activations when `remat`."""
    return nnx.remat(_call)(block, *args) if remat else block(*args)


# --------------------------------------------------------------------------------------------------------------
# windows, relative positions, shift masks


def to_windows(t, wh, ww):
    """(..., H, W, c) -> (..., nW, wh*ww, c) with windows in row-major order, tokens row-major inside."""
    *lead, H, W, c = t.shape
    t = t.reshape(*lead, H // wh, wh, W // ww, ww, c)
    n = len(lead)
    t = jnp.moveaxis(t, n + 2, n + 1)  # (..., H/wh, W/ww, wh, ww, c)
    return t.reshape(*lead, (H // wh) * (W // ww), wh * ww, c)


def from_windows(t, wh, ww, H, W):
    """(B, nW, wh*ww, c) -> (B, H, W, c)."""
    B, _, _, c = t.shape
    t = t.reshape(B, H // wh, W // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(B, H, W, c)


def relative_position_index(wh, ww) -> np.ndarray:
    """(N, N) index of (dy, dx) = token_i - token_j into a (2wh-1)*(2ww-1) table (Swin's buffer), int32."""
    cy, cx = (a.ravel() for a in np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij"))
    rel = (cy[:, None] - cy[None, :] + wh - 1) * (2 * ww - 1) + (cx[:, None] - cx[None, :] + ww - 1)
    return rel.astype(np.int32)


def gather_bias(table, index):
    """table (P, h) at index (Nq, Nk) -> the (h, Nq, Nk) position bias (negative indices count from the end, as in
    torch: HAT's OCA index has them)."""
    nq, nk = index.shape
    return table[index.reshape(-1)].reshape(nq, nk, -1).transpose(2, 0, 1)


def region_ids(H, W, wh, ww, sh, sw) -> np.ndarray:
    """Swin's region label of every token in every window, (nW, wh*ww), for a (H, W) map rolled by (-sh, -sw)."""
    img = np.zeros((H, W), np.int32)
    cnt = 0
    for hs in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for ws in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            img[hs, ws] = cnt
            cnt += 1
    return img.reshape(H // wh, wh, W // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)


def shift_mask(H, W, wh, ww, sh, sw) -> np.ndarray:
    """The references' `calculate_mask`: (nW, N, N) float32, -100 between regions, else 0 (numpy, for exports)."""
    ids = region_ids(H, W, wh, ww, sh, sw)
    diff = ids[:, None, :] - ids[:, :, None]
    return np.where(diff != 0, np.float32(-100.0), np.float32(0.0)).astype(np.float32)


def trace_shift_mask(H, W, wh, ww, sh, sw):
    """`shift_mask` built in the program with jnp comparisons on the padded size, so no (nW, N, N) constant is
    embedded and an exported graph keeps H and W symbolic. Per axis a token's band is 0 before the last window,
    1 in it before the shift and 2 in the shift; the region is 3 * band_y + band_x, as `region_ids` labels it."""

    def bands(n, w, s):
        i = jnp.arange(n)
        return (i >= n - w).astype(jnp.int32) + (i >= n - s).astype(jnp.int32)

    ids = to_windows((bands(H, wh, sh)[:, None] * 3 + bands(W, ww, sw)[None, :])[..., None], wh, ww)[..., 0]
    return jnp.where(ids[:, None, :] != ids[:, :, None], -100.0, 0.0).astype(jnp.float32)


def rect_window_branches(qkv, attns, split_size, shifted):
    """DAT's and RGT's rectangle-window self-attention (the same authors' code): q|k|v (B, H, W, 3C) zero-padded
    right/bottom to max(split_size) after the projection, channels halved, half i attended by attns[i] (windows
    split_size, then transposed; each attn takes (3, B, Hp, Wp, c) and an optional mask), rolled by half a window
    with its mask where `shifted`, cropped back -> (B, H, W, C)."""
    B, H, W, C3 = qkv.shape
    C = C3 // 3
    m = max(split_size)
    ph, pw = (m - H % m) % m, (m - W % m) % m
    qkv = jnp.moveaxis(jnp.pad(qkv, ((0, 0), (0, ph), (0, pw), (0, 0))).reshape(B, H + ph, W + pw, 3, C), 3, 0)
    h0, h1 = split_size[0] // 2, split_size[1] // 2
    outs = []
    for i, (part, attn) in enumerate(zip((qkv[..., : C // 2], qkv[..., C // 2:]), attns)):
        sh, sw = (h0, h1) if i == 0 else (h1, h0)
        if shifted:
            mask = trace_shift_mask(H + ph, W + pw, attn.H_sp, attn.W_sp, sh, sw)
            o = jnp.roll(attn(jnp.roll(part, (-sh, -sw), axis=(2, 3)), mask), (sh, sw), axis=(1, 2))
        else:
            o = attn(part)
        outs.append(o[:, :H, :W])
    return jnp.concatenate(outs, -1)


# --------------------------------------------------------------------------------------------------------------
# the attention kernel


def resolve_impl(impl, dtype):
    if impl != "auto":
        return impl
    if jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "auto-cudnn"  # cuDNN, falling back to xla where cuDNN refuses the shapes at trace time
    return "xla"


def window_attention(q, k, v, pos_bias, mask, scale, impl="xla"):
    """Softmax(q k^T * scale + pos_bias + mask) v per window and head.

    q: (B, nW, Nq, h, d); k, v: (B, nW, Nk, h, d); pos_bias: (h, Nq, Nk); mask: (nW, Nq, Nk) or None.
    Returns (B, nW, Nq, h, d).
    impl 'xla': explicit einsums (logits in float32), the bias broadcast over batch and windows, never tiled.
    impl 'dpa'/'cudnn': jax.nn.dot_product_attention (cuDNN flash attention for 'cudnn'); head_dim is zero-padded
    to a multiple of 8 (q.k and the first d output channels are unchanged). Without a mask, windows go to the batch
    axis and the bias is (1, h, Nq, Nk); with a mask, windows go to the head axis so that the combined
    (nW*h, Nq, Nk) bias broadcasts over the batch instead of being tiled per image.
    'auto-cudnn' tries cuDNN and falls back to 'xla' where it refuses the shapes at trace time.
    """
    B, nW, Nq, h, d = q.shape
    Nk = k.shape[2]
    if impl == "auto-cudnn":
        try:
            return window_attention(q, k, v, pos_bias, mask, scale, "cudnn")
        except (NotImplementedError, RuntimeError, ValueError):
            impl = "xla"
    if impl == "xla":
        logits = jnp.einsum("bwnhd,bwmhd->bwhnm", q * jnp.asarray(scale, q.dtype), k,
                            preferred_element_type=jnp.float32, precision=precision(q.dtype))
        logits = logits + pos_bias.astype(jnp.float32)
        if mask is not None:
            logits = logits + mask[:, None].astype(jnp.float32)
        p = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return jnp.einsum("bwhnm,bwmhd->bwnhd", p, v, precision=precision(v.dtype))
    if impl not in ("dpa", "cudnn"):
        raise ValueError(f"unknown attn_impl {impl!r} (auto, xla, dpa, cudnn)")
    dp = -(-d // 8) * 8
    if dp != d:
        pad = [(0, 0)] * 4 + [(0, dp - d)]
        q, k, v = (jnp.pad(t, pad) for t in (q, k, v))
    kw = dict(scale=float(scale), implementation="cudnn" if impl == "cudnn" else "xla")
    if mask is None:
        bias = pos_bias[None].astype(q.dtype)
        out = jax.nn.dot_product_attention(q.reshape(B * nW, Nq, h, dp), k.reshape(B * nW, Nk, h, dp),
                                           v.reshape(B * nW, Nk, h, dp), bias=bias, **kw)
        out = out.reshape(B, nW, Nq, h, dp)
    else:
        bias = (pos_bias[None] + mask[:, None]).reshape(1, nW * h, Nq, Nk).astype(q.dtype)
        qq, kk, vv = (t.transpose(0, 2, 1, 3, 4).reshape(B, t.shape[2], nW * h, dp) for t in (q, k, v))
        out = jax.nn.dot_product_attention(qq, kk, vv, bias=bias, **kw)
        out = out.reshape(B, Nq, nW, h, dp).transpose(0, 2, 1, 3, 4)
    return out[..., :d]


class WindowAttention(nnx.Module):
    """Swin's (shifted) window self-attention with a learned relative-position bias table, as SwinIR and HAT use it.

    Applied to the whole (B, H, W, C) map (H, W multiples of the window): qkv and proj act per token, so they run
    before the partition and after the merge, and the cyclic shift happens in here. SwinIR registers the
    relative-position index as this module's buffer (`own_index`); HAT passes the model-level one in.
    """

    def __init__(self, dim, window_size, num_heads, *, qkv_bias=True, own_index=True, rngs, dtype=jnp.float32,
                 attn_impl="auto"):
        self.window_size, self.num_heads, self.dtype, self.attn_impl = window_size, num_heads, dtype, attn_impl
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nnx.Param(trunc_normal_002(rngs.params(), ((2 * window_size - 1) ** 2, num_heads)))
        if own_index:
            self.relative_position_index = Buffer(jnp.asarray(relative_position_index(window_size, window_size)))
        self.qkv = linear(dim, 3 * dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)

    def __call__(self, x, shift=0, index=None):
        """x (B, H, W, C); shift: Swin's cyclic shift (its mask is built for the traced size); index: HAT's."""
        B, H, W, C = x.shape
        ws, h = self.window_size, self.num_heads
        mask = None
        if shift:
            x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
            mask = trace_shift_mask(H, W, ws, ws, shift, shift)
        qkv = to_windows(self.qkv(x), ws, ws)  # (B, nW, N, 3C): q | k | v
        q, k, v = (t.reshape(*t.shape[:3], h, C // h) for t in jnp.split(qkv, 3, axis=-1))
        index = self.relative_position_index[...] if index is None else index
        bias = gather_bias(self.relative_position_bias_table[...], index)
        out = window_attention(q, k, v, bias, mask, self.scale, resolve_impl(self.attn_impl, self.dtype))
        out = self.proj(from_windows(out.reshape(*out.shape[:3], C), ws, ws, H, W))
        return jnp.roll(out, (shift, shift), axis=(1, 2)) if shift else out
