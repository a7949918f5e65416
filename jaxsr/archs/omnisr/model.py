"""OmniSR (Wang et al., "Omni Aggregation Networks for Lightweight Image Super-Resolution", CVPR 2023), mirroring
spandrel's module tree (`architectures/OmniSR/__arch/`: OmniSR.py, OSAG.py, OSA.py, esa.py, layernorm.py) attribute
for attribute and nn.Sequential index for index, so that the released files' keys
(`residual_layer.0.residual_layer.0.layer.2.fn.rel_pos_bias.weight`, ...) map mechanically.

The network: `input` conv, `res_num` OSAGs (each `block_num` OSA blocks, a 1x1 conv, a residual and an ESA), the
`output` conv with a global residual, and a conv + PixelShuffle (`up`). An OSA block is an MBConv (with
squeeze-excitation), then four attentions, each behind a norm and with a residual: self-attention inside w x w
windows ("block-like"), channel attention inside each window, self-attention over the w x w pixels that sit H/w
apart (a dilated "grid" spanning the image), and channel attention across the windows; a gated depthwise
feed-forward follows each channel attention and precedes it (after the self-attentions). Layouts follow the reference's
rearranges (the grid's `(w1 x)` puts the window index outermost).

Numerics as the reference: nn.LayerNorm (eps 1e-5) before the self-attentions, LayerNorm2d (eps 1e-6, a plain mean
of squared deviations) before the convolutional parts; exact GELU; F.normalize (eps 1e-12) in the channel
attentions; ESA's max pool (7, stride 3) and bilinear upsampling with half-pixel centres (align_corners=False, as
interpolation matrices).

The input is zero-padded bottom and right to a multiple of the window, as the reference's `check_image_size`, and the
output cropped back, so any size (from spandrel's 16 px up) runs and `size_multiple` is 1. The grid attentions, the
squeeze-excitation and ESA's pooled branch see the whole (padded) image, so tiles never equal the whole image exactly
(docs/archs.md); `tile_multiple` is the window. The padded sides are written as window * ceil(side / window), which
keeps an ONNX graph's height and width symbolic.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.attention import relative_position_index
from jaxsr.archs.common import (Act, PixelShuffle, Sequential, conv, host_init, precision, spec_kwargs,
                                top_left, torch_default_init)

# A spec's fields and their defaults, spandrel's class defaults (what it assumes where the keys do not tell:
# window_size without the position bias); the scale is the run's
DEFAULTS = dict(in_ch=3, out_ch=3, num_feat=64, block_num=1, pe=True, window_size=8, res_num=1, bias=True)
HEADS = 4  # the channel attentions' heads; the self-attentions' head width is num_feat // 4


def linear(din, dout, *, rngs, dtype, bias=False):
    """nn.Linear with torch's default init (the reference's attention and squeeze-excitation have no biases)."""
    return nnx.Linear(din, dout, use_bias=bias, kernel_init=torch_default_init, bias_init=nnx.initializers.zeros_init(),
                      dtype=dtype, param_dtype=jnp.float32, precision=precision(dtype), rngs=rngs)


class Norm(nnx.Module):
    """Layer norm over the channels of NHWC: nn.LayerNorm (eps 1e-5) on the rearranged tokens and LayerNorm2d (eps 1e-6)
    are the same computation here; the variance is the mean of squared deviations, as both compute it."""

    def __init__(self, dim, eps, dtype=jnp.float32):
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x):
        x = x.astype(jnp.float32)
        mu = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), -1, keepdims=True)
        y = (x - mu) / jnp.sqrt(var + self.eps)
        return (y * self.weight[...] + self.bias[...]).astype(self.dtype)


class SqueezeExcitation(nnx.Module):
    """x * sigmoid(W2 silu(W1 mean(x))): `gate` is the reference's nn.Sequential (Reduce, Linear, SiLU, Linear, Sigmoid,
    Rearrange), the Linears at indices 1 and 3."""

    def __init__(self, dim, shrinkage_rate=0.25, *, rngs, dtype=jnp.float32):
        hidden = int(dim * shrinkage_rate)
        self.gate = Sequential([Act("identity"), linear(dim, hidden, rngs=rngs, dtype=dtype), Act("identity"),
                                linear(hidden, dim, rngs=rngs, dtype=dtype)])

    def __call__(self, x):
        g = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)  # Reduce('b c h w -> b c', 'mean')
        g = jax.nn.sigmoid(self.gate[3](jax.nn.silu(self.gate[1](g))))
        return x * g[:, None, None, :]


class MBConvResidual(nnx.Module):
    """MBConv at expansion rate 1 with its residual (`fn`: conv 1x1, GELU, depthwise 3x3, GELU, SE, conv 1x1); its
    Dropsample is the identity at rate 0."""

    def __init__(self, dim, *, rngs, dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype)
        self.fn = Sequential([conv(dim, dim, 1, **kw), Act("gelu"), conv(dim, dim, 3, groups=dim, **kw), Act("gelu"),
                              SqueezeExcitation(dim, 0.25, **kw), conv(dim, dim, 1, **kw)])

    def __call__(self, x):
        return self.fn(x) + x


class RelPosBias(nnx.Module):
    """nn.Embedding((2w - 1)^2, heads): the learned relative-position bias table (key `rel_pos_bias.weight`)."""

    def __init__(self, window_size, heads, *, rngs):
        self.weight = nnx.Param(host_init(lambda g, s: g.normal(0.0, 1.0, s),
                                          nnx.initializers.normal(1.0))(rngs.params(), ((2 * window_size - 1) ** 2, heads)))


class Attention(nnx.Module):
    """Multi-head self-attention within groups of w*w tokens, x (B, X, Y, w, w, C), with the relative-position bias
    (`rel_pos_indices` is a non-persistent buffer in the reference: rebuilt here, not exported)."""

    def __init__(self, dim, dim_head, window_size, with_pe, *, rngs, dtype=jnp.float32):
        if dim_head < 1 or dim % dim_head:
            raise ValueError(f"OmniSR attention: num_feat ({dim}) must be divisible by its head width ({dim_head})")
        self.heads, self.scale, self.with_pe, self.dtype = dim // dim_head, dim_head ** -0.5, with_pe, dtype
        self.to_qkv = linear(dim, 3 * dim, rngs=rngs, dtype=dtype)
        self.to_out = Sequential([linear(dim, dim, rngs=rngs, dtype=dtype)])
        if with_pe:
            self.rel_pos_bias = RelPosBias(window_size, self.heads, rngs=rngs)
            self.window_size = window_size

    def __call__(self, x):
        B, X, Y, w1, w2, C = x.shape
        h = self.heads
        q, k, v = jnp.split(self.to_qkv(x.reshape(B, X, Y, w1 * w2, C)), 3, axis=-1)
        q, k, v = (t.reshape(B, X, Y, w1 * w2, h, C // h) for t in (q, k, v))
        sim = jnp.einsum("bxyihd,bxyjhd->bxyhij", q * jnp.asarray(self.scale, q.dtype), k,
                         preferred_element_type=jnp.float32, precision=precision(q.dtype))
        if self.with_pe:
            index = relative_position_index(self.window_size, self.window_size)
            sim = sim + self.rel_pos_bias.weight[...][index.reshape(-1)].reshape(*index.shape, h).transpose(2, 0, 1)
        attn = jax.nn.softmax(sim, axis=-1).astype(v.dtype)
        out = jnp.einsum("bxyhij,bxyjhd->bxyihd", attn, v, precision=precision(v.dtype)).reshape(B, X, Y, w1 * w2, C)
        return self.to_out(out).reshape(B, X, Y, w1, w2, C)


class PreNormResidual(nnx.Module):
    def __init__(self, dim, fn, eps):
        self.norm = Norm(dim, eps, fn.dtype)
        self.fn = fn

    def __call__(self, x):
        return self.fn(self.norm(x)) + x


class GatedConvFeedForward(nnx.Module):
    """project_in (1x1, to 2 x dim) -> depthwise 3x3 -> GELU(first half) * second half -> project_out, no biases."""

    def __init__(self, dim, mult=1, bias=False, *, rngs, dtype=jnp.float32):
        hidden = int(dim * mult)
        kw = dict(rngs=rngs, dtype=dtype, bias=bias)
        self.project_in = conv(dim, 2 * hidden, 1, **kw)
        self.dwconv = conv(2 * hidden, 2 * hidden, 3, groups=2 * hidden, **kw)
        self.project_out = conv(hidden, dim, 1, **kw)
        self.dtype = dtype

    def __call__(self, x):
        x1, x2 = jnp.split(self.dwconv(self.project_in(x)), 2, axis=-1)
        return self.project_out(jax.nn.gelu(x1, approximate=False) * x2)


def l2_normalize(x):
    """F.normalize(x, dim=-1): x / max(||x||, 1e-12)."""
    return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), -1, keepdims=True)), 1e-12)


class ChannelAttention(nnx.Module):
    """Channel ("transposed") attention, heads x (d x d) with a learned temperature per head: `grid=False` inside each
    w x w window (Channel_Attention, its tokens the window's pixels), `grid=True` across the windows for each position
    in the window (Channel_Attention_grid, its tokens the pixels w apart)."""

    def __init__(self, dim, heads, window_size, grid, bias=False, *, rngs, dtype=jnp.float32):
        if dim % heads:
            raise ValueError(f"OmniSR channel attention: num_feat ({dim}) must be divisible by its {heads} heads")
        self.heads, self.ps, self.grid, self.dtype = heads, window_size, grid, dtype
        self.temperature = nnx.Param(jnp.ones((heads, 1, 1), jnp.float32))
        kw = dict(rngs=rngs, dtype=dtype, bias=bias)
        self.qkv = conv(dim, 3 * dim, 1, **kw)
        self.qkv_dwconv = conv(3 * dim, 3 * dim, 3, groups=3 * dim, **kw)
        self.project_out = conv(dim, dim, 1, **kw)

    def __call__(self, x):
        B, H, W, C = x.shape
        p, h = self.ps, self.heads
        nh, nw = H // p, W // p
        # (B, nh, p, nw, p, heads, d): the (h ph) split of the reference, window index outer
        split = lambda t: t.reshape(B, nh, p, nw, p, h, C // h)  # noqa: E731
        if self.grid:  # b (ph pw) head d (h w)
            to_groups = lambda t: split(t).transpose(0, 2, 4, 5, 6, 1, 3).reshape(B, p * p, h, C // h, nh * nw)  # noqa: E731
        else:  # b (h w) head d (ph pw)
            to_groups = lambda t: split(t).transpose(0, 1, 3, 5, 6, 2, 4).reshape(B, nh * nw, h, C // h, p * p)  # noqa: E731
        q, k, v = (to_groups(t) for t in jnp.split(self.qkv_dwconv(self.qkv(x)), 3, axis=-1))
        q, k = (l2_normalize(t.astype(jnp.float32)) for t in (q, k))
        attn = jnp.einsum("bghdn,bghen->bghde", q, k, precision=precision(self.dtype)) * self.temperature[...]
        attn = jax.nn.softmax(attn, axis=-1).astype(v.dtype)
        out = jnp.einsum("bghde,bghen->bghdn", attn, v, precision=precision(v.dtype))
        if self.grid:
            out = out.reshape(B, p, p, h, C // h, nh, nw).transpose(0, 5, 1, 6, 2, 3, 4)
        else:
            out = out.reshape(B, nh, nw, h, C // h, p, p).transpose(0, 1, 5, 2, 6, 3, 4)
        return self.project_out(out.reshape(B, H, W, C))


class Rearrange(nnx.Module):
    """The reference's einops Rearrange layers between NHWC maps and (B, X, Y, w, w, C) groups of tokens: 'block' takes
    w x w windows, 'grid' the w x w pixels H/w apart; `back` undoes it."""

    def __init__(self, kind, window_size, back=False):
        self.kind, self.w, self.back = kind, window_size, back

    def __call__(self, x):
        w = self.w
        if self.back:
            B, X, Y, _, _, C = x.shape
            perm = (0, 1, 3, 2, 4, 5) if self.kind == "block" else (0, 3, 1, 4, 2, 5)
            return x.transpose(perm).reshape(B, X * w, Y * w, C)
        B, H, W, C = x.shape
        if self.kind == "block":  # b d (x w1) (y w2) -> b x y w1 w2 d
            return x.reshape(B, H // w, w, W // w, w, C).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(B, w, H // w, w, W // w, C).transpose(0, 2, 4, 1, 3, 5)  # b d (w1 x) (w2 y) -> b x y w1 w2 d


class OSABlock(nnx.Module):
    """OSA_Block: `layer` is the reference's 13-entry nn.Sequential (indices 1, 3, 7 and 9 are its Rearranges)."""

    def __init__(self, dim, window_size, with_pe, *, rngs, dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype)

        def attention():
            return PreNormResidual(dim, Attention(dim, dim // 4, window_size, with_pe, **kw), eps=1e-5)

        def ffn():
            return PreNormResidual(dim, GatedConvFeedForward(dim, **kw), eps=1e-6)

        def channel(grid):
            return PreNormResidual(dim, ChannelAttention(dim, HEADS, window_size, grid, **kw), eps=1e-6)

        self.layer = Sequential([
            MBConvResidual(dim, **kw),
            Rearrange("block", window_size), attention(), Rearrange("block", window_size, back=True),
            ffn(), channel(grid=False), ffn(),
            Rearrange("grid", window_size), attention(), Rearrange("grid", window_size, back=True),
            ffn(), channel(grid=True), ffn(),
        ])

    def __call__(self, x):
        return self.layer(x)


def max_pool(x, k, stride):
    """F.max_pool2d(x, k, stride) (no padding, floor) on NHWC."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, stride, stride, 1), "VALID")


def bilinear_matrix(n_in, n_out):
    """(n_out, n_in) weights of F.interpolate(mode='bilinear', align_corners=False) along one axis, as torch computes them
    in float32: source coordinate scale * (i + 0.5) - 0.5 clamped at 0, scale = in / out, the next neighbour clamped at
    the edge. A matrix rather than a gather: its sizes need no comparison when they are symbolic (an ONNX trace)."""
    scale = jnp.asarray(n_in, jnp.float32) / jnp.asarray(n_out, jnp.float32)
    src = jnp.maximum(scale * (jax.lax.iota(jnp.float32, n_out) + 0.5) - 0.5, 0.0)[:, None]
    i0 = src.astype(jnp.int32)  # src >= 0: truncation is the floor
    i1 = jnp.minimum(i0 + 1, jnp.asarray(n_in, jnp.int32) - 1)
    l1 = jnp.clip(src - i0.astype(jnp.float32), 0.0, 1.0)
    cols = jax.lax.iota(jnp.int32, n_in)[None, :]
    return jnp.where(cols == i0, 1.0 - l1, 0.0) + jnp.where(cols == i1, l1, 0.0)


def bilinear_resize(x, h, w):
    """F.interpolate(x, (h, w), mode='bilinear', align_corners=False) on NHWC."""
    p = precision(x.dtype)
    x = jnp.einsum("oi,bihc->bohc", bilinear_matrix(x.shape[1], h).astype(x.dtype), x, precision=p)
    return jnp.einsum("oi,bhic->bhoc", bilinear_matrix(x.shape[2], w).astype(x.dtype), x, precision=p)


class ESA(nnx.Module):
    """Enhanced spatial attention (RFANet's, without conv_max/conv3_): a strided conv, a 7/3 max pool and a conv give a
    coarse map, upsampled back (bilinear) and added to a 1x1 branch; x * sigmoid(conv4(...))."""

    def __init__(self, esa_channels, n_feats, *, rngs, dtype=jnp.float32):
        f = esa_channels
        kw = dict(rngs=rngs, dtype=dtype)
        self.conv1 = conv(n_feats, f, 1, **kw)
        self.conv_f = conv(f, f, 1, **kw)
        self.conv2 = conv(f, f, 3, stride=2, padding=0, **kw)
        self.conv3 = conv(f, f, 3, **kw)
        self.conv4 = conv(f, n_feats, 1, **kw)

    def __call__(self, x):
        c1_ = self.conv1(x)
        c3 = self.conv3(max_pool(self.conv2(c1_), 7, 3))
        c3 = bilinear_resize(c3, x.shape[1], x.shape[2])
        return x * jax.nn.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class OSAG(nnx.Module):
    """`block_num` OSA blocks and a 1x1 conv (`residual_layer`), the group's residual, then ESA."""

    def __init__(self, channel_num=64, bias=True, block_num=4, window_size=0, pe=False, *, rngs, dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype)
        self.residual_layer = Sequential([*(OSABlock(channel_num, window_size, pe, **kw) for _ in range(block_num)),
                                          conv(channel_num, channel_num, 1, bias=bias, **kw)])
        self.esa = ESA(max(channel_num // 4, 16), channel_num, **kw)

    def __call__(self, x):
        return self.esa(self.residual_layer(x) + x)


class OmniSR(nnx.Module):
    """OmniSR on NHWC images in [0, 1]: (B, H, W, in_ch) -> (B, scale*H, scale*W, out_ch) float32, any H, W."""

    def __init__(self, in_ch=3, out_ch=3, num_feat=64, block_num=1, pe=True, window_size=8, res_num=1, scale=4, bias=True,
                 *, rngs=None, dtype=jnp.float32):
        if scale < 1 or block_num < 1 or res_num < 1 or window_size < 1:
            raise ValueError(f"OmniSR needs scale, block_num, res_num and window_size >= 1, got {scale}, {block_num}, "
                             f"{res_num}, {window_size}")
        if num_feat < 4 or num_feat % 4:
            raise ValueError(f"OmniSR num_feat must be a multiple of 4 (its attentions' heads), got {num_feat}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(rngs=rngs, dtype=dtype)
        self.scale, self.in_ch, self.out_ch, self.dtype = scale, in_ch, out_ch, dtype
        self.window_size = window_size
        self.size_multiple = 1  # the forward zero-pads to the window itself, as the reference does
        self.tile_multiple = window_size  # the windows are anchored at the image origin
        self.residual_layer = Sequential([OSAG(num_feat, bias, block_num, window_size, pe, **kw) for _ in range(res_num)])
        self.input = conv(in_ch, num_feat, 3, bias=bias, **kw)
        self.output = conv(num_feat, num_feat, 3, bias=bias, **kw)
        self.up = Sequential([conv(num_feat, out_ch * scale * scale, 3, bias=bias, **kw), PixelShuffle(scale)])

    def __call__(self, x):
        x = x.astype(jnp.float32)
        H, W = x.shape[1:3]
        w = self.window_size
        hp, wp = w * ((H + w - 1) // w), w * ((W + w - 1) // w)
        x = jnp.pad(x, ((0, 0), (0, hp - H), (0, wp - W), (0, 0))).astype(self.dtype)  # check_image_size: zeros
        residual = self.input(x)
        out = self.up(self.output(self.residual_layer(residual)) + residual)
        return top_left(out.astype(jnp.float32), H * self.scale, W * self.scale)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "OmniSR")
    return OmniSR(int(full["in_ch"]), int(full["out_ch"]), int(full["num_feat"]), int(full["block_num"]), bool(full["pe"]),
                  int(full["window_size"]), int(full["res_num"]), int(full["scale"]), bool(full["bias"]), rngs=rngs,
                  dtype=dtype)
