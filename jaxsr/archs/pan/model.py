"""PAN, the pixel-attention network (Zhao et al., "Efficient Image Super-Resolution Using Pixel Attention", ECCVW
2020), mirroring zhaohengyuan1/PAN's `codes/models/archs/PAN_arch.py` module tree and numerics.

conv_first, `nb` SCPA blocks (`SCPA_trunk`: two 1x1 branches of nf // 2 channels, one a 3x3 conv `k1`, the other a
pixel-attention conv `PAConv`, LeakyReLU(0.2) after each, concatenated and mixed by the 1x1 `conv3`, plus the input),
trunk_conv added to the first features; then per stage nearest upsampling (x2, or x3 at once; x4 in two x2 stages), a
conv to `unf` channels (`upconv1`, `upconv2`), pixel attention (`att1`, `att2`: x * sigmoid(conv1x1(x))) and a conv
(`HRconv1`, `HRconv2`), LeakyReLU(0.2) after each of the last two; conv_last, plus the input upsampled by
F.interpolate(bilinear, align_corners=False). No padding requirement: any input size.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import LeakyReLU, Sequential, conv, spec_kwargs
from jaxsr.archs.srresnet.model import bilinear_upscale, nearest_upscale

# A spec's fields and their defaults (the released PANx4_DF2K: 40 features, 24 upsampling features, 16 blocks)
DEFAULTS = dict(in_ch=3, out_ch=3, nf=40, unf=24, nb=16)


class PA(nnx.Module):
    """Pixel attention: x * sigmoid(conv1x1(x))."""

    def __init__(self, nf, *, rngs, dtype):
        self.conv = conv(nf, nf, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return x * jax.nn.sigmoid(self.conv(x))


class PAConv(nnx.Module):
    """k4(k3(x) * sigmoid(k2(x))): k2 a 1x1 conv with bias, k3 and k4 3x3 convs without."""

    def __init__(self, nf, *, rngs, dtype):
        self.k2 = conv(nf, nf, 1, rngs=rngs, dtype=dtype)
        self.k3 = conv(nf, nf, 3, rngs=rngs, dtype=dtype, bias=False)
        self.k4 = conv(nf, nf, 3, rngs=rngs, dtype=dtype, bias=False)

    def __call__(self, x):
        return self.k4(self.k3(x) * jax.nn.sigmoid(self.k2(x)))


class SCPA(nnx.Module):
    """Self-calibrated block with pixel attention (reduction 2, stride 1, dilation 1, as PAN builds it)."""

    def __init__(self, nf, *, rngs, dtype):
        gw = nf // 2
        kw = dict(rngs=rngs, dtype=dtype, bias=False)
        self.conv1_a = conv(nf, gw, 1, **kw)
        self.conv1_b = conv(nf, gw, 1, **kw)
        self.k1 = Sequential([conv(gw, gw, 3, **kw)])
        self.PAConv = PAConv(gw, rngs=rngs, dtype=dtype)
        self.conv3 = conv(gw * 2, nf, 1, **kw)
        self.lrelu = LeakyReLU(0.2)

    def __call__(self, x):
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return self.conv3(jnp.concatenate([a, b], axis=-1)) + x


class PAN(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, nf=40, unf=24, nb=16, scale=4, *, rngs=None, dtype=jnp.float32):
        if scale not in (2, 3, 4):
            raise ValueError(f"PAN supports scale 2, 3 or 4, got {scale}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(rngs=rngs, dtype=dtype)
        self.scale, self.in_ch, self.dtype = scale, in_ch, dtype
        self.size_multiple = self.tile_multiple = 1
        self.conv_first = conv(in_ch, nf, 3, **kw)
        self.SCPA_trunk = Sequential([SCPA(nf, **kw) for _ in range(nb)])
        self.trunk_conv = conv(nf, nf, 3, **kw)
        self.upconv1 = conv(nf, unf, 3, **kw)
        self.att1 = PA(unf, **kw)
        self.HRconv1 = conv(unf, unf, 3, **kw)
        if scale == 4:
            self.upconv2 = conv(unf, unf, 3, **kw)
            self.att2 = PA(unf, **kw)
            self.HRconv2 = conv(unf, unf, 3, **kw)
        self.conv_last = conv(unf, out_ch, 3, **kw)
        self.lrelu = LeakyReLU(0.2)

    def __call__(self, x):
        x = x.astype(jnp.float32)
        fea = self.conv_first(x.astype(self.dtype))
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        stages = [(self.upconv1, self.att1, self.HRconv1)]
        if self.scale == 4:
            stages.append((self.upconv2, self.att2, self.HRconv2))
        for upconv, att, hrconv in stages:
            fea = upconv(nearest_upscale(fea, 2 if self.scale == 4 else self.scale))
            fea = self.lrelu(hrconv(self.lrelu(att(fea))))
        return self.conv_last(fea).astype(jnp.float32) + bilinear_upscale(x, self.scale)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "PAN")
    return PAN(full["in_ch"], full["out_ch"], int(full["nf"]), int(full["unf"]), int(full["nb"]), int(full["scale"]),
               rngs=rngs, dtype=dtype)
