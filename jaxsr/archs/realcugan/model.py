"""Real-CUGAN (bilibili's "Real Cascade U-Nets for Anime Image Super Resolution"): UpCunet2x, UpCunet3x, UpCunet4x
and UpCunet2x_fast, mirroring spandrel's module tree (`architectures/RealCUGAN/__arch/upcunet_v3.py`) attribute for
attribute, so that the released files' keys (`unet1.conv2.seblock.conv1.weight`, ...) map mechanically.

Two U-Nets in cascade: `unet1` upsamples (a transposed conv at its bottom), `unet2` refines at the output size and
its result is added to unet1's, cropped. Every conv is unpadded ("valid"); the input is reflect-padded once, by a fixed
margin plus what brings the sides to the network's multiple (2, or 4 for x3), exactly as spandrel's forward does
(one torch `reflect` pad, whose rows differ from padding twice), and the output is cropped to scale x the input size.
So any size runs, and `size_multiple` is 1. The fast x2 model runs on a pixel-unshuffled input and needs sides that
are multiples of 4 (`size_multiple` 4; spandrel's descriptor reflect-pads other sizes to them, and so does the
module). Below spandrel's minimum side (32, fast 40) torch's reflect pad may refuse the margin; we reflect on, as
numpy does (spandrel's descriptor pads such inputs up to its minimum first: other border pixels there).

The SE blocks average over the whole feature map, so every output pixel depends on the whole input: tiles are never
exactly the whole image (docs/archs.md). `tile_multiple` is the stride of the cascade's down-sampling grid in input
pixels, which keeps tiles on the grid the whole image uses.

`pro` models take x * 0.7 + 0.15 and map the output back with (y - 0.15) / 0.7; their files carry a `pro` tensor,
which we keep as a (1,) buffer. `alpha` (the call's argument, 1 by default as spandrel calls it) scales unet2's
deepest decoder features: the denoise strength of the original's inference scripts.

The pads and crops are written with symbolic sizes in mind (a gather from an index ramp for the reflect pad, sides
kept as multiples of the grid), so that an ONNX graph keeps its height and width dynamic.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import (Buffer, LeakyReLU, PixelShuffle, Sequential, conv, host_init, pixel_unshuffle, precision,
                                spec_kwargs, top_left)

# A spec's fields and their defaults (the released models' channels); the scale is the run's
DEFAULTS = dict(in_ch=3, out_ch=3, pro=False, fast=False)
SCALES = (2, 3, 4)
# scale -> (the reflect margin, the side multiple the input is padded to), as the reference's forward pads
_PAD = {2: (18, 2), 3: (14, 4), 4: (19, 2)}
_FAST_PAD = 38  # the fast x2's margin, before its pixel unshuffle
SLOPE = 0.1  # every LeakyReLU of the reference


def kaiming_fan_out(fan_out_axes):
    """kaiming_normal_(mode='fan_out', nonlinearity='relu') as the reference initialises its U-Nets: std sqrt(2 / fan_out),
    fan_out the product of the kernel's spatial and `fan_out_axes` sizes (torch's dimension 0 of the weight)."""
    def sample(g, shape):
        fan_out = shape[0] * shape[1] * math.prod(shape[a] for a in fan_out_axes)
        return g.normal(0.0, math.sqrt(2.0 / fan_out), shape)

    return host_init(sample, nnx.initializers.variance_scaling(2.0, "fan_out", "normal"))


def unet_conv(c_in, c_out, k, *, rngs, dtype, stride=1):
    """nn.Conv2d(c_in, c_out, k, stride, 0) with the reference's U-Net init."""
    return conv(c_in, c_out, k, stride=stride, padding=0, rngs=rngs, dtype=dtype, kernel_init=kaiming_fan_out((3,)))


class ConvTranspose(nnx.Module):
    """nn.ConvTranspose2d(c_in, c_out, k, stride, padding) on NHWC.

    The kernel is stored (k, k, c_out, c_in), so that the bridge's HWIO -> OIHW transpose gives torch's
    (c_in, c_out, k, k); the forward is the equivalent convolution of the stride-dilated input with the spatially
    flipped kernel, padded k - 1 - padding on each side."""

    def __init__(self, c_in, c_out, k, stride, padding, *, rngs, dtype=jnp.float32):
        if padding > k - 1:
            raise ValueError(f"ConvTranspose: padding {padding} > kernel {k} - 1 is not supported")
        self.kernel = nnx.Param(kaiming_fan_out((3,))(rngs.params(), (k, k, c_out, c_in)))  # torch's dim 0 is c_in
        self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))
        self.k, self.stride, self.padding, self.dtype = k, stride, padding, dtype

    def __call__(self, x):
        kernel = jnp.flip(self.kernel[...], (0, 1)).transpose(0, 1, 3, 2).astype(self.dtype)  # HWIO
        p = self.k - 1 - self.padding
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel, (1, 1), ((p, p), (p, p)),
                                         lhs_dilation=(self.stride, self.stride),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision(self.dtype))
        return y + self.bias[...].astype(y.dtype)


def lrelu(x):
    return jax.nn.leaky_relu(x, SLOPE)


def crop(x, n):
    """F.pad(x, (-n, -n, -n, -n)): n pixels off every side."""
    return x[:, n:x.shape[1] - n, n:x.shape[2] - n]


class SEBlock(nnx.Module):
    """Squeeze-and-excitation over the whole map: x * sigmoid(conv2(relu(conv1(mean(x))))), the mean in float32
    (the reference's half-precision path)."""

    def __init__(self, channels, reduction=8, bias=False, *, rngs, dtype=jnp.float32):
        self.conv1 = conv(channels, channels // reduction, 1, padding=0, bias=bias, rngs=rngs, dtype=dtype,
                          kernel_init=kaiming_fan_out((3,)))
        self.conv2 = conv(channels // reduction, channels, 1, padding=0, bias=bias, rngs=rngs, dtype=dtype,
                          kernel_init=kaiming_fan_out((3,)))

    def __call__(self, x):
        x0 = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
        x0 = jax.nn.sigmoid(self.conv2(jax.nn.relu(self.conv1(x0))))
        return x * x0


class UNetConv(nnx.Module):
    def __init__(self, c_in, c_mid, c_out, se, *, rngs, dtype=jnp.float32):
        self.conv = Sequential([unet_conv(c_in, c_mid, 3, rngs=rngs, dtype=dtype), LeakyReLU(SLOPE),
                                unet_conv(c_mid, c_out, 3, rngs=rngs, dtype=dtype), LeakyReLU(SLOPE)])
        self.seblock = SEBlock(c_out, 8, bias=True, rngs=rngs, dtype=dtype) if se else None

    def __call__(self, x):
        z = self.conv(x)
        return z if self.seblock is None else self.seblock(z)


class UNet1(nnx.Module):
    """The first U-Net (one down/up level); `bottom` is (kernel, stride, padding) of its transposed bottom conv:
    (4, 2, 3) in UNet1, (5, 3, 2) in the reference's UNet1x3."""

    def __init__(self, c_in, c_out, deconv, bottom=(4, 2, 3), *, rngs, dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype)
        self.conv1 = UNetConv(c_in, 32, 64, se=False, **kw)
        self.conv1_down = unet_conv(64, 64, 2, stride=2, **kw)
        self.conv2 = UNetConv(64, 128, 64, se=True, **kw)
        self.conv2_up = ConvTranspose(64, 64, 2, 2, 0, **kw)
        self.conv3 = unet_conv(64, 64, 3, **kw)
        self.conv_bottom = ConvTranspose(64, c_out, *bottom, **kw) if deconv else unet_conv(64, c_out, 3, **kw)

    def __call__(self, x):
        x1 = self.conv1(x)
        x2 = self.conv2(lrelu(self.conv1_down(x1)))
        x2 = lrelu(self.conv2_up(x2))
        x3 = lrelu(self.conv3(crop(x1, 4) + x2))
        return self.conv_bottom(x3)


class UNet2(nnx.Module):
    """The second U-Net (two levels); `alpha` scales its deepest decoder output."""

    def __init__(self, c_in, c_out, deconv, *, rngs, dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype)
        self.conv1 = UNetConv(c_in, 32, 64, se=False, **kw)
        self.conv1_down = unet_conv(64, 64, 2, stride=2, **kw)
        self.conv2 = UNetConv(64, 64, 128, se=True, **kw)
        self.conv2_down = unet_conv(128, 128, 2, stride=2, **kw)
        self.conv3 = UNetConv(128, 256, 128, se=True, **kw)
        self.conv3_up = ConvTranspose(128, 128, 2, 2, 0, **kw)
        self.conv4 = UNetConv(128, 64, 64, se=True, **kw)
        self.conv4_up = ConvTranspose(64, 64, 2, 2, 0, **kw)
        self.conv5 = unet_conv(64, 64, 3, **kw)
        self.conv_bottom = ConvTranspose(64, c_out, 4, 2, 3, **kw) if deconv else unet_conv(64, c_out, 3, **kw)

    def __call__(self, x, alpha=1.0):
        x1 = self.conv1(x)
        x2 = self.conv2(lrelu(self.conv1_down(x1)))
        x3 = self.conv3(lrelu(self.conv2_down(x2)))
        x3 = lrelu(self.conv3_up(x3))
        x4 = self.conv4(crop(x2, 4) + x3)
        if not (isinstance(alpha, (int, float)) and alpha == 1):
            x4 = x4 * jnp.asarray(alpha, x4.dtype)
        x4 = lrelu(self.conv4_up(x4))
        x5 = lrelu(self.conv5(crop(x1, 16) + x4))
        return self.conv_bottom(x5)


def reflect_pad(x, margin, multiple):
    """torch's F.pad(x, (m, m + pw, m, m + ph), 'reflect') on NHWC, with (ph, pw) what brings H, W up to `multiple`.

    A gather from a reflected index ramp: the padded side comes out as multiple * ceil(side / multiple) + 2 * margin,
    a clean expression that the strided convs divide exactly when the size is symbolic (an ONNX trace). Margins past
    what torch can reflect (side - 1) reflect again, as numpy's 'reflect' does, where torch refuses."""
    for axis in (1, 2):
        n = x.shape[axis]
        j = jax.lax.iota(jnp.int32, multiple * ((n + multiple - 1) // multiple) + 2 * margin) - margin
        last = jnp.asarray(n, jnp.int32) - 1
        j = jnp.remainder(jnp.abs(j), jnp.maximum(2 * last, 1))
        x = jnp.take(x, jnp.where(j > last, 2 * last - j, j), axis=axis, mode="clip")
    return x


def nearest(x, s):
    """F.interpolate(scale_factor=s, mode='nearest') for an integer s."""
    return jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)


class UpCunet(nnx.Module):
    """spandrel's UpCunet2x / UpCunet3x / UpCunet4x (`scale`, `pro`) and UpCunet2x_fast (`fast`, x2 only) on NHWC
    images in [0, 1]."""

    def __init__(self, in_ch=3, out_ch=3, scale=2, pro=False, fast=False, *, rngs=None, dtype=jnp.float32):
        if scale not in SCALES:
            raise ValueError(f"Real-CUGAN supports scale 2, 3 or 4, got {scale}")
        if fast and (scale != 2 or pro):
            raise ValueError("the fast Real-CUGAN (UpCunet2x_fast) is x2 only and has no pro mode")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(rngs=rngs, dtype=dtype)
        self.scale, self.in_ch, self.out_ch, self.dtype = scale, in_ch, out_ch, dtype
        self.is_pro, self.fast = bool(pro), bool(fast)
        self.size_multiple = 4 if fast else 1
        self.tile_multiple = 4 if fast or scale == 3 else 2  # the down-sampling grid, in input pixels
        if pro:
            self.pro = Buffer(jnp.zeros((1,), jnp.float32))  # a marker: its value is never read
        if fast:
            self.unet1 = UNet1(4 * in_ch, 64, deconv=True, **kw)
            self.unet2 = UNet2(64, 64, deconv=False, **kw)
            self.ps = PixelShuffle(2)
            self.conv_final = conv(64, 4 * out_ch, 3, padding=0, **kw)
        elif scale == 4:
            self.unet1 = UNet1(in_ch, 64, deconv=True, **kw)
            self.unet2 = UNet2(64, 64, deconv=False, **kw)
            self.ps = PixelShuffle(2)
            self.conv_final = conv(64, 4 * out_ch, 3, padding=0, **kw)
        else:
            self.unet1 = UNet1(in_ch, out_ch, deconv=True, bottom=(4, 2, 3) if scale == 2 else (5, 3, 2), **kw)
            self.unet2 = UNet2(in_ch, out_ch, deconv=False, **kw)

    def __call__(self, x, alpha=1.0):
        """x: (B, H, W, in_ch) -> (B, scale*H, scale*W, out_ch) float32; `alpha` as the reference's forward takes it."""
        x = x.astype(jnp.float32)
        H, W = x.shape[1:3]
        s = self.scale
        if self.fast:
            if not (isinstance(alpha, (int, float)) and alpha == 1):
                raise ValueError("the fast Real-CUGAN takes no alpha")
            return self._fast(x, H, W)
        if self.is_pro:
            x = x * 0.7 + 0.15  # pro models work on this range
        x00 = x
        margin, multiple = _PAD[s]
        x = self.unet1(reflect_pad(x, margin, multiple).astype(self.dtype))
        x0 = self.unet2(x, alpha)
        x = x0 + crop(x, 20)
        if s == 4:
            x = self.ps(crop(self.conv_final(x), 1))
        x = top_left(x.astype(jnp.float32), s * H, s * W)
        if s == 4:
            x = x + nearest(x00, 4)
        if self.is_pro:
            x = (x - 0.15) / 0.7
        return x

    def _fast(self, x, H, W):
        if isinstance(H, int) and isinstance(W, int) and (H % 4 or W % 4):
            # as spandrel's ImageModelDescriptor (and jaxsr.upscale) pad for it: reflect, bottom and right
            x = jnp.pad(x, ((0, 0), (0, -H % 4), (0, -W % 4), (0, 0)), mode="reflect")
            return self._fast(x, x.shape[1], x.shape[2])[:, : 2 * H, : 2 * W]
        x00 = x
        x = pixel_unshuffle(reflect_pad(x, _FAST_PAD, 2).astype(self.dtype), 2)
        x = self.unet1(x)
        x = self.unet2(x) + crop(x, 20)
        x = self.ps(crop(self.conv_final(x), 1))
        return top_left(x.astype(jnp.float32), 2 * H, 2 * W) + nearest(x00, 2)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "Real-CUGAN")
    return UpCunet(int(full["in_ch"]), int(full["out_ch"]), int(full["scale"]), bool(full["pro"]), bool(full["fast"]),
                   rngs=rngs, dtype=dtype)
