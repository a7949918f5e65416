"""SRResNet, SRGAN's generator (Ledig et al., CVPR 2017), as the two networks its users hold.

- MSRResNet, BasicSR's "modified SRResNet" (`basicsr/archs/srresnet_arch.py`, blocks from `arch_util.py`): conv_first
  + LeakyReLU(0.1), `num_block` conv-ReLU-conv residual blocks without BN (`body`), pixel-shuffle upsampling (x4: two
  x2 stages `upconv1`, `upconv2`; x2/x3: one stage `upconv1` of num_feat * s^2 channels), each followed by
  LeakyReLU(0.1), then conv_hr + LeakyReLU(0.1) and conv_last, plus the input upsampled by F.interpolate(bilinear,
  align_corners=False). Layouts `basicsr` (these names, BasicSR's released `MSRResNet_x{2,3,4}` files) and `mmsr`
  (xinntao's mmsr / traiNNer / PAN-repo names of the same tensors: `recon_trunk`, `HRconv`) build this network.
- SRResNet, the original network of xinntao's early BasicSR `architecture.py` (victorca25/traiNNer's
  `SRResNet_arch.SRResNet`), as `SRResNet_bicx4_in3nf64nb16.pth` was trained: one flat `nn.Sequential` `model`, with
  `model.0` conv, `model.1` a shortcut around `num_block` conv-ReLU-conv blocks (`sub.i.res.{0,2}`) and a conv
  (`sub.<num_block>`), then per x2 stage conv(nf, 4nf), PixelShuffle(2), ReLU (x3: one conv(nf, 9nf), PixelShuffle(3),
  ReLU), then conv, ReLU, conv; no input skip. Layout `original`: its released options (no norm, CNA, ReLU,
  pixelshuffle); the bridge refuses the others by name.

No padding requirement: any input size.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import Act, LeakyReLU, PixelShuffle, Sequential, conv, host_init, spec_kwargs

LAYOUTS = ("basicsr", "mmsr", "original")
# A spec's fields and their defaults (SRGAN's and BasicSR's MSRResNet_x4: 64 features, 16 blocks); the scale is the run's
DEFAULTS = dict(in_ch=3, out_ch=3, num_feat=64, num_block=16, layout="basicsr")

# BasicSR's default_init_weights(scale=0.1): kaiming_normal (fan_in, gain sqrt 2) scaled by 0.1, on every conv
_init = host_init(lambda g, s: g.normal(0.0, 0.1 * math.sqrt(2.0 / math.prod(s[:-1])), s),
                  nnx.initializers.variance_scaling(2.0 * 0.1**2, "fan_in", "normal"))


def bilinear_upscale(x, s):
    """F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=False) for an integer s, NHWC: output pixel
    s*k + j samples source position k + d_j, d_j = (j + 0.5) / s - 0.5, between pixel k and its neighbour (edges
    clamped, as torch clamps the source index). Shifts and weights only, so symbolic sizes trace (ONNX)."""
    def along(x, axis):
        n = x.shape[axis]
        first, last = jax.lax.slice_in_dim(x, 0, 1, axis=axis), jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
        prev = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)
        nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last], axis)
        outs = []
        for j in range(s):
            d = (j + 0.5) / s - 0.5
            outs.append((-d) * prev + (1 + d) * x if d < 0 else (1 - d) * x + d * nxt)
        out = jnp.concatenate([jnp.expand_dims(o, axis + 1) for o in outs], axis + 1)  # jnp.stack: no ONNX lowering
        return out.reshape(x.shape[:axis] + (s * n,) + x.shape[axis + 1:])

    return along(along(x, 1), 2)


def nearest_upscale(x, s):
    """F.interpolate(x, scale_factor=s, mode='nearest') for an integer s: each pixel repeated s times (NHWC)."""
    return jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)


class ResidualBlockNoBN(nnx.Module):
    """x + conv2(ReLU(conv1(x))) (res_scale 1, as MSRResNet builds it)."""

    def __init__(self, num_feat, *, rngs, dtype):
        self.conv1 = conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype, kernel_init=_init)
        self.conv2 = conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype, kernel_init=_init)

    def __call__(self, x):
        return x + self.conv2(jax.nn.relu(self.conv1(x)))


class MSRResNet(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, num_feat=64, num_block=16, scale=4, *, rngs=None, dtype=jnp.float32):
        if scale not in (2, 3, 4):
            raise ValueError(f"MSRResNet supports scale 2, 3 or 4 (BasicSR's upscale), got {scale}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(rngs=rngs, dtype=dtype, kernel_init=_init)
        self.scale, self.in_ch, self.dtype = scale, in_ch, dtype
        self.size_multiple = self.tile_multiple = 1
        self.conv_first = conv(in_ch, num_feat, 3, **kw)
        self.body = Sequential([ResidualBlockNoBN(num_feat, rngs=rngs, dtype=dtype) for _ in range(num_block)])
        if scale == 4:
            self.upconv1 = conv(num_feat, num_feat * 4, 3, **kw)
            self.upconv2 = conv(num_feat, num_feat * 4, 3, **kw)
            self.pixel_shuffle = PixelShuffle(2)
        else:
            self.upconv1 = conv(num_feat, num_feat * scale * scale, 3, **kw)
            self.pixel_shuffle = PixelShuffle(scale)
        self.conv_hr = conv(num_feat, num_feat, 3, **kw)
        self.conv_last = conv(num_feat, out_ch, 3, **kw)
        self.lrelu = LeakyReLU(0.1)

    def __call__(self, x):
        x = x.astype(jnp.float32)
        out = self.body(self.lrelu(self.conv_first(x.astype(self.dtype))))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.scale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out))).astype(jnp.float32)
        return out + bilinear_upscale(x, self.scale)


class ResNetBlock(nnx.Module):
    """The original 3-3 block: x + res(x), res = Sequential(conv, ReLU, conv) (CNA, no norm, res_scale 1)."""

    def __init__(self, num_feat, *, rngs, dtype):
        self.res = Sequential([conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype, kernel_init=_init), Act("relu"),
                               conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype, kernel_init=_init)])

    def __call__(self, x):
        return x + self.res(x)


class ShortcutBlock(nnx.Module):
    """x + sub(x)."""

    def __init__(self, sub):
        self.sub = sub

    def __call__(self, x):
        return x + self.sub(x)


class SRResNet(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, num_feat=64, num_block=16, scale=4, *, rngs=None, dtype=jnp.float32):
        if scale not in (2, 3, 4, 8):
            raise ValueError(f"the original SRResNet supports scale 2, 3, 4 or 8, got {scale}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(rngs=rngs, dtype=dtype, kernel_init=_init)
        self.scale, self.in_ch, self.dtype = scale, in_ch, dtype
        self.size_multiple = self.tile_multiple = 1
        trunk = [ResNetBlock(num_feat, rngs=rngs, dtype=dtype) for _ in range(num_block)]
        layers = [conv(in_ch, num_feat, 3, **kw), ShortcutBlock(Sequential([*trunk, conv(num_feat, num_feat, 3, **kw)]))]
        for r in [3] if scale == 3 else [2] * int(math.log2(scale)):
            layers += [conv(num_feat, num_feat * r * r, 3, **kw), PixelShuffle(r), Act("relu")]
        layers += [conv(num_feat, num_feat, 3, **kw), Act("relu"), conv(num_feat, out_ch, 3, **kw)]
        self.model = Sequential(layers)

    def __call__(self, x):
        return self.model(x.astype(self.dtype)).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "SRResNet")
    if full["layout"] not in LAYOUTS:
        raise ValueError(f"SRResNet layout must be one of {', '.join(LAYOUTS)}, got {full['layout']!r}")
    cls = SRResNet if full["layout"] == "original" else MSRResNet
    return cls(full["in_ch"], full["out_ch"], int(full["num_feat"]), int(full["num_block"]), int(full["scale"]), rngs=rngs,
               dtype=dtype)
