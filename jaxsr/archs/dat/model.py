"""DAT (Dual Aggregation Transformer, Chen et al. ICCV 2023) in Flax NNX, numerically equal to the PyTorch reference.

The module tree mirrors the reference (spandrel `architectures/DAT/__arch/DAT.py`, identical to the authors' and
traiNNer-redux's) attribute for attribute, so `archs/bridge.py` turns Flax paths into the reference state-dict keys
(`layers.0.blocks.1.attn.channel_interaction.1.weight`, ...). Where torch has a parameter-free module inside an
nn.Sequential (Rearrange, GELU, LeakyReLU, AdaptiveAvgPool2d, PixelShuffle) we keep a parameter-free module at the
same index. See docs/dat.md. The window machinery (partition, shift masks, the attention kernel with its cuDNN
switch, remat, the torch-numerics layers) is shared with SwinIR and HAT in `jaxsr/archs/attention.py`.

Layout: the reference keeps tokens as (B, H*W, C); we keep them as (B, H, W, C) throughout, which is the same
memory order, so LayerNorm/Linear act on the last axis exactly as in torch and convolutions need no transposes.

Differences from the reference that do not change outputs:
- The shifted-window masks (`attn_mask_0/1`) are not stored in the model: they are a pure function of the padded
  input size, the window and the shift, and are built at trace time for whatever size is traced (the reference
  rebuilds them on the host for any size other than `img_size`). The bridge (`archs/dat/__init__.py`) adds the
  `img_size` masks to exported state dicts, bit-identical to torch's buffers.
- The model is built in eval mode (BatchNorm uses running statistics, drop path is off), like a module that
  spandrel hands out. `model.train()` switches to the training behaviour (batch statistics with torch's
  unbiased running-variance update, drop path with per-sample keys from the `dropout` RNG stream).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.attention import (drop_path, from_windows, layer_norm, linear, rect_window_branches,
                                   relative_position_index, resi_conv, resolve_impl, run_block, shift_mask, to_windows,
                                   window_attention)
from jaxsr.archs.common import (RGB_MEAN, Act, BatchNorm2d, Buffer, LeakyReLU, Sequential, constructor_kwargs, conv,
                                precision, variant_spec)
from jaxsr.archs.upsample import DySample, pixelshuffle, pixelshuffle_direct

# Named configurations: the authors' options/Test/*.yml (zhengchen1999/DAT) and traiNNer-redux's dat_2_l. Fields not
# given take DEFAULTS.
VARIANTS = {
    "dat": dict(embed_dim=180, depth=[6] * 6, num_heads=[6] * 6, split_size=[8, 32], expansion_factor=4.0,
                resi_connection="1conv", upsampler="pixelshuffle"),
    "dat_s": dict(embed_dim=180, depth=[6] * 6, num_heads=[6] * 6, split_size=[8, 16], expansion_factor=2.0,
                  resi_connection="1conv", upsampler="pixelshuffle"),
    "dat_2": dict(embed_dim=180, depth=[6] * 6, num_heads=[6] * 6, split_size=[8, 32], expansion_factor=2.0,
                  resi_connection="1conv", upsampler="pixelshuffle"),
    # The paper's DAT-light uses the one-step upsampler; traiNNer-redux's `dat_light` defaults to pixelshuffle
    # (pass upsampler="pixelshuffle" to get that one).
    "dat_light": dict(embed_dim=60, depth=[18], num_heads=[6], split_size=[8, 32], expansion_factor=2.0,
                      resi_connection="3conv", upsampler="pixelshuffledirect"),
    "dat_2_l": dict(embed_dim=180, depth=[6] * 12, num_heads=[6] * 12, split_size=[8, 32], expansion_factor=2.0,
                    resi_connection="1conv", upsampler="pixelshuffle"),
}

# The fields every variant shares, the reference's defaults (spandrel assumes img_size 64, img_range 1 and num_feat 64
# where the keys do not tell)
DEFAULTS = dict(
    scale=4, in_ch=3, img_size=64, img_range=1.0, qkv_bias=True, num_feat=64, drop_path_rate=0.1,
    use_chk=False, attn_impl="auto", dysample_groups=4,
)
DEFAULT_VARIANT = "dat_2"  # what a spec without the variant's fields builds
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "dysample")


def spec_for(variant: str, **overrides) -> dict:
    """A complete DAT spec for a named variant ('dat', 'dat_s', 'dat_2', 'dat_light', 'dat_2_l'), with overrides."""
    return variant_spec("dat", VARIANTS, DEFAULTS, variant, "DAT", overrides)


# --------------------------------------------------------------------------------------------------------------
# windows, shifts, masks (the machinery itself is shared with SwinIR and HAT: jaxsr/archs/attention.py)


def shifted(rg_idx: int, b_idx: int) -> bool:
    """Whether block b_idx of residual group rg_idx uses shifted windows (the reference's rule)."""
    return (rg_idx % 2 == 0 and b_idx > 0 and (b_idx - 2) % 4 == 0) or (rg_idx % 2 != 0 and b_idx % 4 == 0)


def attn_masks(img_size, split_size):
    """(attn_mask_0, attn_mask_1) exactly as the reference registers them for `img_size` (numpy float32)."""
    s0, s1 = split_size
    h0, h1 = s0 // 2, s1 // 2
    return shift_mask(img_size, img_size, s0, s1, h0, h1), shift_mask(img_size, img_size, s1, s0, h1, h0)


# --------------------------------------------------------------------------------------------------------------
# attention modules


class DynamicPosBias(nnx.Module):
    """Relative position bias from an MLP over (dy, dx) (residual=False as DAT uses it)."""

    def __init__(self, dim, num_heads, *, rngs, dtype=jnp.float32):
        pd = dim // 4
        self.pos_dim = pd
        self.pos_proj = linear(2, pd, rngs=rngs, dtype=jnp.float32)
        mk = lambda dout: Sequential([layer_norm(pd, rngs=rngs, dtype=jnp.float32), Act("relu"),  # noqa: E731
                                    linear(pd, dout, rngs=rngs, dtype=jnp.float32)])
        self.pos1 = mk(pd)
        self.pos2 = mk(pd)
        self.pos3 = mk(num_heads)

    def __call__(self, biases):
        return self.pos3(self.pos2(self.pos1(self.pos_proj(biases))))


class SpatialAttention(nnx.Module):
    """Window self-attention of one half-channel branch: idx 0 uses (split[0], split[1]) windows, idx 1 the transpose."""

    def __init__(self, dim, idx, split_size, num_heads, *, rngs, dtype=jnp.float32, attn_impl="auto"):
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.H_sp, self.W_sp = (split_size[0], split_size[1]) if idx == 0 else (split_size[1], split_size[0])
        self.dtype = dtype
        self.attn_impl = attn_impl
        self.pos = DynamicPosBias(dim // 4, num_heads, rngs=rngs)
        hs, ws = self.H_sp, self.W_sp
        dy, dx = np.meshgrid(np.arange(1 - hs, hs), np.arange(1 - ws, ws), indexing="ij")
        self.rpe_biases = Buffer(jnp.asarray(np.stack([dy.ravel(), dx.ravel()], 1).astype(np.float32)))
        self.relative_position_index = Buffer(jnp.asarray(relative_position_index(hs, ws)))

    def __call__(self, qkv, mask=None):
        """qkv: (3, B, H, W, dim) with H, W multiples of the window; mask (nW, N, N) or None -> (B, H, W, dim)."""
        _, B, H, W, c = qkv.shape
        hs, ws, h = self.H_sp, self.W_sp, self.num_heads
        N = hs * ws
        win = to_windows(qkv, hs, ws)  # (3, B, nW, N, c)
        win = win.reshape(*win.shape[:-1], h, c // h)
        pos = self.pos(self.rpe_biases[...])  # (P, h)
        pos_bias = pos[self.relative_position_index[...].reshape(-1)].reshape(N, N, h).transpose(2, 0, 1)
        out = window_attention(win[0], win[1], win[2], pos_bias, mask, self.scale,
                               resolve_impl(self.attn_impl, self.dtype))
        return from_windows(out.reshape(*out.shape[:3], c), hs, ws, H, W)


def _interaction_modules(self, dim, rngs, dtype):
    self.dwconv = Sequential([conv(dim, dim, 3, groups=dim, rngs=rngs, dtype=dtype), BatchNorm2d(dim, use_running_average=True, dtype=dtype),
                            Act("gelu")])
    self.channel_interaction = Sequential([
        Act("avgpool"), conv(dim, dim // 8, 1, rngs=rngs, dtype=dtype), BatchNorm2d(dim // 8, use_running_average=True, dtype=dtype),
        Act("gelu"), conv(dim // 8, dim, 1, rngs=rngs, dtype=dtype)])
    self.spatial_interaction = Sequential([
        conv(dim, dim // 16, 1, rngs=rngs, dtype=dtype), BatchNorm2d(dim // 16, use_running_average=True, dtype=dtype), Act("gelu"),
        conv(dim // 16, 1, 1, rngs=rngs, dtype=dtype)])


class AdaptiveSpatialAttention(nnx.Module):
    """DSTB attention: two half-channel window branches (+ shifts), a depthwise-conv branch, and the AIM."""

    def __init__(self, dim, num_heads, *, split_size, qkv_bias, rg_idx, b_idx, rngs, dtype=jnp.float32,
                 attn_impl="auto"):
        self.dim = dim
        self.split_size = tuple(split_size)
        self.shifted = shifted(rg_idx, b_idx)
        self.dtype = dtype
        self.qkv = linear(dim, 3 * dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)
        self.attns = nnx.List([SpatialAttention(dim // 2, i, split_size, num_heads // 2, rngs=rngs, dtype=dtype,
                                                attn_impl=attn_impl) for i in range(2)])
        _interaction_modules(self, dim, rngs, dtype)

    def __call__(self, x):
        C = x.shape[-1]
        qkv = self.qkv(x)  # (B, H, W, 3C): q | k | v
        v = qkv[..., 2 * C:]
        attened = rect_window_branches(qkv, self.attns, self.split_size, self.shifted)
        conv_x = self.dwconv(v)
        channel_map = self.channel_interaction(conv_x)  # (B, 1, 1, C)
        spatial_map = self.spatial_interaction(attened)  # (B, H, W, 1)
        attened = attened * jax.nn.sigmoid(channel_map)
        conv_x = jax.nn.sigmoid(spatial_map) * conv_x
        return self.proj(attened + conv_x)


class AdaptiveChannelAttention(nnx.Module):
    """DCTB attention: transposed (channel) self-attention with L2-normalised q, k and a learned temperature."""

    def __init__(self, dim, num_heads, *, qkv_bias, rngs, dtype=jnp.float32):
        self.num_heads = num_heads
        self.dtype = dtype
        self.temperature = nnx.Param(jnp.ones((num_heads, 1, 1), jnp.float32))
        self.qkv = linear(dim, 3 * dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)
        _interaction_modules(self, dim, rngs, dtype)

    def __call__(self, x):
        B, H, W, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x)
        v_img = qkv[..., 2 * C:]
        t = qkv.reshape(B, H * W, 3, h, C // h)
        q, k, v = t[:, :, 0], t[:, :, 1], t[:, :, 2]  # (B, N, h, d)

        def l2n(a):  # F.normalize along the token axis, eps 1e-12
            a = a.astype(jnp.float32)
            return a / jnp.maximum(jnp.sqrt(jnp.sum(a * a, axis=1, keepdims=True)), 1e-12)

        prec = precision(self.dtype)
        attn = jnp.einsum("bnhi,bnhj->bhij", l2n(q), l2n(k), precision=jax.lax.Precision.HIGHEST)
        attn = jax.nn.softmax(attn * self.temperature[...][None], axis=-1)
        out = jnp.einsum("bhij,bnhj->bnhi", attn.astype(v.dtype), v, precision=prec)
        attened = out.reshape(B, H, W, C)
        conv_x = self.dwconv(v_img)
        channel_map = self.channel_interaction(attened)  # (B, 1, 1, C)
        spatial_map = self.spatial_interaction(conv_x)  # (B, H, W, 1)
        attened = attened * jax.nn.sigmoid(spatial_map)
        conv_x = conv_x * jax.nn.sigmoid(channel_map)
        return self.proj(attened + conv_x)


class SpatialGate(nnx.Module):
    def __init__(self, dim, *, rngs, dtype=jnp.float32):
        self.norm = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.conv = conv(dim, dim, 3, groups=dim, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x1, x2 = jnp.split(x, 2, axis=-1)
        return x1 * self.conv(self.norm(x2))


class SGFN(nnx.Module):
    """Spatial-gate feed-forward: fc1 -> GELU -> SpatialGate (halves the channels) -> fc2."""

    def __init__(self, dim, hidden, *, rngs, dtype=jnp.float32):
        self.fc1 = linear(dim, hidden, rngs=rngs, dtype=dtype)
        self.act = Act("gelu")
        self.sg = SpatialGate(hidden // 2, rngs=rngs, dtype=dtype)
        self.fc2 = linear(hidden // 2, dim, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.fc2(self.sg(self.act(self.fc1(x))))


class DATB(nnx.Module):
    """Dual aggregation block: even index = spatial (DSTB), odd index = channel (DCTB)."""

    def __init__(self, dim, num_heads, *, split_size, expansion_factor, qkv_bias, drop_path_rate, rg_idx, b_idx,
                 rngs, dtype=jnp.float32, attn_impl="auto"):
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        if b_idx % 2 == 0:
            self.attn = AdaptiveSpatialAttention(dim, num_heads, split_size=split_size, qkv_bias=qkv_bias,
                                                 rg_idx=rg_idx, b_idx=b_idx, rngs=rngs, dtype=dtype,
                                                 attn_impl=attn_impl)
        else:
            self.attn = AdaptiveChannelAttention(dim, num_heads, qkv_bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.drop_path = drop_path(drop_path_rate, rngs)
        self.ffn = SGFN(dim, int(dim * expansion_factor), rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.ffn(self.norm2(x)))


class ResidualGroup(nnx.Module):
    def __init__(self, dim, num_heads, depth, *, split_size, expansion_factor, qkv_bias, drop_paths, rg_idx,
                 resi_connection, use_chk, rngs, dtype=jnp.float32, attn_impl="auto"):
        self.use_chk = use_chk
        self.blocks = nnx.List([
            DATB(dim, num_heads, split_size=split_size, expansion_factor=expansion_factor, qkv_bias=qkv_bias,
                 drop_path_rate=drop_paths[j], rg_idx=rg_idx, b_idx=j, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for j in range(depth)])
        self.conv = resi_conv(dim, resi_connection, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        res = x
        for blk in self.blocks:
            x = run_block(blk, x, remat=self.use_chk)
        return res + self.conv(x)


# --------------------------------------------------------------------------------------------------------------
# the network


class DAT(nnx.Module):
    """Dual Aggregation Transformer on NHWC images in [0, 1]. Built in eval mode; `model.train()` for training."""

    def __init__(self, *, scale=4, in_ch=3, embed_dim=180, depth=(6,) * 6, num_heads=(6,) * 6, split_size=(8, 32),
                 expansion_factor=2.0, qkv_bias=True, img_range=1.0, resi_connection="1conv",
                 upsampler="pixelshuffle", num_feat=64, drop_path_rate=0.1, use_chk=False, attn_impl="auto",
                 dysample_groups=4, img_size=64, rngs: nnx.Rngs, dtype=jnp.float32):
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown DAT upsampler {upsampler!r} ({', '.join(UPSAMPLERS)})")
        if len(depth) != len(num_heads):
            raise ValueError(f"depth {list(depth)} and num_heads {list(num_heads)} must have the same length")
        self.scale = scale
        self.in_ch = in_ch
        self.size_multiple = 1  # any input size: the attention pads to its windows
        # windows are anchored at the image origin: tiles equal the whole image only on the window grid
        self.tile_multiple = max(split_size)
        self.img_size = img_size
        self.img_range = float(img_range)
        self.upsampler = upsampler
        self.dtype = dtype
        self.mean = RGB_MEAN if in_ch == 3 else (0.0,) * in_ch
        C = embed_dim
        self.conv_first = conv(in_ch, C, 3, rngs=rngs, dtype=dtype)
        self.before_RG = Sequential([Act("identity"), layer_norm(C, rngs=rngs, dtype=dtype)])
        dpr = np.linspace(0, drop_path_rate, int(sum(depth)), dtype=np.float32).tolist()
        offs = np.cumsum([0, *depth]).tolist()
        self.layers = nnx.List([
            ResidualGroup(C, num_heads[i], depth[i], split_size=split_size, expansion_factor=expansion_factor,
                          qkv_bias=qkv_bias, drop_paths=dpr[offs[i]:offs[i + 1]], rg_idx=i,
                          resi_connection=resi_connection, use_chk=use_chk, rngs=rngs, dtype=dtype,
                          attn_impl=attn_impl)
            for i in range(len(depth))])
        self.norm = layer_norm(C, rngs=rngs, dtype=dtype)
        self.conv_after_body = resi_conv(C, resi_connection, rngs=rngs, dtype=dtype)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = Sequential([conv(C, num_feat, 3, rngs=rngs, dtype=dtype), LeakyReLU(0.01)])
            self.upsample = pixelshuffle(scale, num_feat, rngs=rngs, dtype=dtype)
            self.conv_last = conv(num_feat, in_ch, 3, rngs=rngs, dtype=dtype)
        elif upsampler == "pixelshuffledirect":
            self.upsample = pixelshuffle_direct(scale, C, in_ch, rngs=rngs, dtype=dtype)
        else:  # dysample (jaxsr's own option; spandrel cannot load it)
            self.conv_before_upsample = Sequential([conv(C, num_feat, 3, rngs=rngs, dtype=dtype), LeakyReLU(0.01)])
            self.upsample = DySample(num_feat, in_ch, scale, groups=dysample_groups, end_convolution=True, rngs=rngs,
                                     dtype=dtype)
        self.eval()

    def forward_features(self, x):
        x = self.before_RG(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1], any H, W (>= 1; spandrel asks for >= 16) -> (B, sH, sW, in_ch)."""
        mean = jnp.asarray(self.mean, jnp.float32)
        x = (x.astype(jnp.float32) - mean) * self.img_range
        x = self.conv_first(x.astype(self.dtype))
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        elif self.upsampler == "pixelshuffledirect":
            x = self.upsample(x)
        else:
            x = self.upsample(self.conv_before_upsample(x))
        return x.astype(jnp.float32) / self.img_range + mean


def build(spec: dict, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> DAT:
    """Build a DAT from a spec dict: the bridge's (all fields) or a variant name plus overrides ({'variant': 'dat_2'})."""
    kw = constructor_kwargs(spec, VARIANTS, DEFAULTS, DEFAULT_VARIANT, "DAT", ("depth", "num_heads", "split_size"))
    return DAT(**kw, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
