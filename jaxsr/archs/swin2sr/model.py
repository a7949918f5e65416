"""Swin2SR (Conde et al., "Swin2SR: SwinV2 Transformer for Compressed Image Super-Resolution and Restoration",
ECCVW 2022, arXiv 2209.11345) in Flax NNX, numerically equal to the PyTorch reference (spandrel 0.4.2
`architectures/Swin2SR/__arch/Swin2SR.py`, from mv-lab/swin2sr `models/network_swin2sr.py`).

SwinIR's skeleton with SwinV2 blocks: scaled cosine attention (cosine similarity times exp(logit_scale), the learned
per-head scale clamped at log 100), a continuous relative position bias (`cpb_mlp`, a 2-512-heads MLP over
log-spaced relative coordinates, then 16 * sigmoid) and post-norm residuals (x + norm(attn(x))). Each residual group
and the stem end in a 1x1 `patch_embed.proj` convolution. The module tree mirrors the reference attribute for
attribute (`layers.0.residual_group.blocks.1.attn.cpb_mlp.0.weight`, `layers.0.patch_embed.proj.weight`, ...), so
`archs/bridge.py` maps it mechanically; windows, shift masks and the attention kernel come from
`jaxsr/archs/attention.py` (the per-head logit scale is folded into the normalised queries).

Upsamplers: pixelshuffle, pixelshuffledirect, nearest+conv (x4 only, as the reference), pixelshuffle_aux (the
compressed-SR models: a bicubic branch and an LR auxiliary image; the output is the main image, which spandrel
returns), pixelshuffle_hf (a second body, `layers_hf`, adds a high-frequency image; the output is their sum, the
reference's second return value) and none (x1 restoration / JPEG).

Differences from the reference that do not change outputs:
- The shifted-window masks (`attn_mask`) are built at trace time for the traced size instead of being stored; the
  bridge adds the `img_size` ones to exports, bit-identical to torch's buffers.
- Built in eval mode; `model.train()` turns drop path on.
- One image out for pixelshuffle_hf (the reference returns (base, base + hf, hf)).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.attention import (Mlp, add_absolute_pos_embed, drop_path, from_windows, gather_bias, layer_norm,
                                   linear, relative_position_index, resi_conv, resolve_impl, run_block, to_windows,
                                   trace_shift_mask, window_attention)
from jaxsr.archs.common import (RGB_MEAN, Act, Buffer, LeakyReLU, Sequential, constructor_kwargs, conv, reflect_pad_to,
                                top_left, trunc_normal_002, variant_spec)
from jaxsr.archs.upsample import pixelshuffle, swinir_head, swinir_tail

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "pixelshuffle_aux", "pixelshuffle_hf", "")

# traiNNer-redux's named configurations (traiNNer/archs/swin2sr_arch.py), the authors' task families: s is the
# lightweight SR model, m the classical/compressed one, l the large real-world one.
VARIANTS = {
    "swin2sr_s": dict(embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=8, mlp_ratio=2.0,
                      upsampler="pixelshuffledirect", resi_connection="1conv"),
    "swin2sr_m": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2.0,
                      upsampler="pixelshuffle", resi_connection="1conv"),
    "swin2sr_l": dict(embed_dim=240, depths=[6] * 9, num_heads=[8] * 9, window_size=8, mlp_ratio=2.0,
                      upsampler="nearest+conv", resi_connection="3conv"),
}
# The fields every variant shares: the reference's defaults (img_size 64: the authors' and traiNNer-redux's LR patch)
DEFAULTS = dict(
    scale=4, in_ch=3, img_size=64, img_range=1.0, qkv_bias=True, patch_norm=True, ape=False, drop_path_rate=0.1,
    use_chk=False, attn_impl="auto",
)
DEFAULT_VARIANT = "swin2sr_m"
NUM_FEAT = 64  # the reference hard-codes the reconstruction width
LOGIT_MAX = math.log(1.0 / 0.01)  # SwinV2 clamps the learned logit scale at log(100)


def spec_for(variant: str, **overrides) -> dict:
    """A complete Swin2SR spec for a named variant ('swin2sr_s', 'swin2sr_m', 'swin2sr_l')."""
    return variant_spec("swin2sr", VARIANTS, DEFAULTS, variant, "Swin2SR", overrides)


def relative_coords_table(window) -> np.ndarray:
    """SwinV2's (1, 2w-1, 2w-1, 2) float32 input of the position-bias MLP: relative offsets (dy, dx) scaled to
    [-8, 8], then sign(t) * log2(|t| + 1) / 3 (the reference's buffer; files carry it and we use theirs)."""
    r = np.arange(-(window - 1), window, dtype=np.float32) / np.float32(window - 1) * np.float32(8)
    t = np.stack(np.meshgrid(r, r, indexing="ij"), axis=-1)[None]
    return (np.sign(t) * np.log2(np.abs(t) + np.float32(1)) / np.float32(3)).astype(np.float32)


def _normalize(t):
    """F.normalize(t, dim=-1): t / max(||t||, 1e-12), in float32."""
    t32 = t.astype(jnp.float32)
    return (t32 / jnp.maximum(jnp.sqrt(jnp.sum(t32 * t32, axis=-1, keepdims=True)), 1e-12)).astype(t.dtype)


class WindowAttention(nnx.Module):
    """SwinV2 window attention on the whole (B, H, W, C) map (qkv and proj act per token, so they run around the
    window partition; the cyclic shift happens in here)."""

    def __init__(self, dim, window_size, num_heads, qkv_bias, *, rngs, dtype, attn_impl):
        self.window_size, self.num_heads, self.dtype, self.attn_impl = window_size, num_heads, dtype, attn_impl
        self.logit_scale = nnx.Param(jnp.full((num_heads, 1, 1), math.log(10.0), jnp.float32))
        self.cpb_mlp = Sequential([linear(2, 512, rngs=rngs, dtype=dtype), Act("relu"),
                                   linear(512, num_heads, bias=False, rngs=rngs, dtype=dtype)])
        self.relative_coords_table = Buffer(jnp.asarray(relative_coords_table(window_size)))
        self.relative_position_index = Buffer(jnp.asarray(relative_position_index(window_size, window_size)))
        self.qkv = linear(dim, 3 * dim, bias=False, rngs=rngs, dtype=dtype)
        self.qkv_bias = qkv_bias
        if qkv_bias:  # the reference's qkv bias is (q_bias, 0, v_bias): keys get none
            self.q_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
            self.v_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)

    def position_bias(self):
        """(h, N, N): 16 * sigmoid of the MLP's table at the relative-position index."""
        table = self.cpb_mlp(self.relative_coords_table[...].astype(self.dtype)).reshape(-1, self.num_heads)
        return 16.0 * jax.nn.sigmoid(gather_bias(table.astype(jnp.float32), self.relative_position_index[...]))

    def __call__(self, x, shift=0):
        B, H, W, C = x.shape
        ws, h = self.window_size, self.num_heads
        mask = None
        if shift:
            x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
            mask = trace_shift_mask(H, W, ws, ws, shift, shift)
        qkv = self.qkv(x)
        if self.qkv_bias:
            qkv = qkv + jnp.concatenate([self.q_bias[...], jnp.zeros_like(self.v_bias[...]),
                                         self.v_bias[...]]).astype(qkv.dtype)
        qkv = to_windows(qkv, ws, ws)  # (B, nW, N, 3C): q | k | v
        q, k, v = (t.reshape(*t.shape[:3], h, C // h) for t in jnp.split(qkv, 3, axis=-1))
        scale = jnp.exp(jnp.minimum(self.logit_scale[...], LOGIT_MAX)).reshape(h, 1)
        q = (_normalize(q).astype(jnp.float32) * scale).astype(q.dtype)  # cosine logits times the head's scale
        out = window_attention(q, _normalize(k), v, self.position_bias(), mask, 1.0,
                               resolve_impl(self.attn_impl, self.dtype))
        out = self.proj(from_windows(out.reshape(*out.shape[:3], C), ws, ws, H, W))
        return jnp.roll(out, (shift, shift), axis=(1, 2)) if shift else out


class SwinTransformerBlock(nnx.Module):
    """SwinV2 block: post-norm residuals, x + drop_path(norm1(attn(x))), then x + drop_path(norm2(mlp(x)))."""

    def __init__(self, dim, num_heads, window_size, shift, mlp_ratio, qkv_bias, drop_path_rate, *, rngs, dtype,
                 attn_impl):
        self.shift = shift
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
        self.drop_path = drop_path(drop_path_rate, rngs)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = x + self.drop_path(self.norm1(self.attn(x, self.shift)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class BasicLayer(nnx.Module):
    def __init__(self, dim, depth, num_heads, window_size, shifts, mlp_ratio, qkv_bias, drop_paths, use_chk, *, rngs,
                 dtype, attn_impl):
        self.use_chk = use_chk
        self.blocks = nnx.List([
            SwinTransformerBlock(dim, num_heads, window_size, window_size // 2 if shifts and j % 2 else 0, mlp_ratio,
                                 qkv_bias, drop_paths[j], rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for j in range(depth)])

    def __call__(self, x):
        for blk in self.blocks:
            x = run_block(blk, x, remat=self.use_chk)
        return x


class PatchEmbed(nnx.Module):
    """Swin2SR's PatchEmbed at patch size 1: a 1x1 `proj` convolution, then (with patch_norm) a LayerNorm."""

    def __init__(self, dim, norm, *, rngs, dtype):
        self.proj = conv(dim, dim, 1, rngs=rngs, dtype=dtype)
        if norm:
            self.norm = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.has_norm = norm

    def __call__(self, x):
        x = self.proj(x)
        return self.norm(x) if self.has_norm else x


class RSTB(nnx.Module):
    """Residual Swin Transformer Block: SwinV2 blocks, a convolution and a 1x1 projection, around a residual."""

    def __init__(self, dim, depth, num_heads, window_size, shifts, mlp_ratio, qkv_bias, drop_paths, use_chk,
                 resi_connection, *, rngs, dtype, attn_impl):
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, shifts, mlp_ratio, qkv_bias, drop_paths,
                                         use_chk, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
        self.conv = resi_conv(dim, resi_connection, rngs=rngs, dtype=dtype)
        self.patch_embed = PatchEmbed(dim, False, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.patch_embed(self.conv(self.residual_group(x))) + x


def _cubic_matrix(n_in, n_out):
    """(n_out, n_in) float32 matrix of torch's F.interpolate(size=n_out, mode='bicubic', align_corners=False) along
    one axis: Keys' cubic (A = -0.75) at source x = (i + 0.5) * n_in / n_out - 0.5, taps clamped to the border.
    Built from index ramps, so n_in/n_out may be symbolic sizes (an ONNX trace)."""
    a = -0.75
    i = jnp.arange(n_out, dtype=jnp.float32)
    src = (i + 0.5) * (jnp.asarray(n_in, jnp.float32) / jnp.asarray(n_out, jnp.float32)) - 0.5
    last = jnp.asarray(n_in, jnp.int32) - 1
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), last)
    t = jnp.clip(src - i0.astype(jnp.float32), 0.0, 1.0)[:, None]

    def near(s):  # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s):  # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    w = jnp.concatenate([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)  # (n_out, 4)
    taps = jnp.clip(i0[:, None] + jnp.arange(-1, 3, dtype=jnp.int32)[None], 0, last)  # (n_out, 4)
    cols = jnp.arange(n_in, dtype=jnp.int32)
    return jnp.sum(jnp.where(taps[:, :, None] == cols[None, None], w[:, :, None], 0.0), axis=1)


def bicubic_resize(x, h, w):
    """NHWC x resized to (h, w) as torch's F.interpolate(mode='bicubic', align_corners=False) does, in float32."""
    mh, mw = _cubic_matrix(x.shape[1], h), _cubic_matrix(x.shape[2], w)
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,bhwc->bowc", mh, x.astype(jnp.float32), precision=hi)
    return jnp.einsum("pw,bowc->bopc", mw, y, precision=hi)


class Swin2SR(nnx.Module):
    """Swin2SR on NHWC images in [0, 1], any size. Built in eval mode; `model.train()` for drop path.

    `img_size` is the training patch: the reference registers the shift masks for it, and at img_size equal to the
    window its blocks do not shift (what spandrel builds for a file without stored masks).
    """

    def __init__(self, *, scale=4, in_ch=3, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8,
                 mlp_ratio=2.0, qkv_bias=True, img_size=64, img_range=1.0, upsampler="pixelshuffle",
                 resi_connection="1conv", patch_norm=True, ape=False, drop_path_rate=0.1, use_chk=False,
                 attn_impl="auto", rngs: nnx.Rngs, dtype=jnp.float32):
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown Swin2SR upsampler {upsampler!r} ({', '.join(u for u in UPSAMPLERS if u)}, "
                             "'' for none)")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        if img_size < window_size or img_size % window_size:
            raise ValueError(f"img_size ({img_size}) must be a multiple of window_size ({window_size}); at img_size "
                             "equal to the window the blocks do not shift, as in the reference")
        if (upsampler == "") != (scale == 1):
            raise ValueError(f"Swin2SR is x1 exactly without an upsampler (upsampler {upsampler!r}, scale {scale})")
        if upsampler == "nearest+conv" and scale != 4:
            raise ValueError(f"the nearest+conv upsampler is x4 only (as in the reference), not x{scale}")
        if upsampler == "pixelshuffle_aux" and in_ch != 3:
            raise ValueError(f"pixelshuffle_aux needs in_ch 3 (the reference's conv_after_aux takes 3 channels), "
                             f"not {in_ch}")
        self.scale, self.in_ch, self.upsampler, self.ape = scale, in_ch, upsampler, ape
        # windows are anchored at the image origin: tiles equal the whole image only on the window grid. Callers
        # (jaxsr.upscale, the ONNX graph) reflect-pad inputs to it, as the module itself does
        self.size_multiple = self.tile_multiple = window_size
        self.img_size, self.img_range, self.dtype = img_size, float(img_range), dtype
        self.mean = RGB_MEAN if in_ch == 3 else (0.0,) * in_ch
        C, nf = embed_dim, NUM_FEAT
        self.conv_first = conv(in_ch, C, 3, rngs=rngs, dtype=dtype)
        self.patch_embed = PatchEmbed(C, patch_norm, rngs=rngs, dtype=dtype)
        if ape:
            self.absolute_pos_embed = nnx.Param(trunc_normal_002(rngs.params(), (1, img_size * img_size, C)))
        dpr = np.linspace(0, drop_path_rate, int(sum(depths)), dtype=np.float32).tolist()
        offs = np.cumsum([0, *depths]).tolist()
        shifts = img_size > window_size

        def body():
            return nnx.List([
                RSTB(C, depths[i], num_heads[i], window_size, shifts, mlp_ratio, qkv_bias, dpr[offs[i]:offs[i + 1]],
                     use_chk, resi_connection, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
                for i in range(len(depths))])

        self.layers = body()
        if upsampler == "pixelshuffle_hf":
            self.layers_hf = body()
        self.norm = layer_norm(C, rngs=rngs, dtype=dtype)
        self.conv_after_body = resi_conv(C, resi_connection, rngs=rngs, dtype=dtype)

        def conv_lrelu(cin, cout):
            return Sequential([conv(cin, cout, 3, rngs=rngs, dtype=dtype), LeakyReLU(0.01)])

        # aux and hf are SwinIR's pixelshuffle head plus their own branches
        swinir_head(self, "pixelshuffle" if upsampler.startswith("pixelshuffle_") else upsampler, scale, C, in_ch,
                    rngs=rngs, dtype=dtype, num_feat=nf)
        if upsampler == "pixelshuffle_aux":
            self.conv_bicubic = conv(in_ch, nf, 3, rngs=rngs, dtype=dtype)
            self.conv_aux = conv(nf, in_ch, 3, rngs=rngs, dtype=dtype)
            self.conv_after_aux = conv_lrelu(3, nf)
        if upsampler == "pixelshuffle_hf":
            self.upsample_hf = pixelshuffle(scale, nf, rngs=rngs, dtype=dtype)
            self.conv_first_hf = conv_lrelu(nf, C)
            self.conv_after_body_hf = conv(C, C, 3, rngs=rngs, dtype=dtype)
            self.conv_before_upsample_hf = conv_lrelu(C, nf)
            self.conv_last_hf = conv(nf, in_ch, 3, rngs=rngs, dtype=dtype)
        self.eval()

    def forward_features(self, x, layers):
        x = self.patch_embed(x)
        if self.ape:
            x = add_absolute_pos_embed(x, self.absolute_pos_embed[...], self.img_size)
        for layer in layers:
            x = layer(x)
        return self.norm(x)

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1], any H, W -> (B, scale*H, scale*W, in_ch) float32."""
        H, W = x.shape[1:3]
        s = self.scale
        x = reflect_pad_to(x.astype(jnp.float32), self.tile_multiple)
        mean = jnp.asarray(self.mean, jnp.float32)
        x = (x - mean) * self.img_range
        inp = x
        x = self.conv_first(x.astype(self.dtype))
        x = self.conv_after_body(self.forward_features(x, self.layers)) + x
        if self.upsampler == "pixelshuffle_aux":
            # the bicubic branch resizes the padded input straight to the output size, as the reference does
            bicubic = self.conv_bicubic(bicubic_resize(inp, H * s, W * s).astype(self.dtype))
            x = self.conv_after_aux(self.conv_aux(self.conv_before_upsample(x)))
            x = self.conv_last(top_left(self.upsample(x), H * s, W * s) + bicubic)  # cropped before conv_last
        elif self.upsampler == "pixelshuffle_hf":
            before = self.conv_before_upsample(x)
            out = self.conv_last(self.upsample(before))
            hf = self.conv_first_hf(before)
            hf = self.conv_after_body_hf(self.forward_features(hf, self.layers_hf)) + hf
            x = out + self.conv_last_hf(self.upsample_hf(self.conv_before_upsample_hf(hf)))
        else:
            x = swinir_tail(self, x, inp, s)
        x = x.astype(jnp.float32) / self.img_range + mean
        return top_left(x, H * s, W * s)


def build(spec: dict, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> Swin2SR:
    """A Swin2SR from a spec: the bridge's (all fields) or a variant plus overrides ({'variant': 'swin2sr_s', ...})."""
    kw = constructor_kwargs(spec, VARIANTS, DEFAULTS, DEFAULT_VARIANT, "Swin2SR", ("depths", "num_heads"))
    return Swin2SR(**kw, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
