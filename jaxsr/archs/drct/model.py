"""DRCT (Hsu, Lee and Chou, "DRCT: Saving Image Super-resolution away from Information Bottleneck", CVPRW 2024,
arXiv 2404.00722) in Flax NNX, numerically equal to the PyTorch reference (spandrel 0.4.2
`architectures/DRCT/__arch/drct_arch.py`, the authors' ming053l/DRCT `drct/archs/DRCT_arch.py`).

SwinIR's shallow/deep/reconstruction layout, with each residual group a residual dense group (RDG): five Swin
blocks whose inputs are the dense concatenation of the group input and every earlier block's output, each block's
output squeezed to `gc` channels by a 1x1 `adjust` conv (LeakyReLU 0.2, none after the fifth, which maps back to
embed_dim), and `x + 0.2 * x5`. Block k (1..5) of a group works on embed_dim + (k-1) gc channels with
num_heads - ((embed_dim + (k-1) gc) mod num_heads) heads (the reference's rule), shifts its windows on blocks 2 and
4, and has MLP ratio `mlp_ratio` (blocks 1-3) or 1 (blocks 4-5); all five take the drop-path rate of the group's
first entry in the stochastic-depth schedule. The Swin blocks are SwinIR's (`jaxsr/archs/swinir/model.py`); the
windows, masks and attention kernel come from `jaxsr/archs/attention.py`.

Differences from the reference that do not change outputs:
- the shifted-window masks are built at trace time for the traced size (the bridge adds the reference's `attn_mask`
  buffers at `img_size` to exports);
- the reference's forward does not pad: spandrel pads inputs to multiples of 16 (reflect, its size requirement)
  and crops the output. This module reflect-pads to `size_multiple` = lcm(16, window_size) and crops, which is
  spandrel's padding wherever spandrel's forward runs (a window dividing 16, as in every released DRCT);
- built in eval mode; `model.train()` turns drop path on; `use_chk` recomputes each Swin block in the backward pass.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.attention import PatchEmbed, add_absolute_pos_embed, layer_norm, resi_conv, run_block
from jaxsr.archs.common import (RGB_MEAN, constructor_kwargs, conv, lrelu, reflect_pad_to,
                                trunc_normal_002, variant_spec)
from jaxsr.archs.swinir.model import SwinTransformerBlock
from jaxsr.archs.upsample import swinir_head, swinir_tail

# Named configurations: the authors' DRCT and DRCT-L (options/train/*.yml of ming053l/DRCT), and traiNNer-redux's
# drct_xl. Fields not given take DEFAULTS.
VARIANTS = {
    "drct": dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6),
    "drct_l": dict(embed_dim=180, depths=[6] * 12, num_heads=[6] * 12),
    "drct_xl": dict(embed_dim=180, depths=[6] * 14, num_heads=[6] * 14),
}
# The fields every variant shares, the reference's values (spandrel assumes img_range 1: the keys do not tell it)
DEFAULTS = dict(
    scale=4, in_ch=3, window_size=16, img_size=64, img_range=1.0, mlp_ratio=2.0, gc=32, qkv_bias=True,
    resi_connection="1conv", patch_norm=True, ape=False, drop_path_rate=0.1, use_chk=False, attn_impl="auto",
)
DEFAULT_VARIANT = "drct"  # what a spec without the variant's fields builds
NUM_FEAT = 64  # the reference hard-codes the reconstruction width
SPANDREL_MULTIPLE = 16  # spandrel's size requirement: it pads inputs to multiples of 16 before the forward


def spec_for(variant: str, **overrides) -> dict:
    """A complete DRCT spec for a named variant ('drct', 'drct_l', 'drct_xl'), with overrides."""
    return variant_spec("drct", VARIANTS, DEFAULTS, variant, "DRCT", overrides)


def block_dims(embed_dim, num_heads, gc):
    """[(channels, heads)] of an RDG's five Swin blocks, as the reference sizes them."""
    out = [(embed_dim, num_heads)]
    for k in range(1, 5):
        c = embed_dim + k * gc
        out.append((c, num_heads - c % num_heads))
    return out


class RDG(nnx.Module):
    """Residual dense group: swin_k on [x, x1, ..., x_{k-1}], adjust_k to gc channels; x + 0.2 * x5."""

    def __init__(self, dim, num_heads, window_size, shift, mlp_ratio, qkv_bias, gc, drop_path_rate, use_chk, *, rngs,
                 dtype, attn_impl):
        self.use_chk = use_chk
        for k, (c, heads) in enumerate(block_dims(dim, num_heads, gc), start=1):
            setattr(self, f"swin{k}", SwinTransformerBlock(
                c, heads, window_size, shift if k in (2, 4) else 0, mlp_ratio if k <= 3 else 1, qkv_bias,
                drop_path_rate, rngs=rngs, dtype=dtype, attn_impl=attn_impl))
            setattr(self, f"adjust{k}", conv(c, gc if k < 5 else dim, 1, rngs=rngs, dtype=dtype))

    def __call__(self, x):
        feats = [x]
        for k in range(1, 6):
            y = run_block(getattr(self, f"swin{k}"), jnp.concatenate(feats, -1) if k > 1 else x, remat=self.use_chk)
            y = getattr(self, f"adjust{k}")(y)
            feats.append(lrelu(y, 0.2) if k < 5 else y)
        return feats[-1] * 0.2 + x


class DRCT(nnx.Module):
    """DRCT on NHWC images in [0, 1], any size. Built in eval mode; `model.train()` for drop path."""

    def __init__(self, *, scale=4, in_ch=3, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=16,
                 img_size=64, img_range=1.0, mlp_ratio=2.0, gc=32, qkv_bias=True, resi_connection="1conv",
                 patch_norm=True, ape=False, drop_path_rate=0.1, use_chk=False, attn_impl="auto", rngs: nnx.Rngs,
                 dtype=jnp.float32):
        if resi_connection not in ("1conv", "identity"):
            raise ValueError(f"DRCT's resi_connection is 1conv or identity, not {resi_connection!r}")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        if img_size < window_size or img_size % window_size:
            raise ValueError(f"img_size ({img_size}) must be a multiple of window_size ({window_size}) (the reference "
                             "shrinks the window to smaller sizes: give window_size=img_size for that model)")
        for h in num_heads:
            bad = [c for c, heads in block_dims(embed_dim, h, gc) if c % heads]
            if bad:
                raise ValueError(f"DRCT with embed_dim {embed_dim}, gc {gc} and {h} heads has blocks of {bad} channels "
                                 "that their head count does not divide (the reference cannot run it): change gc")
        self.scale, self.in_ch, self.window_size = scale, in_ch, window_size
        # spandrel pads to 16 and the windows must tile the padded map; windows are anchored at the origin, so tiles
        # equal the whole image on this grid
        self.size_multiple = self.tile_multiple = math.lcm(SPANDREL_MULTIPLE, window_size)
        self.img_size, self.img_range, self.ape, self.dtype = img_size, float(img_range), ape, dtype
        self.mean = RGB_MEAN if in_ch == 3 else (0.0,) * in_ch
        shift = window_size // 2 if img_size > window_size else 0  # the reference drops the shift at img_size == window
        C = embed_dim
        self.conv_first = conv(in_ch, C, 3, rngs=rngs, dtype=dtype)
        self.patch_embed = PatchEmbed(C, patch_norm, rngs=rngs, dtype=dtype)
        if ape:
            self.absolute_pos_embed = nnx.Param(trunc_normal_002(rngs.params(), (1, img_size * img_size, C)))
        dpr = np.linspace(0, drop_path_rate, int(sum(depths)), dtype=np.float32).tolist()
        offs = np.cumsum([0, *depths]).tolist()
        self.layers = nnx.List([
            RDG(C, num_heads[i], window_size, shift, mlp_ratio, qkv_bias, gc, dpr[offs[i]], use_chk, rngs=rngs,
                dtype=dtype, attn_impl=attn_impl)
            for i in range(len(depths))])
        self.norm = layer_norm(C, rngs=rngs, dtype=dtype)
        self.conv_after_body = resi_conv(C, resi_connection, rngs=rngs, dtype=dtype)
        self.upsampler = "pixelshuffle"  # SwinIR's head, the one this family has
        swinir_head(self, self.upsampler, scale, C, in_ch, rngs=rngs, dtype=dtype, num_feat=NUM_FEAT)
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
        x = reflect_pad_to(x.astype(jnp.float32), self.size_multiple)
        mean = jnp.asarray(self.mean, jnp.float32)
        x = self.conv_first(((x - mean) * self.img_range).astype(self.dtype))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = swinir_tail(self, x, None, self.scale)
        x = x.astype(jnp.float32) / self.img_range + mean
        return x[:, : H * self.scale, : W * self.scale]


def build(spec: dict, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> DRCT:
    """A DRCT from a spec: the bridge's (all fields) or a variant plus overrides ({'variant': 'drct_l', ...})."""
    kw = constructor_kwargs(spec, VARIANTS, DEFAULTS, DEFAULT_VARIANT, "DRCT", ("depths", "num_heads"))
    return DRCT(**kw, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
