"""HAT (Chen et al., "Activating More Pixels in Image Super-Resolution Transformer", CVPR 2023, arXiv 2205.04437)
in Flax NNX, numerically equal to the PyTorch reference (spandrel 0.4.2 `architectures/HAT/__arch/HAT.py`, the
authors' XPixelGroup/HAT `hat/archs/hat_arch.py`).

Each residual hybrid attention group (RHAG) is a run of hybrid attention blocks (HAB: Swin's (shifted) window
attention plus a channel-attention conv branch, CAB, scaled by `conv_scale`) and one overlapping cross-attention
block (OCAB: queries from each window, keys/values from the window enlarged by `overlap_ratio`, zero-padded at the
image border), then a convolution, around a residual. The module tree mirrors the reference attribute for attribute
(`layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight`, `relative_position_index_OCA`, ...); the
window machinery comes from `jaxsr/archs/attention.py` (shared with SwinIR and DAT).

Differences from the reference that do not change outputs: the shifted-window mask is built at trace time (the
reference builds it per forward on the host); qkv/proj run on the whole map around the window partition; the
overlapping key/value windows are gathered by reshapes of the padded map instead of nn.Unfold. Built in eval mode;
`model.train()` turns drop path on.

The channel attention pools over the whole image, so outputs are not local: tiles match the whole image only
approximately, however large the overlap (see the `hat` bridge's docs and tests/test_hat.py for the measured gap).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.attention import (Mlp, PatchEmbed, WindowAttention, add_absolute_pos_embed, drop_path, from_windows,
                                   gather_bias, layer_norm, linear, relative_position_index, resi_conv, resolve_impl,
                                   run_block, to_windows, window_attention)
from jaxsr.archs.common import (RGB_MEAN, Act, Buffer, Sequential, constructor_kwargs, conv,
                                reflect_pad_to, trunc_normal_002, variant_spec)
from jaxsr.archs.upsample import swinir_head, swinir_tail

# Named configurations: the authors' options/test/HAT-S_SRx4.yml, HAT_SRx4.yml and HAT-L_SRx4_ImageNet-pretrain.yml
# (XPixelGroup/HAT). Fields not given take DEFAULTS.
VARIANTS = {
    "hat_s": dict(embed_dim=144, depths=[6] * 6, num_heads=[6] * 6, window_size=16, compress_ratio=24,
                  squeeze_factor=24, mlp_ratio=2.0),
    "hat": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=16, compress_ratio=3,
                squeeze_factor=30, mlp_ratio=2.0),
    "hat_l": dict(embed_dim=180, depths=[6] * 12, num_heads=[6] * 12, window_size=16, compress_ratio=3,
                  squeeze_factor=30, mlp_ratio=2.0),
}
# The fields every variant shares, the reference's defaults (spandrel assumes img_size 64, img_range 1 and conv_scale
# 0.01: the keys do not tell them)
DEFAULTS = dict(
    scale=4, in_ch=3, img_size=64, img_range=1.0, conv_scale=0.01, overlap_ratio=0.5, qkv_bias=True, num_feat=64,
    upsampler="pixelshuffle", resi_connection="1conv", patch_norm=True, ape=False, drop_path_rate=0.1,
    use_chk=False, attn_impl="auto",
)
DEFAULT_VARIANT = "hat_s"  # what a spec without the variant's fields builds


def spec_for(variant: str, **overrides) -> dict:
    """A complete HAT spec for a named variant ('hat_s', 'hat', 'hat_l'), with overrides."""
    return variant_spec("hat", VARIANTS, DEFAULTS, variant, "HAT", overrides)


def overlap_size(window_size, overlap_ratio):
    return int(window_size * overlap_ratio) + window_size


def oca_position_index(ws, ows) -> np.ndarray:
    """The reference's `calculate_rpi_oca`, (ws*ws, ows*ows) int32: (ext_j - ori_i + ws - ows + 1) per axis, rows
    scaled by ws + ows - 1. It goes negative for most pairs; torch indexes the bias table from the end there, and
    so does jnp (`gather_bias`)."""
    oy, ox = (a.ravel() for a in np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij"))
    ey, ex = (a.ravel() for a in np.meshgrid(np.arange(ows), np.arange(ows), indexing="ij"))
    dy = ey[None, :] - oy[:, None] + ws - ows + 1
    dx = ex[None, :] - ox[:, None] + ws - ows + 1
    return (dy * (ws + ows - 1) + dx).astype(np.int32)


def overlapping_windows(t, ws, ows):
    """nn.Unfold(ows, stride ws, zero padding (ows-ws)/2) as windows: (B, H, W, c) -> (B, nW, ows*ows, c).

    Window i on an axis covers padded rows [i*ws, i*ws + ows): the concatenation of k+1 consecutive ws-blocks of
    the padded axis, cut to ows, so it is built from reshapes and slices only.
    """
    B, H, W, c = t.shape
    p = (ows - ws) // 2
    k = -(-(ows - ws) // ws)  # following blocks a window reaches into

    def along(t, axis):
        n = t.shape[axis] // ws
        pad = [(0, 0)] * t.ndim
        pad[axis] = (p, k * ws - p)
        t = jnp.pad(t, pad)
        blocks = []
        for j in range(k + 1):
            part = jax.lax.slice_in_dim(t, j * ws, (j + n) * ws, axis=axis)
            blocks.append(part.reshape(*part.shape[:axis], n, ws, *part.shape[axis + 1:]))
        win = jnp.concatenate(blocks, axis=axis + 1)
        return jax.lax.slice_in_dim(win, 0, ows, axis=axis + 1)

    t = along(along(t, 1), 3)  # (B, nH, ows, nW, ows, c)
    t = t.transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(B, -1, ows * ows, c)


class ChannelAttention(nnx.Module):
    """RCAN's channel attention: x * sigmoid(conv(relu(conv(global average pool(x)))))."""

    def __init__(self, num_feat, squeeze_factor, *, rngs, dtype):
        mid = int(num_feat // squeeze_factor)
        self.attention = Sequential([Act("avgpool"), conv(num_feat, mid, 1, rngs=rngs, dtype=dtype), Act("relu"),
                                     conv(mid, num_feat, 1, rngs=rngs, dtype=dtype), Act("sigmoid")])

    def __call__(self, x):
        return x * self.attention(x)


class CAB(nnx.Module):
    """Channel attention block: conv3x3 (dim/compress_ratio) -> GELU -> conv3x3 -> channel attention."""

    def __init__(self, num_feat, compress_ratio, squeeze_factor, *, rngs, dtype):
        mid = int(num_feat // compress_ratio)
        self.cab = Sequential([conv(num_feat, mid, 3, rngs=rngs, dtype=dtype), Act("gelu"),
                               conv(mid, num_feat, 3, rngs=rngs, dtype=dtype),
                               ChannelAttention(num_feat, squeeze_factor, rngs=rngs, dtype=dtype)])

    def __call__(self, x):
        return self.cab(x)


class HAB(nnx.Module):
    """Hybrid attention block: x + drop_path(W-MSA(norm1 x)) + conv_scale * CAB(norm1 x), then the MLP."""

    def __init__(self, dim, num_heads, window_size, shift, compress_ratio, squeeze_factor, conv_scale, mlp_ratio,
                 qkv_bias, drop_path_rate, *, rngs, dtype, attn_impl):
        self.shift, self.conv_scale = shift, conv_scale
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias, own_index=False, rngs=rngs,
                                    dtype=dtype, attn_impl=attn_impl)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor, rngs=rngs, dtype=dtype)
        self.drop_path = drop_path(drop_path_rate, rngs)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x, rpi_sa):
        h = self.norm1(x)
        x = x + self.drop_path(self.attn(h, self.shift, rpi_sa)) + self.conv_block(h) * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nnx.Module):
    """Overlapping cross-attention: each ws x ws window of queries attends to the ows x ows window around it."""

    def __init__(self, dim, window_size, overlap_ratio, num_heads, qkv_bias, mlp_ratio, *, rngs, dtype, attn_impl):
        self.window_size, self.num_heads, self.dtype, self.attn_impl = window_size, num_heads, dtype, attn_impl
        self.overlap_win_size = ows = overlap_size(window_size, overlap_ratio)
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.qkv = linear(dim, 3 * dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.relative_position_bias_table = nnx.Param(
            trunc_normal_002(rngs.params(), ((window_size + ows - 1) ** 2, num_heads)))
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x, rpi_oca):
        B, H, W, C = x.shape
        ws, ows, h = self.window_size, self.overlap_win_size, self.num_heads
        qkv = self.qkv(self.norm1(x))
        q = to_windows(qkv[..., :C], ws, ws)  # (B, nW, ws*ws, C)
        kv = overlapping_windows(qkv[..., C:], ws, ows)  # (B, nW, ows*ows, 2C): k | v, zero outside the image
        q, k, v = (t.reshape(*t.shape[:3], h, C // h) for t in (q, kv[..., :C], kv[..., C:]))
        bias = gather_bias(self.relative_position_bias_table[...], rpi_oca)
        out = window_attention(q, k, v, bias, None, self.scale, resolve_impl(self.attn_impl, self.dtype))
        x = self.proj(from_windows(out.reshape(*out.shape[:3], C), ws, ws, H, W)) + x
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nnx.Module):
    def __init__(self, dim, depth, num_heads, window_size, compress_ratio, squeeze_factor, conv_scale, overlap_ratio,
                 mlp_ratio, qkv_bias, drop_paths, use_chk, *, rngs, dtype, attn_impl):
        self.use_chk = use_chk
        self.blocks = nnx.List([
            HAB(dim, num_heads, window_size, 0 if j % 2 == 0 else window_size // 2, compress_ratio, squeeze_factor,
                conv_scale, mlp_ratio, qkv_bias, drop_paths[j], rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for j in range(depth)])
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, qkv_bias, mlp_ratio, rngs=rngs,
                                 dtype=dtype, attn_impl=attn_impl)

    def __call__(self, x, rpi_sa, rpi_oca):
        for blk in self.blocks:
            x = run_block(blk, x, rpi_sa, remat=self.use_chk)
        return run_block(self.overlap_attn, x, rpi_oca, remat=self.use_chk)


class RHAG(nnx.Module):
    """Residual hybrid attention group: HABs + OCAB, then a convolution (1conv) or none (identity), plus the input."""

    def __init__(self, dim, depth, num_heads, window_size, compress_ratio, squeeze_factor, conv_scale, overlap_ratio,
                 mlp_ratio, qkv_bias, drop_paths, use_chk, resi_connection, *, rngs, dtype, attn_impl):
        self.residual_group = AttenBlocks(dim, depth, num_heads, window_size, compress_ratio, squeeze_factor,
                                          conv_scale, overlap_ratio, mlp_ratio, qkv_bias, drop_paths, use_chk,
                                          rngs=rngs, dtype=dtype, attn_impl=attn_impl)
        self.conv = resi_conv(dim, resi_connection, rngs=rngs, dtype=dtype)

    def __call__(self, x, rpi_sa, rpi_oca):
        return self.conv(self.residual_group(x, rpi_sa, rpi_oca)) + x


class HAT(nnx.Module):
    """Hybrid Attention Transformer on NHWC images in [0, 1], any size. Built in eval mode; `model.train()` for
    drop path."""

    def __init__(self, *, scale=4, in_ch=3, embed_dim=144, depths=(6,) * 6, num_heads=(6,) * 6, window_size=16,
                 compress_ratio=24, squeeze_factor=24, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0,
                 qkv_bias=True, img_size=64, img_range=1.0, num_feat=64, upsampler="pixelshuffle",
                 resi_connection="1conv", patch_norm=True, ape=False, drop_path_rate=0.1, use_chk=False,
                 attn_impl="auto", rngs: nnx.Rngs, dtype=jnp.float32):
        if upsampler != "pixelshuffle":
            raise ValueError(f"HAT has only the pixelshuffle upsampler, not {upsampler!r}")
        if resi_connection not in ("1conv", "identity"):
            raise ValueError(f"HAT's resi_connection is 1conv or identity, not {resi_connection!r}")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        if img_size <= window_size:
            raise ValueError(f"img_size ({img_size}) must exceed window_size ({window_size}) "
                             "(the reference drops the shifts at smaller sizes)")
        ows = overlap_size(window_size, overlap_ratio)
        if (ows - window_size) % 2:
            raise ValueError(f"overlap_ratio {overlap_ratio} gives an overlapping window of {ows} around {window_size}: "
                             "the difference must be even (the reference's unfold drops windows otherwise)")
        self.scale, self.in_ch, self.window_size = scale, in_ch, window_size
        # the window grid, to which callers reflect-pad as the module would (channel attention is global: tiling
        # is approximate)
        self.size_multiple = self.tile_multiple = window_size
        self.img_size, self.img_range, self.ape, self.dtype = img_size, float(img_range), ape, dtype
        self.mean = RGB_MEAN if in_ch == 3 else (0.0,) * in_ch
        self.relative_position_index_SA = Buffer(jnp.asarray(relative_position_index(window_size, window_size)))
        self.relative_position_index_OCA = Buffer(jnp.asarray(oca_position_index(window_size, ows)))
        C = embed_dim
        self.conv_first = conv(in_ch, C, 3, rngs=rngs, dtype=dtype)
        self.patch_embed = PatchEmbed(C, patch_norm, rngs=rngs, dtype=dtype)
        if ape:
            self.absolute_pos_embed = nnx.Param(trunc_normal_002(rngs.params(), (1, img_size * img_size, C)))
        dpr = np.linspace(0, drop_path_rate, int(sum(depths)), dtype=np.float32).tolist()
        offs = np.cumsum([0, *depths]).tolist()
        self.layers = nnx.List([
            RHAG(C, depths[i], num_heads[i], window_size, compress_ratio, squeeze_factor, conv_scale, overlap_ratio,
                 mlp_ratio, qkv_bias, dpr[offs[i]:offs[i + 1]], use_chk, resi_connection, rngs=rngs, dtype=dtype,
                 attn_impl=attn_impl)
            for i in range(len(depths))])
        self.norm = layer_norm(C, rngs=rngs, dtype=dtype)
        self.conv_after_body = resi_conv(C, resi_connection, rngs=rngs, dtype=dtype)
        self.upsampler = "pixelshuffle"  # SwinIR's head, the one this family has
        swinir_head(self, self.upsampler, scale, C, in_ch, rngs=rngs, dtype=dtype, num_feat=num_feat)
        self.eval()

    def forward_features(self, x):
        x = self.patch_embed(x)
        if self.ape:
            x = add_absolute_pos_embed(x, self.absolute_pos_embed[...], self.img_size)
        rpi_sa, rpi_oca = self.relative_position_index_SA[...], self.relative_position_index_OCA[...]
        for layer in self.layers:
            x = layer(x, rpi_sa, rpi_oca)
        return self.norm(x)

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1], any H, W -> (B, scale*H, scale*W, in_ch) float32."""
        H, W = x.shape[1:3]
        mean = jnp.asarray(self.mean, jnp.float32)
        x = (x.astype(jnp.float32) - mean) * self.img_range
        x = reflect_pad_to(x, self.window_size)
        x = self.conv_first(x.astype(self.dtype))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = swinir_tail(self, x, None, self.scale)
        x = x.astype(jnp.float32) / self.img_range + mean
        return x[:, : H * self.scale, : W * self.scale]


def build(spec: dict, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> HAT:
    """A HAT from a spec: the bridge's (all fields) or a variant plus overrides ({'variant': 'hat_l', ...})."""
    kw = constructor_kwargs(spec, VARIANTS, DEFAULTS, DEFAULT_VARIANT, "HAT", ("depths", "num_heads"))
    return HAT(**kw, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
