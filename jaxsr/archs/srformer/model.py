"""SRFormer (Zhou et al., "SRFormer: Permuted Self-Attention for Single Image Super-Resolution", ICCV 2023, arXiv
2303.09735) in Flax NNX, numerically equal to the PyTorch reference (spandrel_extra_arches 0.2.0
`architectures/SRFormer/__arch/SRFormer.py`, the authors' HVision-NKU/SRFormer).

SwinIR's skeleton (shallow conv, residual groups of (shifted) window blocks, reconstruction) with two changes in each
block: permuted self-attention (PSA), where queries are the ws x ws window's tokens and keys/values are its
(ws/2) x (ws/2) 2x2-blocks, their channels halved by `kv` and the 2x2 block folded into the channel axis; and a
ConvFFN whose hidden features add a 5x5 depthwise conv (+GELU) of themselves. The module tree mirrors the
reference attribute for attribute (`layers.0.residual_group.blocks.1.attn.aligned_relative_position_index`,
`...mlp.dwconv.depthwise_conv.0.weight`, ...), so `archs/bridge.py` maps it mechanically.

Differences from the reference that do not change outputs:
- The shifted-window masks are built at trace time for the traced size (the bridge adds the reference's
  `attn_mask` buffers at img_size to exports); q/kv/proj run on the whole map around the window partition.
- Built in eval mode; `model.train()` turns drop path on.

What the reference does and we do too: blocks shift only where the (window-rounded) img_size exceeds the window
(`input_resolution`); the key/value mask cuts the half-resolution map at -(shift // 2) rounded as Python's
`-shift // 2` rounds it (for odd ws/2 it is off by one from the query mask, so wrapped pixels leak in at the
bottom/right border; see docs/archs.md on tiling).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.attention import (PatchEmbed, add_absolute_pos_embed, drop_path, from_windows, gather_bias,
                                   layer_norm, linear, region_ids, relative_position_index, resi_conv, resolve_impl,
                                   run_block, to_windows, window_attention)
from jaxsr.archs.common import (RGB_MEAN, Act, Buffer, Sequential, constructor_kwargs, conv,
                                reflect_pad_to, trunc_normal_002, variant_spec)
from jaxsr.archs.upsample import swinir_head, swinir_tail

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")

# Named configurations: traiNNer-redux's `srformer` (the classical model: window 24, LR patch 48) and
# `srformer_light` (the authors' SRFormer-light: window 16, LR patch 64, pixelshuffledirect).
VARIANTS = {
    "srformer": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=24, mlp_ratio=2.0, img_size=48,
                     upsampler="pixelshuffle", resi_connection="1conv"),
    "srformer_light": dict(embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=16, mlp_ratio=2.0,
                           img_size=64, upsampler="pixelshuffledirect", resi_connection="1conv"),
}
# The fields every variant shares, the reference's defaults (spandrel assumes img_range 1 and drop_path_rate 0.1:
# the keys do not tell them)
DEFAULTS = dict(scale=4, in_ch=3, img_range=1.0, qkv_bias=True, patch_norm=True, ape=False, drop_path_rate=0.1,
                use_chk=False, attn_impl="auto")
DEFAULT_VARIANT = "srformer"
NUM_FEAT = 64  # the reference hard-codes the reconstruction width


def spec_for(variant: str, **overrides) -> dict:
    """A complete SRFormer spec for a named variant ('srformer', 'srformer_light'), with overrides."""
    return variant_spec("srformer", VARIANTS, DEFAULTS, variant, "SRFormer", overrides)


def padded_size(img_size, window_size):
    """The reference's `input_resolution`: img_size rounded up to a multiple of the window."""
    return -(-img_size // window_size) * window_size


def key_shift(shift):
    """Where the reference's key/value mask cuts the half-resolution map: `-shift // 2` in Python is -ceil(shift/2)."""
    return -(-shift // 2)


def aligned_position_index(ws) -> np.ndarray:
    """The reference's `aligned_relative_position_index`, (ws*ws, (ws/2)**2) int32: query (r, c) takes the
    relative-position row of the permuted token (r // 2, c // 2) it lies in."""
    pw = ws // 2
    rel = relative_position_index(pw, pw)
    r, c = np.divmod(np.arange(ws * ws), ws)
    return rel[(r // 2) * pw + c // 2]


def psa_mask(H, W, ws, shift) -> np.ndarray:
    """The reference's `calculate_mask` (numpy, for exports): (nW, ws*ws, (ws/2)**2) float32, -100 where a query's
    region differs from its key's (regions of the rolled map, keys labelled on the half-resolution map)."""
    q = region_ids(H, W, ws, ws, shift, shift)
    t = key_shift(shift)
    k = region_ids(H // 2, W // 2, ws // 2, ws // 2, t, t)
    return np.where(q[:, :, None] != k[:, None, :], np.float32(-100.0), np.float32(0.0)).astype(np.float32)


def trace_psa_mask(H, W, ws, shift):
    """`psa_mask` built in the program from iota comparisons (no (nW, N, N/4) constant; ONNX sizes stay symbolic)."""

    def ids(h, w, win, s):
        def bands(n):
            i = jnp.arange(n)
            return (i >= n - win).astype(jnp.int32) + (i >= n - s).astype(jnp.int32)

        return to_windows((bands(h)[:, None] * 3 + bands(w)[None, :])[..., None], win, win)[..., 0]

    q = ids(H, W, ws, shift)
    k = ids(H // 2, W // 2, ws // 2, key_shift(shift))
    return jnp.where(q[:, :, None] != k[:, None, :], -100.0, 0.0).astype(jnp.float32)


class PSA(nnx.Module):
    """Permuted self-attention: ws*ws queries per window against (ws/2)**2 keys/values, each a 2x2 block of the
    window whose `kv` channels (dim/2: dim/4 for k, dim/4 for v per pixel) are stacked to dim."""

    def __init__(self, dim, window_size, num_heads, *, qkv_bias, rngs, dtype, attn_impl):
        pw = window_size // 2
        self.window_size, self.num_heads, self.dtype, self.attn_impl = window_size, num_heads, dtype, attn_impl
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nnx.Param(trunc_normal_002(rngs.params(), ((2 * pw - 1) ** 2, num_heads)))
        self.aligned_relative_position_index = Buffer(jnp.asarray(aligned_position_index(window_size)))
        self.kv = linear(dim, dim // 2, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.q = linear(dim, dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)

    def __call__(self, x, shift):
        """x (B, H, W, C), H and W multiples of the window; shift: the cyclic shift (0 for none)."""
        B, H, W, C = x.shape
        ws, h = self.window_size, self.num_heads
        pw = ws // 2
        mask = None
        if shift:
            x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
            mask = trace_psa_mask(H, W, ws, shift)
        q = to_windows(self.q(x), ws, ws)
        q = q.reshape(*q.shape[:3], h, C // h)
        # pixel (2I + a, 2J + b), kv channel (s, c) -> key token (I, J), stream s (k/v), channel (2a + b) * C/4 + c
        kv = self.kv(x).reshape(B, H // 2, 2, W // 2, 2, 2, C // 4).transpose(0, 1, 3, 5, 2, 4, 6)
        kv = kv.reshape(B, H // 2, W // 2, 2, C)
        k, v = (to_windows(kv[..., i, :], pw, pw) for i in (0, 1))
        k, v = (t.reshape(*t.shape[:3], h, C // h) for t in (k, v))
        bias = gather_bias(self.relative_position_bias_table[...], self.aligned_relative_position_index[...])
        out = window_attention(q, k, v, bias, mask, self.scale, resolve_impl(self.attn_impl, self.dtype))
        out = self.proj(from_windows(out.reshape(*out.shape[:3], C), ws, ws, H, W))
        return jnp.roll(out, (shift, shift), axis=(1, 2)) if shift else out


class DWConv(nnx.Module):
    """The reference's `dwconv`: a 5x5 depthwise conv and GELU on the token map."""

    def __init__(self, hidden, *, rngs, dtype):
        self.depthwise_conv = Sequential([conv(hidden, hidden, 5, groups=hidden, rngs=rngs, dtype=dtype), Act("gelu")])

    def __call__(self, x):
        return self.depthwise_conv(x)


class ConvFFN(nnx.Module):
    """fc1 -> GELU -> (+ its depthwise conv) -> fc2 (the dropouts are 0 in every SR model)."""

    def __init__(self, dim, hidden, *, rngs, dtype):
        self.fc1 = linear(dim, hidden, rngs=rngs, dtype=dtype)
        self.act = Act("gelu")
        self.dwconv = DWConv(hidden, rngs=rngs, dtype=dtype)
        self.fc2 = linear(hidden, dim, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = self.act(self.fc1(x))
        return self.fc2(x + self.dwconv(x))


class PSA_Block(nnx.Module):
    """PSA + ConvFFN with pre-norms and drop path; `shift` is the cyclic shift (0: none)."""

    def __init__(self, dim, num_heads, window_size, shift, mlp_ratio, qkv_bias, drop_path_rate, *, rngs, dtype,
                 attn_impl):
        self.shift = shift
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.attn = PSA(dim, window_size, num_heads, qkv_bias=qkv_bias, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
        self.drop_path = drop_path(drop_path_rate, rngs)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x), self.shift))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nnx.Module):
    def __init__(self, dim, depth, num_heads, window_size, shifts, mlp_ratio, qkv_bias, drop_paths, use_chk, *, rngs,
                 dtype, attn_impl):
        self.use_chk = use_chk
        shift = window_size // 2 if shifts else 0
        self.blocks = nnx.List([
            PSA_Block(dim, num_heads, window_size, 0 if j % 2 == 0 else shift, mlp_ratio, qkv_bias, drop_paths[j],
                      rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for j in range(depth)])

    def __call__(self, x):
        for blk in self.blocks:
            x = run_block(blk, x, remat=self.use_chk)
        return x


class PSA_Group(nnx.Module):
    """PSA blocks, then a convolution, around a residual (SwinIR's RSTB)."""

    def __init__(self, dim, depth, num_heads, window_size, shifts, mlp_ratio, qkv_bias, drop_paths, use_chk,
                 resi_connection, *, rngs, dtype, attn_impl):
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, shifts, mlp_ratio, qkv_bias, drop_paths,
                                         use_chk, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
        self.conv = resi_conv(dim, resi_connection, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.conv(self.residual_group(x)) + x


class SRFormer(nnx.Module):
    """SRFormer on NHWC images in [0, 1], any size (padded to the window by reflection, as the reference does).
    Built in eval mode; `model.train()` for drop path."""

    def __init__(self, *, scale=4, in_ch=3, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=24,
                 mlp_ratio=2.0, qkv_bias=True, img_size=48, img_range=1.0, upsampler="pixelshuffle",
                 resi_connection="1conv", patch_norm=True, ape=False, drop_path_rate=0.1, use_chk=False,
                 attn_impl="auto", rngs: nnx.Rngs, dtype=jnp.float32):
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown SRFormer upsampler {upsampler!r} (pixelshuffle, pixelshuffledirect, "
                             "nearest+conv, '' for none)")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        if window_size < 2 or window_size % 2:
            raise ValueError(f"SRFormer's window_size must be even (its keys are 2x2 blocks), not {window_size}")
        if embed_dim % 4 or any(embed_dim % h for h in num_heads):
            raise ValueError(f"SRFormer's embed_dim ({embed_dim}) must be a multiple of 4 and of every num_heads "
                             f"{list(num_heads)}")
        if upsampler == "" and scale != 1:
            raise ValueError(f"SRFormer without an upsampler is x1, not x{scale}")
        if upsampler == "nearest+conv" and scale != 4:
            raise ValueError(f"SRFormer's nearest+conv upsampler is x4 only (as in the reference), not x{scale}")
        self.scale, self.in_ch = scale, in_ch
        # windows are anchored at the image origin: callers (jaxsr.upscale, the ONNX graph) reflect-pad to the window
        self.size_multiple = self.tile_multiple = window_size
        self.img_size, self.img_range, self.upsampler, self.ape = img_size, float(img_range), upsampler, ape
        self.dtype = dtype
        self.mean = RGB_MEAN if in_ch == 3 else (0.0,) * in_ch
        res = padded_size(img_size, window_size)
        C = embed_dim
        self.conv_first = conv(in_ch, C, 3, rngs=rngs, dtype=dtype)
        self.patch_embed = PatchEmbed(C, patch_norm, rngs=rngs, dtype=dtype)
        if ape:
            self.absolute_pos_embed = nnx.Param(trunc_normal_002(rngs.params(), (1, res * res, C)))
        dpr = np.linspace(0, drop_path_rate, int(sum(depths)), dtype=np.float32).tolist()
        offs = np.cumsum([0, *depths]).tolist()
        self.layers = nnx.List([
            PSA_Group(C, depths[i], num_heads[i], window_size, res > window_size, mlp_ratio, qkv_bias,
                      dpr[offs[i]:offs[i + 1]], use_chk, resi_connection, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for i in range(len(depths))])
        self.norm = layer_norm(C, rngs=rngs, dtype=dtype)
        self.conv_after_body = resi_conv(C, resi_connection, rngs=rngs, dtype=dtype)
        swinir_head(self, upsampler, scale, C, in_ch, rngs=rngs, dtype=dtype, num_feat=NUM_FEAT)
        self.eval()

    def forward_features(self, x):
        x = self.patch_embed(x)
        if self.ape:
            x = add_absolute_pos_embed(x, self.absolute_pos_embed[...], padded_size(self.img_size, self.tile_multiple))
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1], any H, W -> (B, scale*H, scale*W, in_ch) float32."""
        H, W = x.shape[1:3]
        x = reflect_pad_to(x.astype(jnp.float32), self.tile_multiple)
        mean = jnp.asarray(self.mean, jnp.float32)
        x = (x - mean) * self.img_range
        inp = x
        x = self.conv_first(x.astype(self.dtype))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = swinir_tail(self, x, inp, self.scale)
        x = x.astype(jnp.float32) / self.img_range + mean
        return x[:, : H * self.scale, : W * self.scale]


def build(spec: dict, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> SRFormer:
    """An SRFormer from a spec: the bridge's (all fields) or a variant plus overrides ({'variant': 'srformer_light'})."""
    kw = constructor_kwargs(spec, VARIANTS, DEFAULTS, DEFAULT_VARIANT, "SRFormer", ("depths", "num_heads"))
    return SRFormer(**kw, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
