"""RCAN (Residual Channel Attention Network, Zhang et al., ECCV 2018), mirroring spandrel's module
(`architectures/RCAN/__arch/rcan_arch.py`, which traiNNer-redux trains) attribute for attribute.

head -> body (`n_resgroups` residual groups of `n_resblocks` RCABs and a conv each, then a conv; a long skip) ->
tail (the pixel-shuffle upsampler, then a conv to the output). An RCAB is conv, activation, conv, channel attention
(global average pool, 1x1 down by `reduction`, ReLU, 1x1 up, sigmoid) plus its input.

`norm`: the input is scaled by `rgb_range` and shifted by `sub_mean`, and the output by `add_mean` and scaled back.
Both are 1x1 convs initialised to the DIV2K mean shift and, as in every reference, trainable (their
`requires_grad = False` is set on the module, not on its parameters), so a file's own values are what it computes
with. Without `norm` they are identities and `rgb_range` is 1.

`unshuffle_mod` (scales 1 and 2 only, ignored above, as in the reference): the head pixel-unshuffles the input by
4 / scale and the net upsamples x4; input sides are reflect-padded to that factor and the output cropped back.
`res_scale` is accepted and, as in the reference, changes nothing.
"""
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import RGB_MEAN, Act, LeakyReLU, PixelUnshuffle, Sequential, conv, reflect_pad_to, spec_kwargs
from jaxsr.archs.upsample import pixelshuffle

# A spec's fields and their defaults: the reference's (RCAN's paper model, 10 groups x 20 blocks x 64 features);
# spandrel assumes rgb_range, res_scale and act_mode are these. The scale is the run's.
DEFAULTS = dict(in_ch=3, n_resgroups=10, n_resblocks=20, n_feats=64, rgb_range=255.0, norm=True, kernel_size=3,
                reduction=16, res_scale=1.0, act_mode="relu", unshuffle_mod=False)
ACT_MODES = ("relu", "leaky_relu", "elu", "silu", "gelu", "none")


def activation(mode):
    """The reference's `get_activation`: LeakyReLU with slope 0.2, ELU with alpha 1, exact GELU."""
    if mode == "leaky_relu":
        return LeakyReLU(0.2)
    return Act({"none": "identity"}.get(mode, mode))


def mean_shift(rgb_range, sign):
    """The reference's MeanShift: a 1x1 conv 3 -> 3 that adds sign * rgb_range * the DIV2K mean (std 1)."""
    shift = conv(3, 3, 1, padding=0, rngs=nnx.Rngs(0), dtype=jnp.float32)  # computes in float32 in every dtype
    shift.kernel[...] = jnp.eye(3, dtype=jnp.float32).reshape(1, 1, 3, 3)
    shift.bias[...] = sign * rgb_range * jnp.asarray(RGB_MEAN, jnp.float32)
    return shift


class CALayer(nnx.Module):
    def __init__(self, channel, reduction, *, rngs, dtype):
        self.avg_pool = Act("avgpool")
        self.conv_du = Sequential([conv(channel, channel // reduction, 1, padding=0, rngs=rngs, dtype=dtype), Act("relu"),
                                   conv(channel // reduction, channel, 1, padding=0, rngs=rngs, dtype=dtype), Act("sigmoid")])

    def __call__(self, x):
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nnx.Module):
    def __init__(self, n_feat, kernel_size, reduction, act_mode, *, rngs, dtype):
        self.body = Sequential([conv(n_feat, n_feat, kernel_size, rngs=rngs, dtype=dtype), activation(act_mode),
                                conv(n_feat, n_feat, kernel_size, rngs=rngs, dtype=dtype),
                                CALayer(n_feat, reduction, rngs=rngs, dtype=dtype)])

    def __call__(self, x):
        return self.body(x) + x


class ResidualGroup(nnx.Module):
    def __init__(self, n_feat, kernel_size, reduction, act_mode, n_resblocks, *, rngs, dtype):
        blocks = [RCAB(n_feat, kernel_size, reduction, act_mode, rngs=rngs, dtype=dtype) for _ in range(n_resblocks)]
        self.body = Sequential([*blocks, conv(n_feat, n_feat, kernel_size, rngs=rngs, dtype=dtype)])

    def __call__(self, x):
        return self.body(x) + x


class RCAN(nnx.Module):
    def __init__(self, in_ch=3, n_resgroups=10, n_resblocks=20, n_feats=64, scale=4, rgb_range=255.0, norm=True,
                 kernel_size=3, reduction=16, res_scale=1.0, act_mode="relu", unshuffle_mod=False, *, rngs=None,
                 dtype=jnp.float32):
        if scale < 1 or not (scale == 3 or scale & (scale - 1) == 0):
            raise ValueError(f"RCAN supports scale 2^n and 3, got {scale}")
        if norm and in_ch != 3:
            raise ValueError(f"RCAN with norm shifts 3 channels by the RGB mean; in_ch is {in_ch} (use norm=False)")
        if kernel_size % 2 == 0:
            raise ValueError(f"RCAN needs an odd kernel_size (its convs keep the size), got {kernel_size}")
        if n_feats // reduction < 1:
            raise ValueError(f"RCAN's channel attention needs n_feats >= reduction, got {n_feats} and {reduction}")
        if act_mode not in ACT_MODES:
            raise ValueError(f"unknown RCAN act_mode {act_mode!r}; known: {', '.join(ACT_MODES)}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.out_ch, self.dtype = scale, in_ch, in_ch, dtype
        self.res_scale = res_scale  # unused, as in the reference
        self.is_norm = bool(norm)
        self.rgb_range = float(rgb_range) if norm else 1.0
        if norm:
            self.sub_mean = mean_shift(self.rgb_range, -1.0)
            self.add_mean = mean_shift(self.rgb_range, 1.0)
        # unshuffle_mod: a x4 net on the input unshuffled by 4 / scale; sides are padded to that factor, and tiles
        # start on its grid
        self.downscale = 4 // scale if unshuffle_mod and scale <= 2 else 1
        self.size_multiple = self.tile_multiple = self.downscale
        k, f = kernel_size, self.downscale
        first = conv(in_ch * f * f, n_feats, k, rngs=rngs, dtype=dtype)
        self.head = Sequential([PixelUnshuffle(f), first] if f > 1 else [first])
        groups = [ResidualGroup(n_feats, k, reduction, act_mode, n_resblocks, rngs=rngs, dtype=dtype) for _ in range(n_resgroups)]
        self.body = Sequential([*groups, conv(n_feats, n_feats, k, rngs=rngs, dtype=dtype)])
        self.tail = Sequential([pixelshuffle(scale * f, n_feats, rngs=rngs, dtype=dtype),
                                conv(n_feats, in_ch, k, rngs=rngs, dtype=dtype)])

    def __call__(self, x):
        """x: (B, H, W, in_ch) float in [0, 1], any H, W -> (B, scale*H, scale*W, in_ch) float32."""
        h, w = x.shape[1:3]
        x = reflect_pad_to(x.astype(jnp.float32), self.downscale) * self.rgb_range
        if self.is_norm:
            x = self.sub_mean(x)
        x = self.head(x.astype(self.dtype))
        x = self.body(x) + x
        x = self.tail(x).astype(jnp.float32)
        if self.is_norm:
            x = self.add_mean(x)
        return (x / self.rgb_range)[:, : h * self.scale, : w * self.scale]


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "RCAN")
    return RCAN(int(full["in_ch"]), int(full["n_resgroups"]), int(full["n_resblocks"]), int(full["n_feats"]),
                int(full["scale"]), float(full["rgb_range"]), bool(full["norm"]), int(full["kernel_size"]),
                int(full["reduction"]), float(full["res_scale"]), str(full["act_mode"]), bool(full["unshuffle_mod"]),
                rngs=rngs, dtype=dtype)
