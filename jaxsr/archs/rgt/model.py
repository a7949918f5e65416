"""RGT (Recursive Generalization Transformer, Chen et al., ICLR 2024, arXiv 2303.06373) in Flax NNX, numerically equal
to the PyTorch reference (spandrel 0.4.2 `architectures/RGT/__arch/rgt.py`, the authors' zhengchen1999/RGT).

Each residual group alternates two blocks: even blocks are rectangle-window self-attention (L-SA: DAT's two
half-channel window branches, (split[0], split[1]) and the transpose, with the same shift rule, plus a depthwise
conv of v), odd blocks are recursive-generalization self-attention (RG-SA: the map is shrunk by a stride-4
depthwise conv applied `recursions(H, W)` times, then every token cross-attends to that small map). Both are
followed by DAT's spatial-gate feed-forward, and each block adds `gamma * input` at its end (the paper's HAI).
The module tree mirrors the reference attribute for attribute (`layers.0.blocks.1.attn.reduction1.weight`, ...),
so `archs/bridge.py` is mechanical; the window branches, the position-bias MLP and the feed-forward are DAT's
modules (`archs/dat/model.py`), the padding/shift/mask plumbing is `attention.rect_window_branches`.

Differences from the reference that do not change outputs: the shift masks are built at trace time for the traced
size (the bridge exports the reference's `attn_mask_0/1` buffers, always 64 px); tokens stay (B, H, W, C).

RG-SA recurses by another rule in training than in eval (as the reference, whose `self.training` picks it), so
`model.train()` changes the function besides turning drop path on; eval needs sides of at least 16 px. Its
attention spans the whole (reduced) image: tiled runs are close to the whole-image one, never equal.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.attention import drop_path, layer_norm, linear, rect_window_branches, resi_conv, run_block
from jaxsr.archs.common import (RGB_MEAN, Act, Sequential, constructor_kwargs, conv, precision,
                                variant_spec)
from jaxsr.archs.dat.model import SGFN, SpatialAttention, shifted
from jaxsr.archs.upsample import swinir_head, swinir_tail

# The authors' options/Test/test_RGT_x4.yml and test_RGT_S_x4.yml (traiNNer-redux's rgt and rgt_s). Fields not
# given take DEFAULTS.
VARIANTS = {
    "rgt": dict(embed_dim=180, depth=[6] * 8, num_heads=[6] * 8, mlp_ratio=2.0, split_size=[8, 32], c_ratio=0.5),
    "rgt_s": dict(embed_dim=180, depth=[6] * 6, num_heads=[6] * 6, mlp_ratio=2.0, split_size=[8, 32], c_ratio=0.5),
}
# The fields every variant shares, the reference's defaults (spandrel assumes img_range 1: the keys do not tell it).
# There is no img_size: the reference takes one but never passes it to its blocks, which store their shift masks at
# MASK_SIZE whatever it is.
DEFAULTS = dict(
    scale=4, in_ch=3, img_range=1.0, qkv_bias=True, resi_connection="1conv", drop_path_rate=0.1, use_chk=False,
    attn_impl="auto",
)
DEFAULT_VARIANT = "rgt"
NUM_FEAT = 64  # the reconstruction width, fixed in the reference
LAYERSCALE = 1e-4  # gamma's initial value (the reference's layerscale_value)
MASK_SIZE = 64  # the side of the shift masks the reference registers (its blocks' `reso` default)


def spec_for(variant: str, **overrides) -> dict:
    """A complete RGT spec for a named variant ('rgt', 'rgt_s'), with overrides."""
    return variant_spec("rgt", VARIANTS, DEFAULTS, variant, "RGT", overrides)


def recursions(H, W, training):
    """How many times RG-SA applies its stride-4 reduction to an H x W map: the reference's rule (int of a float
    log4, as it computes it), at least 2 in eval; sides too small for it are refused here rather than by a math
    domain error or an empty convolution."""
    if not (isinstance(H, int) and isinstance(W, int)):
        raise TypeError("RGT's recursion count depends on the input size: it needs concrete sizes")
    least = 4 if training else 16
    if min(H, W) < least:
        mode = " in training" if training else ""
        raise ValueError(f"RGT needs inputs of at least {least}x{least} px{mode} (got {H}x{W}); pad the image or use "
                         "larger crops")
    t = max(int(math.log(H // least, 4)), int(math.log(W // least, 4)))
    t = t if training else max(t, 2)
    if min(H, W) // 4 ** t == 0:
        raise ValueError(f"RGT cannot reduce a {H}x{W} map {t} times by 4 (the reference fails too); use a less "
                         "elongated input")
    return t


class L_SA(nnx.Module):
    """Rectangle-window self-attention: DAT's two half-channel window branches (shifted by the reference's rule) plus
    a depthwise 3x3 conv of v, then the projection."""

    def __init__(self, dim, num_heads, *, split_size, qkv_bias, rs_id, idx, rngs, dtype=jnp.float32, attn_impl="auto"):
        self.split_size = tuple(split_size)
        self.shifted = shifted(rs_id, idx)
        self.qkv = linear(dim, 3 * dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)
        self.attns = nnx.List([SpatialAttention(dim // 2, i, split_size, num_heads // 2, rngs=rngs, dtype=dtype,
                                                attn_impl=attn_impl) for i in range(2)])
        self.get_v = conv(dim, dim, 3, groups=dim, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        C = x.shape[-1]
        qkv = self.qkv(x)  # (B, H, W, 3C): q | k | v
        attened = rect_window_branches(qkv, self.attns, self.split_size, self.shifted)
        return self.proj(attened + self.get_v(qkv[..., 2 * C:]))


class RG_SA(nnx.Module):
    """Recursive-generalization self-attention: every token's query (c_ratio * dim wide) attends to the keys of the
    map shrunk by recursive stride-4 depthwise convs; the values get a depthwise 3x3 conv (CPE) on that small map."""

    def __init__(self, dim, num_heads, *, qkv_bias, c_ratio, rngs, dtype=jnp.float32):
        self.num_heads = num_heads
        self.cr = int(dim * c_ratio)
        self.scale = (dim // num_heads * c_ratio) ** -0.5
        self.dtype = dtype
        self.deterministic = True  # model.train() sets it False: the training recursion rule (and drop path)
        self.reduction1 = conv(dim, dim, 4, stride=4, padding=0, groups=dim, rngs=rngs, dtype=dtype)
        self.dwconv = conv(dim, dim, 3, groups=dim, rngs=rngs, dtype=dtype)
        self.conv = conv(dim, self.cr, 1, rngs=rngs, dtype=dtype)
        self.norm_act = Sequential([layer_norm(self.cr, rngs=rngs, dtype=dtype), Act("gelu")])
        self.q = linear(dim, self.cr, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.k = linear(self.cr, self.cr, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.v = linear(self.cr, dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.cpe = conv(dim, dim, 3, groups=dim, rngs=rngs, dtype=dtype)
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        B, H, W, C = x.shape
        h = self.num_heads
        r = x
        for _ in range(recursions(H, W, not self.deterministic)):
            r = self.reduction1(r)
        r = self.norm_act(self.conv(self.dwconv(r)))  # (B, h', w', cr)
        hr, wr = r.shape[1:3]
        q = self.q(x).reshape(B, H * W, h, self.cr // h)
        k = self.k(r).reshape(B, hr * wr, h, self.cr // h)
        v = self.v(r)  # (B, h', w', C), heads side by side in the channels
        v = (v + self.cpe(v)).reshape(B, hr * wr, h, C // h)
        prec = precision(self.dtype)
        logits = jnp.einsum("bnhd,bmhd->bhnm", q, k, preferred_element_type=jnp.float32, precision=prec) * self.scale
        p = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhnm,bmhd->bnhd", p, v, precision=prec)
        return self.proj(out.reshape(B, H, W, C))


class Block(nnx.Module):
    """x + drop_path(attn(norm1 x)), + drop_path(mlp(norm2 x)), + gamma * the block's input (HAI)."""

    def __init__(self, dim, num_heads, *, mlp_ratio, qkv_bias, drop_path_rate, rs_id, idx, split_size, c_ratio, rngs,
                 dtype=jnp.float32, attn_impl="auto"):
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        if idx % 2 == 0:
            self.attn = L_SA(dim, num_heads, split_size=split_size, qkv_bias=qkv_bias, rs_id=rs_id, idx=idx, rngs=rngs,
                             dtype=dtype, attn_impl=attn_impl)
        else:
            self.attn = RG_SA(dim, num_heads, qkv_bias=qkv_bias, c_ratio=c_ratio, rngs=rngs, dtype=dtype)
        self.drop_path = drop_path(drop_path_rate, rngs)
        self.mlp = SGFN(dim, int(dim * mlp_ratio), rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.gamma = nnx.Param(jnp.full((dim,), LAYERSCALE, jnp.float32))

    def __call__(self, x):
        res = x
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x + res * self.gamma[...].astype(x.dtype)


class ResidualGroup(nnx.Module):
    def __init__(self, dim, num_heads, depth, *, mlp_ratio, qkv_bias, drop_paths, rs_id, split_size, c_ratio,
                 resi_connection, use_chk, rngs, dtype=jnp.float32, attn_impl="auto"):
        self.use_chk = use_chk
        self.blocks = nnx.List([
            Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path_rate=drop_paths[j], rs_id=rs_id,
                  idx=j, split_size=split_size, c_ratio=c_ratio, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for j in range(depth)])
        self.conv = resi_conv(dim, resi_connection, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        res = x
        for blk in self.blocks:
            x = run_block(blk, x, remat=self.use_chk)
        return res + self.conv(x)


def _check(embed_dim, depth, num_heads, mlp_ratio, split_size, c_ratio, resi_connection):
    """The shapes the reference can build, refused by name (it fails later with a reshape error)."""
    if len(depth) != len(num_heads):
        raise ValueError(f"depth {list(depth)} and num_heads {list(num_heads)} must have the same length")
    if resi_connection not in ("1conv", "3conv"):
        raise ValueError(f"RGT's resi_connection is 1conv or 3conv, not {resi_connection!r}")
    if len(split_size) != 2 or min(split_size) < 2:
        raise ValueError(f"split_size must be two window sides of at least 2, got {list(split_size)}")
    cr = int(embed_dim * c_ratio)
    for h in num_heads:
        if embed_dim % 2 or h < 2 or (embed_dim // 2) % (h // 2) or embed_dim % h or cr % h:
            raise ValueError(f"RGT needs an even embed_dim whose halves split into num_heads // 2 heads, and embed_dim "
                             f"and int(embed_dim * c_ratio) = {cr} divisible by num_heads; got embed_dim {embed_dim}, "
                             f"num_heads {h}")
    if int(embed_dim * mlp_ratio) % 2:
        raise ValueError(f"int(embed_dim * mlp_ratio) = {int(embed_dim * mlp_ratio)} must be even (the gate halves it)")
    if any(shifted(i, j) for i, d in enumerate(depth) for j in range(0, d, 2)) and (
            MASK_SIZE % split_size[0] or MASK_SIZE % split_size[1]):
        raise ValueError(f"with shifted windows the split sizes must divide {MASK_SIZE}, not {list(split_size)} (the "
                         f"reference builds its shift masks at {MASK_SIZE} px and fails otherwise)")


class RGT(nnx.Module):
    """Recursive Generalization Transformer on NHWC images in [0, 1]. Built in eval mode; `model.train()` for training
    (drop path, and RG-SA's training recursion rule)."""

    def __init__(self, *, scale=4, in_ch=3, embed_dim=180, depth=(6,) * 8, num_heads=(6,) * 8, mlp_ratio=2.0,
                 split_size=(8, 32), c_ratio=0.5, qkv_bias=True, img_range=1.0, resi_connection="1conv",
                 drop_path_rate=0.1, use_chk=False, attn_impl="auto", rngs: nnx.Rngs, dtype=jnp.float32):
        _check(embed_dim, depth, num_heads, mlp_ratio, split_size, c_ratio, resi_connection)
        self.scale = scale
        self.in_ch = in_ch
        self.size_multiple = 1  # any size (>= 16): the window attention pads itself, RG-SA takes any size
        # tiles start on the window grid and on RG-SA's 16 px reduction cells (global attention: never exact)
        self.tile_multiple = math.lcm(max(split_size), 16)
        self.img_range = float(img_range)
        self.dtype = dtype
        self.mean = RGB_MEAN if in_ch == 3 else (0.0,) * in_ch
        C = embed_dim
        self.conv_first = conv(in_ch, C, 3, rngs=rngs, dtype=dtype)
        self.before_RG = Sequential([Act("identity"), layer_norm(C, rngs=rngs, dtype=dtype)])
        dpr = np.linspace(0, drop_path_rate, int(sum(depth)), dtype=np.float32).tolist()
        offs = np.cumsum([0, *depth]).tolist()
        self.layers = nnx.List([
            ResidualGroup(C, num_heads[i], depth[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                          drop_paths=dpr[offs[i]:offs[i + 1]], rs_id=i, split_size=split_size, c_ratio=c_ratio,
                          resi_connection=resi_connection, use_chk=use_chk, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for i in range(len(depth))])
        self.norm = layer_norm(C, rngs=rngs, dtype=dtype)
        self.conv_after_body = resi_conv(C, resi_connection, rngs=rngs, dtype=dtype)
        self.upsampler = "pixelshuffle"  # SwinIR's head, the one this family has
        swinir_head(self, self.upsampler, scale, C, in_ch, rngs=rngs, dtype=dtype, num_feat=NUM_FEAT)
        self.eval()

    def forward_features(self, x):
        x = self.before_RG(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1], H, W >= 16 (spandrel's minimum too) -> (B, sH, sW, in_ch)."""
        mean = jnp.asarray(self.mean, jnp.float32)
        x = (x.astype(jnp.float32) - mean) * self.img_range
        x = self.conv_first(x.astype(self.dtype))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = swinir_tail(self, x, None, self.scale)
        return x.astype(jnp.float32) / self.img_range + mean


def build(spec: dict, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> RGT:
    """An RGT from a spec: the bridge's (all fields) or a variant plus overrides ({'variant': 'rgt_s', 'scale': 2})."""
    kw = constructor_kwargs(spec, VARIANTS, DEFAULTS, DEFAULT_VARIANT, "RGT", ("depth", "num_heads", "split_size"))
    return RGT(**kw, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
