"""MoSR (Mamba Out Super-Resolution, umzi2; trained in neosr and traiNNer-redux) in Flax NNX, numerically equal to
spandrel's `architectures/MoSR/__arch/mosr_arch.py`.

The module tree mirrors the reference's: `gblocks` is the nn.Sequential [conv, GatedCNNBlock x n_block, conv, Mish,
conv, Mish, conv1x1] with the same indices, `shortcut` a ConvBlock (two 3x3 conv + Mish, plus a 1x1), `upsampler` one
of three: `ps` (conv + PixelShuffle), `gps` (GPS: a conv to 8 predictions per output channel, averaged, then
PixelShuffle; we run the one conv with the averaged kernel) or `dys` (DySample, groups 4, end conv). A GatedCNNBlock
(MambaOut's unit) normalises each pixel over channels (eps 1e-6, the reference's own LayerNorm), splits a 3x3 fc1
into a Mish gate g, an identity part i and a depthwise k x k part c, and returns Mish(fc2(Mish(g) * [i, conv(c)])) +
x - 0.5. Both the blocks and the whole network add `shortcut - 0.5`, as the reference does.

Convolutions and per-pixel ops only (DySample samples near each pixel): tiles are exact once the overlap covers the
receptive field. Built in eval mode; `model.train()` turns on drop path (timm's, rates linspace(0, drop_path,
n_block) per block), the only difference between torch's train and eval modes here.
"""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.attention import drop_path
from jaxsr.archs.common import (Act, PixelShuffle, Sequential, conv, conv_general_dilated, spec_kwargs,
                                trunc_normal_002)
from jaxsr.archs.upsample import DySample

# A spec's fields and their defaults: spandrel's MoSR class defaults, which traiNNer-redux's `mosr` takes too (its
# `mosr_t` is n_block 5, dim 48); the scale is the run's. `upsampler` takes the class's names: ps, dys, gps, and
# traiNNer-redux's spellings of them, so that its option files' values work unchanged
DEFAULTS = dict(in_ch=3, out_ch=3, n_block=24, dim=64, upsampler="ps", drop_path=0.0, kernel_size=7,
                expansion_ratio=1.5, conv_ratio=1.0)
UPSAMPLERS = ("ps", "dys", "gps")
REDUX_UPSAMPLERS = {"pixelshuffle": "ps", "dysample": "dys", "geoensemblepixelshuffle": "gps"}
GPS_ENSEMBLE = 8  # GPS's predictions per output channel (the geometric ensemble's 8 transforms)
DYSAMPLE_GROUPS = 4  # the reference builds DySample with its default groups


def hidden_channels(dim, expansion_ratio):
    """fc1's two halves: int(expansion_ratio * dim), as the reference computes it."""
    return int(expansion_ratio * dim)


def conv_channels(dim, conv_ratio):
    """The depthwise conv's channels: int(conv_ratio * dim)."""
    return int(conv_ratio * dim)


class GatedCNNBlock(nnx.Module):
    def __init__(self, dim, expansion_ratio, conv_ratio, kernel_size, rate, *, rngs, dtype):
        hidden, conv_ch = hidden_channels(dim, expansion_ratio), conv_channels(dim, conv_ratio)
        init = dict(rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)  # the reference's _init_weights
        # the reference's own channel LayerNorm: per pixel over channels, eps 1e-6, two-pass (biased) variance
        self.norm = nnx.LayerNorm(dim, epsilon=1e-6, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32,
                                  rngs=rngs)
        self.fc1 = conv(dim, 2 * hidden, 3, **init)
        self.act = Act("mish")
        self.split = (hidden, 2 * hidden - conv_ch)  # g | i | c at these channel offsets
        self.conv = conv(conv_ch, conv_ch, kernel_size, groups=conv_ch, **init)
        self.fc2 = conv(hidden, dim, 3, **init)
        self.drop_path = drop_path(rate, rngs)

    def __call__(self, x):
        shortcut = x
        y = self.fc1(self.norm(x))
        a, b = self.split
        g, i, c = y[..., :a], y[..., a:b], y[..., b:]
        y = self.act(self.fc2(self.act(g) * jnp.concatenate([i, self.conv(c)], axis=-1)))
        return self.drop_path(y) + (shortcut - 0.5)


class ConvBlock(nnx.Module):
    """conv3x3, Mish, conv3x3, Mish, plus a 1x1 conv of the input."""

    def __init__(self, in_ch, out_ch, *, rngs, dtype):
        self.block = Sequential([conv(in_ch, out_ch, 3, rngs=rngs, dtype=dtype), Act("mish"),
                                 conv(out_ch, out_ch, 3, rngs=rngs, dtype=dtype), Act("mish")])
        self.conv11 = conv(in_ch, out_ch, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.block(x) + self.conv11(x)


class GPS(nnx.Module):
    """Geo-ensemble PixelShuffle: a 3x3 conv to 8 x s^2 x out_ch channels, the mean of the 8 groups (NCHW channel
    e * (C / 8) + c), then PixelShuffle(s).

    The mean of the 8 groups' convolutions is the convolution with the mean of their kernels (and biases), which we
    run instead: the same function up to float rounding with an eighth of the multiply-adds, in training too (the
    gradients reach `in_to_k`'s weights through the mean)."""

    def __init__(self, dim, scale, out_ch, *, rngs, dtype):
        self.in_to_k = conv(dim, scale * scale * out_ch * GPS_ENSEMBLE, 3, rngs=rngs, dtype=dtype)
        self.ps = PixelShuffle(scale)

    def __call__(self, x):
        k = self.in_to_k
        kh, kw, c_in, c = k.kernel.shape
        kernel = k.kernel[...].reshape(kh, kw, c_in, GPS_ENSEMBLE, c // GPS_ENSEMBLE).mean(3)
        bias = k.bias[...].reshape(GPS_ENSEMBLE, c // GPS_ENSEMBLE).mean(0)
        y = conv_general_dilated(x.astype(k.dtype), kernel.astype(k.dtype), (1, 1), k.padding,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=k.precision)
        return self.ps(y + bias.astype(y.dtype))


class MoSR(nnx.Module):
    """MoSR on NHWC images in [0, 1], any size: gblocks(x) + shortcut(x) - 0.5, then the upsampler."""

    def __init__(self, *, in_ch=3, out_ch=3, scale=4, n_block=24, dim=64, upsampler="ps", drop_path=0.0, kernel_size=7,
                 expansion_ratio=1.5, conv_ratio=1.0, rngs: nnx.Rngs, dtype=jnp.float32):
        upsampler = REDUX_UPSAMPLERS.get(upsampler, upsampler)
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown MoSR upsampler {upsampler!r} ({', '.join(UPSAMPLERS)}, or traiNNer-redux's "
                             f"{', '.join(REDUX_UPSAMPLERS)})")
        hidden, conv_ch = hidden_channels(dim, expansion_ratio), conv_channels(dim, conv_ratio)
        if not 0 < conv_ch <= hidden:
            raise ValueError(f"MoSR: conv_ratio {conv_ratio} gives {conv_ch} depthwise channels of {hidden} hidden "
                             f"(expansion_ratio {expansion_ratio}); it needs 0 < conv channels <= hidden")
        if kernel_size % 2 == 0:
            raise ValueError(f"MoSR: kernel_size {kernel_size} must be odd (the reference's padding keeps only odd sizes)")
        if upsampler == "dys" and dim % DYSAMPLE_GROUPS:
            raise ValueError(f"MoSR with DySample: dim ({dim}) must be a multiple of {DYSAMPLE_GROUPS}")
        if upsampler != "dys" and out_ch != in_ch:
            raise ValueError(f"MoSR's {upsampler} upsampler outputs in_ch ({in_ch}) channels, not out_ch {out_ch} "
                             "(only dys has its own)")
        self.scale, self.in_ch, self.out_ch, self.dtype = scale, in_ch, out_ch, dtype
        self.size_multiple = self.tile_multiple = 1  # convolutions only: any size, tiles anywhere
        # torch.linspace(0, drop_path, n_block) in float32, as the reference draws its rates
        rates = [float(r) for r in np.linspace(0.0, drop_path, n_block, dtype=np.float32)]
        self.gblocks = Sequential(
            [conv(in_ch, dim, 3, rngs=rngs, dtype=dtype)]
            + [GatedCNNBlock(dim, expansion_ratio, conv_ratio, kernel_size, r, rngs=rngs, dtype=dtype) for r in rates]
            + [conv(dim, 2 * dim, 3, rngs=rngs, dtype=dtype), Act("mish"), conv(2 * dim, dim, 3, rngs=rngs, dtype=dtype),
               Act("mish"), conv(dim, dim, 1, rngs=rngs, dtype=dtype)])
        self.shortcut = ConvBlock(in_ch, dim, rngs=rngs, dtype=dtype)
        if upsampler == "ps":
            self.upsampler = Sequential([conv(dim, out_ch * scale * scale, 3, rngs=rngs, dtype=dtype), PixelShuffle(scale)])
        elif upsampler == "gps":
            self.upsampler = GPS(dim, scale, out_ch, rngs=rngs, dtype=dtype)
        else:
            self.upsampler = DySample(dim, out_ch, scale, groups=DYSAMPLE_GROUPS, end_convolution=True, rngs=rngs,
                                      dtype=dtype)
        self.eval()

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1] -> (B, sH, sW, out_ch) float32."""
        x = x.astype(self.dtype)
        x = self.gblocks(x) + (self.shortcut(x) - 0.5)
        return self.upsampler(x).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "MoSR")
    return MoSR(**full, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
