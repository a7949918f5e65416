"""ATD (Zhang et al., "Transcending the Limit of Local Window: Advanced Super-Resolution Transformer with Adaptive
Token Dictionary", CVPR 2024, arXiv 2401.08209) in Flax NNX, numerically equal to the PyTorch reference (spandrel
0.4.2 `architectures/ATD/__arch/atd_arch.py`, the authors' ATD `basicsr/archs/atd_arch.py`).

Each ATD transformer layer adds three attentions of one LayerNorm-ed input to its residual: Swin's (shifted) window
self-attention (`attn_win`), the token-dictionary cross-attention (`attn_atd`: every token against the group's
learned dictionary of `num_tokens` tokens, cosine similarity scaled by 1 + clamp(scale, 0, 1) * log(num_tokens)),
and the adaptive category-based attention (`attn_aca`: tokens grouped by the dictionary entry they are most similar
to, sorted by it, cut into groups of `category_size`, attention within each group, then put back in place); then a
ConvFFN (fc1, GELU, + depthwise conv + GELU, fc2). Every layer but a group's last refines the dictionary from the
tokens (`norm3` and `sigma`). The module tree mirrors the reference attribute for attribute
(`layers.0.residual_group.layers.0.attn_atd.wq.weight`, `layers.0.residual_group.td`, ...).

The category sort is stable (equal categories keep their token order, torch.sort(stable=True)): the reference asks
torch for an unstable sort, whose order of equal keys is the sorting algorithm's (on CPU torch 2.x that is the
stable order for at most 16 tokens only), so outputs equal the reference's exactly wherever the groups hold the same
tokens: always when the padded image has at most `category_size` tokens (one group), and with a stable sort
otherwise (tests/test_atd.py). The groups are a fixed `category_size` long: when the whole image is shorter, the
reference's one group of all tokens is ours with the padding keys masked, which keeps every size symbolic for ONNX.

The input is padded bottom/right to the window by mirroring (torch.cat with its flip, the reference's padding, not a
reflection), inside the forward, so `size_multiple` is 1 and `tile_multiple` the window. The dictionary and the
category attention see the whole image: tiles never equal the whole image exactly (docs/archs.md). ATD has no drop
path; built in eval mode all the same.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.attention import (PatchEmbed, add_absolute_pos_embed, from_windows, gather_bias, layer_norm, linear,
                                   relative_position_index, resi_conv, resolve_impl, run_block, to_windows,
                                   trace_shift_mask, window_attention)
from jaxsr.archs.common import (RGB_MEAN, Act, Buffer, Sequential, constructor_kwargs, conv, host_init,
                                precision, top_left, trunc_normal_002, variant_spec)
from jaxsr.archs.upsample import swinir_head, swinir_tail

NUM_FEAT = 64  # the reconstruction width, fixed in the reference
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")
# Named configurations: the authors' ATD and ATD-light (options/train/*_ATD_SRx4*.yml, *_ATD_light_SRx4*.yml), as
# traiNNer-redux's `atd` and `atd_light` build them. Fields not given take DEFAULTS.
VARIANTS = {
    "atd": dict(embed_dim=210, depths=[6] * 6, num_heads=[6] * 6, window_size=16, category_size=256, num_tokens=128,
                reducted_dim=20, convffn_kernel_size=5, mlp_ratio=2.0, upsampler="pixelshuffle"),
    "atd_light": dict(embed_dim=48, depths=[6] * 4, num_heads=[4] * 4, window_size=16, category_size=128,
                      num_tokens=64, reducted_dim=8, convffn_kernel_size=7, mlp_ratio=1.0,
                      upsampler="pixelshuffledirect"),
}
# The fields every variant shares: the reference's defaults (spandrel assumes img_size 64 and img_range 1: the keys
# do not tell them). `norm=False` skips the mean/img_range normalisation (a `no_norm` buffer marks such files).
DEFAULTS = dict(scale=4, in_ch=3, img_size=64, img_range=1.0, qkv_bias=True, resi_connection="1conv",
                patch_norm=True, ape=False, norm=True, use_chk=False, attn_impl="auto")
DEFAULT_VARIANT = "atd"


def spec_for(variant: str, **overrides) -> dict:
    """A complete ATD spec for a named variant ('atd', 'atd_light'), with overrides."""
    return variant_spec("atd", VARIANTS, DEFAULTS, variant, "ATD", overrides)


def mirror_pad_to(x, m):
    """NHWC padded bottom/right to multiples of m as the reference pads, cat(x, flip(x)) cut to the padded side: the
    edge row repeats (numpy's 'symmetric', not a reflection). Symbolic sides (an ONNX trace) stay symbolic, through
    that concatenation and a crop; known ones pad with jnp.pad, which also serves sides under m / 2 (where the
    reference's concatenation falls short)."""
    H, W = x.shape[1:3]
    hp, wp = m * (-(-H // m)), m * (-(-W // m))
    if isinstance(H, int) and isinstance(W, int):
        return jnp.pad(x, ((0, 0), (0, hp - H), (0, wp - W), (0, 0)), mode="symmetric") if (hp, wp) != (H, W) else x
    x = jnp.concatenate([x, jnp.flip(x, 1)], 1)
    return top_left(jnp.concatenate([x, jnp.flip(x, 2)], 2), hp, wp)


def _l2_normalize(t):
    """F.normalize(t, dim=-1): t / max(||t||, 1e-12)."""
    n = jnp.sqrt(jnp.sum(jnp.square(t.astype(jnp.float32)), -1, keepdims=True))
    return (t / jnp.maximum(n, 1e-12)).astype(t.dtype)


def _take_tokens(t, idx):
    """t (B, N, c) at token indices idx (B, L) -> (B, L, c)."""
    return jax.vmap(lambda a, i: jnp.take(a, i, axis=0))(t, idx)


class WindowAttention(nnx.Module):
    """Swin's (shifted) window attention on a precomputed qkv map (the layer's `wqkv`): the bias table and proj."""

    def __init__(self, dim, window_size, num_heads, *, rngs, dtype, attn_impl):
        self.window_size, self.num_heads, self.dtype, self.attn_impl = window_size, num_heads, dtype, attn_impl
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nnx.Param(
            trunc_normal_002(rngs.params(), ((2 * window_size - 1) ** 2, num_heads)))
        self.proj = linear(dim, dim, rngs=rngs, dtype=dtype)

    def __call__(self, qkv, shift, rpi):
        """qkv (B, H, W, 3C) -> (B, H, W, C)."""
        B, H, W, C3 = qkv.shape
        C, ws, h = C3 // 3, self.window_size, self.num_heads
        mask = None
        if shift:
            qkv = jnp.roll(qkv, (-shift, -shift), axis=(1, 2))
            mask = trace_shift_mask(H, W, ws, ws, shift, shift)
        t = to_windows(qkv, ws, ws)
        q, k, v = (a.reshape(*a.shape[:3], h, C // h) for a in jnp.split(t, 3, axis=-1))
        bias = gather_bias(self.relative_position_bias_table[...], rpi)
        out = window_attention(q, k, v, bias, mask, self.scale, resolve_impl(self.attn_impl, self.dtype))
        out = self.proj(from_windows(out.reshape(*out.shape[:3], C), ws, ws, H, W))
        return jnp.roll(out, (shift, shift), axis=(1, 2)) if shift else out


class ATD_CA(nnx.Module):
    """Token-dictionary cross-attention: tokens (queries, reduced to `reducted_dim`) against the dictionary."""

    def __init__(self, dim, num_tokens, reducted_dim, qkv_bias, *, rngs, dtype):
        self.num_tokens, self.dtype = num_tokens, dtype
        self.wq = linear(dim, reducted_dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.wk = linear(dim, reducted_dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.wv = linear(dim, dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.scale = nnx.Param(jnp.full((num_tokens,), 0.5, jnp.float32))

    def __call__(self, x, td):
        """x (B, N, C), td (B, m, C) -> (out (B, N, C), similarity (B, N, m), float32)."""
        q, k, v = _l2_normalize(self.wq(x)), _l2_normalize(self.wk(td)), self.wv(td)
        attn = jnp.einsum("bnr,bmr->bnm", q, k, preferred_element_type=jnp.float32, precision=precision(q.dtype))
        attn = attn * (1 + jnp.clip(self.scale[...], 0, 1) * math.log(self.num_tokens))
        attn = jax.nn.softmax(attn, axis=-1)
        out = jnp.einsum("bnm,bmc->bnc", attn.astype(v.dtype), v, precision=precision(v.dtype))
        return out, attn


class AC_MSA(nnx.Module):
    """Adaptive category-based attention: tokens sorted by their most similar dictionary entry (stable), cut into
    groups of `category_size` (the last one completed by the sorted tokens' tail, mirrored), attention within each
    group scaled by exp(min(logit_scale, log 100)), then each token's output taken back to its place."""

    def __init__(self, dim, num_heads, category_size, qkv_bias, *, rngs, dtype):
        self.num_heads, self.category_size, self.dtype = num_heads, category_size, dtype
        self.proj = linear(dim, dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.logit_scale = nnx.Param(jnp.full((1, 1), math.log(10.0), jnp.float32))

    def __call__(self, qkv, sim):
        """qkv (B, N, 3C), sim (B, N, m) -> (B, N, C)."""
        B, n, C3 = qkv.shape
        C, h, gs = C3 // 3, self.num_heads, self.category_size
        ng = (n + gs - 1) // gs  # the reference's group count where n >= gs; one group otherwise
        order = jnp.argsort(jnp.argmax(sim, axis=-1), axis=-1, stable=True)  # (B, n)
        back = jnp.argsort(order, axis=-1)  # each token's place in the sorted order
        p = jnp.arange(ng * gs)
        src = jnp.clip(jnp.where(p < n, p, 2 * n - 1 - p), 0, n - 1)  # the sorted tail, mirrored, pads
        y = _take_tokens(qkv, order[:, src]).reshape(B, ng, gs, 3, h, C // h)
        q, k, v = y[:, :, :, 0], y[:, :, :, 1], y[:, :, :, 2]  # (B, ng, gs, h, d)
        attn = jnp.einsum("bgnhd,bgmhd->bghnm", q, k, preferred_element_type=jnp.float32,
                          precision=precision(q.dtype))
        attn = attn * jnp.exp(jnp.minimum(self.logit_scale[...], math.log(100.0)))
        # with fewer tokens than a group (n < gs), the reference's one group holds the n tokens only: mask the pads
        keys = p < ng * gs - jnp.maximum(gs - n, 0)
        attn = jnp.where(keys.reshape(ng, 1, 1, gs), attn, -jnp.inf)
        attn = jax.nn.softmax(attn, axis=-1).astype(v.dtype)
        out = jnp.einsum("bghnm,bgmhd->bgnhd", attn, v, precision=precision(v.dtype)).reshape(B, ng * gs, C)
        return self.proj(_take_tokens(out, back))


class InstanceNorm1d(nnx.Module):
    """nn.InstanceNorm1d(num, affine=True) on (B, num, L): per sample and channel over L, eps 1e-5, biased variance."""

    def __init__(self, num):
        self.scale = nnx.Param(jnp.ones((num,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num,), jnp.float32))

    def __call__(self, x):
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * self.scale[...][:, None] + self.bias[...][:, None]


class dwconv(nnx.Module):  # noqa: N801 (the reference's class and attribute names)
    def __init__(self, hidden, kernel_size, *, rngs, dtype):
        self.depthwise_conv = Sequential([conv(hidden, hidden, kernel_size, groups=hidden,
                                               padding=(kernel_size - 1) // 2, rngs=rngs, dtype=dtype), Act("gelu")])

    def __call__(self, x):
        return self.depthwise_conv(x)


class ConvFFN(nnx.Module):
    """fc1 -> GELU -> x + GELU(depthwise conv x) -> fc2, on the (B, H, W, C) map."""

    def __init__(self, dim, hidden, kernel_size, *, rngs, dtype):
        self.fc1 = linear(dim, hidden, rngs=rngs, dtype=dtype)
        self.act = Act("gelu")
        self.dwconv = dwconv(hidden, kernel_size, rngs=rngs, dtype=dtype)
        self.fc2 = linear(hidden, dim, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = self.act(self.fc1(x))
        return self.fc2(x + self.dwconv(x))


class ATDTransformerLayer(nnx.Module):
    """x + W-MSA + ATD_CA + AC_MSA of norm1(x), then the ConvFFN; all but a group's last layer refine the
    dictionary: td <- s td + (1 - s) softmax_N(norm3(sim^T)) x, s = sigmoid(sigma)."""

    def __init__(self, dim, num_heads, window_size, shift, category_size, num_tokens, reducted_dim,
                 convffn_kernel_size, mlp_ratio, qkv_bias, is_last, *, rngs, dtype, attn_impl):
        self.shift, self.is_last = shift, is_last
        self.norm1 = layer_norm(dim, rngs=rngs, dtype=dtype)
        self.norm2 = layer_norm(dim, rngs=rngs, dtype=dtype)
        if not is_last:
            self.norm3 = InstanceNorm1d(num_tokens)
            self.sigma = nnx.Param(jnp.zeros((num_tokens, 1), jnp.float32))
        self.wqkv = linear(dim, 3 * dim, bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.attn_win = WindowAttention(dim, window_size, num_heads, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
        self.attn_atd = ATD_CA(dim, num_tokens, reducted_dim, qkv_bias, rngs=rngs, dtype=dtype)
        self.attn_aca = AC_MSA(dim, num_heads, category_size, qkv_bias, rngs=rngs, dtype=dtype)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio), convffn_kernel_size, rngs=rngs, dtype=dtype)

    def __call__(self, x, td, rpi):
        B, H, W, C = x.shape
        h = self.norm1(x)
        qkv = self.wqkv(h)
        x_atd, sim = self.attn_atd(h.reshape(B, H * W, C), td)
        x_aca = self.attn_aca(qkv.reshape(B, H * W, 3 * C), sim)
        x_win = self.attn_win(qkv, self.shift, rpi)
        x = x + x_win + x_atd.reshape(B, H, W, C) + x_aca.reshape(B, H, W, C)
        x = x + self.convffn(self.norm2(x))
        if not self.is_last:
            mask = jax.nn.softmax(self.norm3(jnp.swapaxes(sim, 1, 2)), axis=-1)  # (B, m, N)
            s = jax.nn.sigmoid(self.sigma[...])
            tokens = jnp.einsum("btn,bnc->btc", mask.astype(x.dtype), x.reshape(B, H * W, C),
                                precision=precision(x.dtype))
            td = (s * td + (1 - s) * tokens).astype(td.dtype)
        return x, td


class BasicBlock(nnx.Module):
    """A run of ATD layers (shifted every other one) sharing one learned token dictionary `td`."""

    def __init__(self, dim, depth, num_heads, window_size, category_size, num_tokens, reducted_dim,
                 convffn_kernel_size, mlp_ratio, qkv_bias, use_chk, *, rngs, dtype, attn_impl):
        self.use_chk = use_chk
        self.layers = nnx.List([
            ATDTransformerLayer(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, category_size,
                                num_tokens, reducted_dim, convffn_kernel_size, mlp_ratio, qkv_bias, i == depth - 1,
                                rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for i in range(depth)])
        normal = host_init(lambda g, s: g.normal(0.0, 1.0, s), nnx.initializers.normal(1.0))  # torch.randn
        self.td = nnx.Param(normal(rngs.params(), (num_tokens, dim)))

    def __call__(self, x, rpi):
        td = jnp.broadcast_to(self.td[...].astype(x.dtype), (x.shape[0], *self.td.shape))
        for layer in self.layers:
            x, td = run_block(layer, x, td, rpi, remat=self.use_chk)
        return x


class ATDB(nnx.Module):
    """Residual ATD block: the layers, then a convolution (1conv/3conv), plus the input."""

    def __init__(self, dim, depth, num_heads, window_size, category_size, num_tokens, reducted_dim,
                 convffn_kernel_size, mlp_ratio, qkv_bias, use_chk, resi_connection, *, rngs, dtype, attn_impl):
        self.residual_group = BasicBlock(dim, depth, num_heads, window_size, category_size, num_tokens, reducted_dim,
                                         convffn_kernel_size, mlp_ratio, qkv_bias, use_chk, rngs=rngs, dtype=dtype,
                                         attn_impl=attn_impl)
        self.conv = resi_conv(dim, resi_connection, rngs=rngs, dtype=dtype)

    def __call__(self, x, rpi):
        return self.conv(self.residual_group(x, rpi)) + x


class ATD(nnx.Module):
    """ATD on NHWC images in [0, 1], any size."""

    def __init__(self, *, scale=4, in_ch=3, embed_dim=210, depths=(6,) * 6, num_heads=(6,) * 6, window_size=16,
                 category_size=256, num_tokens=128, reducted_dim=20, convffn_kernel_size=5, mlp_ratio=2.0,
                 qkv_bias=True, img_size=64, img_range=1.0, upsampler="pixelshuffle", resi_connection="1conv",
                 patch_norm=True, ape=False, norm=True, use_chk=False, attn_impl="auto", rngs: nnx.Rngs,
                 dtype=jnp.float32):
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown ATD upsampler {upsampler!r} (pixelshuffle, pixelshuffledirect, nearest+conv, "
                             "'' for none)")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        if upsampler == "" and scale != 1:
            raise ValueError(f"ATD without an upsampler is x1, not x{scale}")
        if upsampler == "nearest+conv" and scale != 4:
            raise ValueError(f"ATD's nearest+conv upsampler is x4 only, not x{scale}")
        if resi_connection not in ("1conv", "3conv"):
            raise ValueError(f"ATD's resi_connection is 1conv or 3conv, not {resi_connection!r}")
        self.scale, self.in_ch, self.window_size = scale, in_ch, window_size
        # the forward mirror-pads to the window itself (not the reflection callers would pad with); tiles start on
        # the window grid, though the dictionary and category attention make them inexact anyway
        self.size_multiple, self.tile_multiple = 1, window_size
        self.img_size, self.img_range, self.upsampler, self.ape, self.norm_input = (img_size, float(img_range),
                                                                                    upsampler, ape, norm)
        self.dtype = dtype
        self.mean = RGB_MEAN if in_ch == 3 else (0.0,) * in_ch
        if not norm:
            self.no_norm = Buffer(jnp.zeros((1,), jnp.float32))
        self.relative_position_index_SA = Buffer(jnp.asarray(relative_position_index(window_size, window_size)))
        C = embed_dim
        self.conv_first = conv(in_ch, C, 3, rngs=rngs, dtype=dtype)
        self.patch_embed = PatchEmbed(C, patch_norm, rngs=rngs, dtype=dtype)
        if ape:
            self.absolute_pos_embed = nnx.Param(trunc_normal_002(rngs.params(), (1, img_size * img_size, C)))
        self.layers = nnx.List([
            ATDB(C, depths[i], num_heads[i], window_size, category_size, num_tokens, reducted_dim, convffn_kernel_size,
                 mlp_ratio, qkv_bias, use_chk, resi_connection, rngs=rngs, dtype=dtype, attn_impl=attn_impl)
            for i in range(len(depths))])
        self.norm = layer_norm(C, rngs=rngs, dtype=dtype)
        self.conv_after_body = resi_conv(C, resi_connection, rngs=rngs, dtype=dtype)
        swinir_head(self, upsampler, scale, C, in_ch, rngs=rngs, dtype=dtype, num_feat=NUM_FEAT)
        self.eval()

    def forward_features(self, x):
        x = self.patch_embed(x)
        if self.ape:
            x = add_absolute_pos_embed(x, self.absolute_pos_embed[...], self.img_size)
        rpi = self.relative_position_index_SA[...]
        for layer in self.layers:
            x = layer(x, rpi)
        return self.norm(x)

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1] -> (B, scale*H, scale*W, in_ch) float32."""
        H, W = x.shape[1:3]
        x = mirror_pad_to(x.astype(jnp.float32), self.window_size)
        mean = jnp.asarray(self.mean, jnp.float32)
        if self.norm_input:
            x = (x - mean) * self.img_range
        inp = x
        x = self.conv_first(x.astype(self.dtype))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = swinir_tail(self, x, inp, self.scale)
        x = x.astype(jnp.float32)
        if self.norm_input:
            x = x / self.img_range + mean
        return top_left(x, H * self.scale, W * self.scale)


def build(spec: dict, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> ATD:
    """An ATD from a spec: the bridge's (all fields) or a variant plus overrides ({'variant': 'atd_light', ...})."""
    kw = constructor_kwargs(spec, VARIANTS, DEFAULTS, DEFAULT_VARIANT, "ATD", ("depths", "num_heads"))
    return ATD(**kw, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)


__all__ = ["ATD", "DEFAULTS", "DEFAULT_VARIANT", "VARIANTS", "build", "mirror_pad_to", "spec_for"]
