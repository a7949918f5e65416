"""RRDBNet (ESRGAN / Real-ESRGAN), mirroring BasicSR's module tree and numerics (`basicsr/archs/rrdbnet_arch.py`).

Scale 4 is native (two nearest+conv stages), 8 adds a third stage (original ESRGAN layout), and 2 and 1
run the x4 network on a pixel-unshuffled input as Real-ESRGAN does (input sides must then be multiples of
2 or 4; `jaxsr.upscale` pads for that).

`plus=True` is ESRGAN+ (Rakotonirina & Rasoanaivo, ICASSP 2020, github.com/ncarraz/ESRGANplus): each dense block
gains a bias-free 1x1 conv `conv1x1` from its input, added to the second conv's output, which is added again to
the fourth's (the "residual of residual" paths); the rest is RRDBNet unchanged.
"""
import math

import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import conv, host_init, lrelu, pixel_unshuffle
from jaxsr.archs.upsample import nearest_conv

# BasicSR initialises the dense-block convs with kaiming_normal (fan_in, gain sqrt 2) scaled by 0.1.
_rdb_init = host_init(lambda g, s: g.normal(0.0, 0.1 * math.sqrt(2.0 / math.prod(s[:-1])), s),
                      nnx.initializers.variance_scaling(2.0 * 0.1**2, "fan_in", "normal"))
UNSHUFFLE = {1: 4, 2: 2, 4: 1, 8: 1}
# A spec's fields and their defaults (RealESRGAN_x4plus: 64 features, 23 blocks, growth 32); the scale is the run's.
# ESRGAN+ is the flag `plus: True`, which a plain RRDB's spec leaves out.
DEFAULTS = dict(in_ch=3, out_ch=3, num_feat=64, num_block=23, num_grow_ch=32)


class ResidualDenseBlock(nnx.Module):
    def __init__(self, num_feat, num_grow_ch, plus=False, *, rngs, dtype):
        for k in range(1, 6):
            out = num_feat if k == 5 else num_grow_ch
            setattr(self, f"conv{k}", conv(num_feat + (k - 1) * num_grow_ch, out, 3, rngs=rngs, dtype=dtype, kernel_init=_rdb_init))
        self.plus = plus
        if plus:
            self.conv1x1 = conv(num_feat, num_grow_ch, 1, rngs=rngs, dtype=dtype, bias=False, kernel_init=_rdb_init)

    def __call__(self, x):
        feats = [x]
        for k in range(1, 5):
            y = lrelu(getattr(self, f"conv{k}")(jnp.concatenate(feats, axis=-1)))
            if self.plus and k == 2:
                y = y + self.conv1x1(x)
            elif self.plus and k == 4:
                y = y + feats[2]
            feats.append(y)
        return self.conv5(jnp.concatenate(feats, axis=-1)) * 0.2 + x


class RRDB(nnx.Module):
    def __init__(self, num_feat, num_grow_ch, plus=False, *, rngs, dtype):
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch, plus, rngs=rngs, dtype=dtype)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch, plus, rngs=rngs, dtype=dtype)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch, plus, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32, plus=False, *, rngs=None,
                 dtype=jnp.float32):
        if scale not in UNSHUFFLE:
            raise ValueError(f"RRDBNet supports scale 1, 2, 4 or 8, got {scale}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.dtype = scale, in_ch, dtype
        # input sides must be multiples of the unshuffle factor (jaxsr.upscale pads to it); tiles too
        self.unshuffle = self.size_multiple = self.tile_multiple = UNSHUFFLE[scale]
        self.conv_first = conv(in_ch * self.unshuffle**2, num_feat, 3, rngs=rngs, dtype=dtype)
        self.body = nnx.List([RRDB(num_feat, num_grow_ch, plus, rngs=rngs, dtype=dtype) for _ in range(num_block)])
        self.conv_body = conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype)
        self.num_up = 3 if scale == 8 else 2
        for i in range(1, self.num_up + 1):
            setattr(self, f"conv_up{i}", conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype))
        self.conv_hr = conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype)
        self.conv_last = conv(num_feat, out_ch, 3, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        x = x.astype(self.dtype)
        if self.unshuffle > 1:
            x = pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        body = feat
        for block in self.body:
            body = block(body)
        feat = feat + self.conv_body(body)
        ups = [getattr(self, f"conv_up{i}") for i in range(1, self.num_up + 1)]
        return nearest_conv(feat, ups, self.conv_hr, self.conv_last).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    s = {**DEFAULTS, **spec}  # other fields are ignored
    return RRDBNet(s["in_ch"], s["out_ch"], s["scale"], s["num_feat"], s["num_block"], s["num_grow_ch"],
                   s.get("plus", False), rngs=rngs, dtype=dtype)
