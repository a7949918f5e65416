"""SwinIR (Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021, arXiv 2108.10257) in Flax
NNX, numerically equal to the PyTorch reference (spandrel 0.4.2 `architectures/SwinIR/__arch/SwinIR.py`, the
authors' JingyunLiang/SwinIR `models/network_swinir.py` plus spandrel's `start_unshuffle`).

The module tree mirrors the reference attribute for attribute (`layers.0.residual_group.blocks.1.attn.qkv.weight`,
`conv_after_body.4.weight`, ...), so `archs/bridge.py` maps it mechanically; the windows, masks, attention kernel
and layers come from `jaxsr/archs/attention.py` (shared with DAT and HAT).

Differences from the reference that do not change outputs:
- The shifted-window masks (`attn_mask`) are built at trace time for the traced size instead of being stored;
  the bridge adds the `img_size` ones to exports (`masks_for`), bit-identical to torch's buffers.
- qkv/proj run on the whole map around the window partition (they act per token), in (B, H, W, C).
- Built in eval mode; `model.train()` turns drop path on.
- With `start_unshuffle` > 1 the input is padded to a multiple of window * start_unshuffle (the reference pads to
  the window only and fails where the unshuffled map is not a window multiple) and the output is cropped to the
  input size times `scale` (the reference returns the padded size there).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.attention import (Mlp, PatchEmbed, WindowAttention, add_absolute_pos_embed, drop_path, layer_norm,
                                   resi_conv, run_block)
from jaxsr.archs.common import (RGB_MEAN, constructor_kwargs, conv, pixel_unshuffle, reflect_pad_to, trunc_normal_002,
                                variant_spec)
from jaxsr.archs.upsample import swinir_head, swinir_tail

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")

# Named configurations: the authors' main_test_swinir.py (JingyunLiang/SwinIR), one per task family. img_size is
# the training LR patch (48 for the DIV2K classical models, 64 for DF2K; 128 for denoising, 126 for JPEG).
VARIANTS = {
    "swinir_m": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2.0,
                     upsampler="pixelshuffle", resi_connection="1conv"),  # classical SR
    "swinir_s": dict(embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=8, mlp_ratio=2.0,
                     upsampler="pixelshuffledirect", resi_connection="1conv"),  # lightweight SR
    "swinir_m_real": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2.0,
                          upsampler="nearest+conv", resi_connection="1conv"),  # real-world SR
    "swinir_l_real": dict(embed_dim=240, depths=[6] * 9, num_heads=[8] * 9, window_size=8, mlp_ratio=2.0,
                          upsampler="nearest+conv", resi_connection="3conv"),  # real-world SR, large
}
# The fields every variant shares, the reference's defaults (spandrel assumes img_size 64, qkv_bias, patch_norm and no
# ape where the keys do not tell)
DEFAULTS = dict(
    scale=4, in_ch=3, img_size=64, img_range=1.0, qkv_bias=True, patch_norm=True, ape=False, start_unshuffle=1,
    drop_path_rate=0.1, use_chk=False, attn_impl="auto",
)
DEFAULT_VARIANT = "swinir_m"  # what a spec without the variant's fields builds
NUM_FEAT = 64  # the reference hard-codes the reconstruction width


def spec_for(variant: str, **overrides) -> dict:
    """A complete SwinIR spec for a named variant ('swinir_m', 'swinir_s', 'swinir_m_real', 'swinir_l_real')."""
    return variant_spec("swinir", VARIANTS, DEFAULTS, variant, "SwinIR", overrides)


class SwinTransformerBlock(nnx.Module):
    """(S)W-MSA + MLP with pre-norms and drop path; odd blocks shift the windows by window_size // 2."""

    def __init__(self, dim, num_heads, window_size, shift, mlp_ratio, qkv_bias, drop_path_rate, *, rngs, dtype,
                 attn_impl):
        self.shift = shift
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias, rngs=rngs, dtype=dtype,
                                    attn_impl=attn_impl)
        self.drop_path = drop_path(drop_path_rate, rngs)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x), self.shift))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nnx.Module):
    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, drop_paths, use_chk, *, rngs, dtype,
                 attn_impl):
        self.use_chk = use_chk
        self.blocks = nnx.List([
            SwinTransformerBlock(dim, num_heads, window_size, 0 if j % 2 == 0 else window_size // 2, mlp_ratio,
                                 qkv_bias, drop_paths[j], rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for j in range(depth)])

    def __call__(self, x):
        for blk in self.blocks:
            x = run_block(blk, x, remat=self.use_chk)
        return x


class RSTB(nnx.Module):
    """Residual Swin Transformer Block: Swin blocks, then a convolution, around a residual."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, drop_paths, use_chk,
                 resi_connection, *, rngs, dtype, attn_impl):
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, drop_paths, use_chk,
                                         rngs=rngs, dtype=dtype, attn_impl=attn_impl)
        self.conv = resi_conv(dim, resi_connection, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.conv(self.residual_group(x)) + x


class SwinIR(nnx.Module):
    """SwinIR on NHWC images in [0, 1], any size. Built in eval mode; `model.train()` for drop path.

    `scale` is the output/input size ratio: the upsampler's factor divided by `start_unshuffle`.
    """

    def __init__(self, *, scale=4, in_ch=3, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8,
                 mlp_ratio=2.0, qkv_bias=True, img_size=64, img_range=1.0, upsampler="pixelshuffle",
                 resi_connection="1conv", patch_norm=True, ape=False, start_unshuffle=1, drop_path_rate=0.1,
                 use_chk=False, attn_impl="auto", rngs: nnx.Rngs, dtype=jnp.float32):
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown SwinIR upsampler {upsampler!r} (pixelshuffle, pixelshuffledirect, nearest+conv, "
                             "'' for none)")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        if img_size <= window_size or img_size % window_size:
            raise ValueError(f"img_size ({img_size}) must be a multiple of window_size ({window_size}) and larger "
                             "(the reference drops the shifts at smaller sizes)")
        self.up = up = scale * start_unshuffle  # the upsampler's own factor
        if start_unshuffle > 1 and upsampler not in ("pixelshuffle", "nearest+conv"):
            raise ValueError("start_unshuffle > 1 needs the pixelshuffle or nearest+conv upsampler (as in spandrel)")
        if upsampler == "" and up != 1:
            raise ValueError(f"SwinIR without an upsampler is x1, not x{scale}")
        if upsampler == "nearest+conv" and up not in (2, 4, 8):
            raise ValueError(f"the nearest+conv upsampler supports x2, x4 and x8, not x{up}")
        self.scale, self.in_ch = scale, in_ch
        self.start_unshuffle = start_unshuffle
        # windows are anchored at the image origin: tiles equal the whole image only on the window grid. Callers
        # (jaxsr.upscale, the ONNX graph) reflect-pad inputs to it, as the module itself would, so its own padding
        # is a no-op there and exported graphs keep their sizes symbolic
        self.size_multiple = self.tile_multiple = window_size * start_unshuffle
        self.img_size, self.img_range, self.upsampler, self.ape = img_size, float(img_range), upsampler, ape
        self.dtype = dtype
        self.mean = RGB_MEAN if in_ch == 3 else (0.0,) * in_ch
        C = embed_dim
        self.conv_first = conv(in_ch * start_unshuffle ** 2, C, 3, rngs=rngs, dtype=dtype)
        self.patch_embed = PatchEmbed(C, patch_norm, rngs=rngs, dtype=dtype)
        if ape:
            self.absolute_pos_embed = nnx.Param(trunc_normal_002(rngs.params(), (1, img_size * img_size, C)))
        dpr = np.linspace(0, drop_path_rate, int(sum(depths)), dtype=np.float32).tolist()
        offs = np.cumsum([0, *depths]).tolist()
        self.layers = nnx.List([
            RSTB(C, depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias, dpr[offs[i]:offs[i + 1]], use_chk,
                 resi_connection, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for i in range(len(depths))])
        self.norm = layer_norm(C, rngs=rngs, dtype=dtype)
        self.conv_after_body = resi_conv(C, resi_connection, rngs=rngs, dtype=dtype)
        swinir_head(self, upsampler, up, C, in_ch, rngs=rngs, dtype=dtype, num_feat=NUM_FEAT)
        self.eval()

    def forward_features(self, x):
        x = self.patch_embed(x)
        if self.ape:
            x = add_absolute_pos_embed(x, self.absolute_pos_embed[...], self.img_size)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1], any H, W -> (B, scale*H, scale*W, in_ch) float32."""
        H, W = x.shape[1:3]
        x = reflect_pad_to(x.astype(jnp.float32), self.tile_multiple)
        mean = jnp.asarray(self.mean, jnp.float32)
        x = (x - mean) * self.img_range
        if self.start_unshuffle > 1:
            x = pixel_unshuffle(x, self.start_unshuffle)
        inp = x
        x = self.conv_first(x.astype(self.dtype))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = swinir_tail(self, x, inp, self.up)
        x = x.astype(jnp.float32) / self.img_range + mean
        return x[:, : H * self.scale, : W * self.scale]


def build(spec: dict, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> SwinIR:
    """A SwinIR from a spec: the bridge's (all fields) or a variant plus overrides ({'variant': 'swinir_s', ...})."""
    kw = constructor_kwargs(spec, VARIANTS, DEFAULTS, DEFAULT_VARIANT, "SwinIR", ("depths", "num_heads"))
    return SwinIR(**kw, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
