"""RealPLKSR (Partial Large Kernel CNNs for Efficient Super-Resolution, arXiv 2404.11848; the "Real" variant of
neosr/traiNNer-redux) in Flax NNX, numerically equal to spandrel's `architectures/PLKSR/__arch/RealPLKSR.py`.

The module tree mirrors the reference's: `feats` is the nn.Sequential [conv, PLKBlock x n_blocks, Dropout2d,
conv] with the same indices (Dropout2d keeps its slot), and `to_img` is PixelShuffle or DySample, so the bridge
is the mechanical rename. Every op is a convolution or per-pixel, except GroupNorm (the default normalisation),
whose statistics span the whole image: tiles then differ from the whole-image output slightly (LayerNorm models
are exactly local).

Numerics that follow torch: the per-pixel channel LayerNorm uses eps 1e-6 (the reference's own LayerNorm),
GroupNorm eps 1e-5 over (channels of the group, H, W), both with the two-pass (biased) variance; Mish and
Sigmoid exact. Built in eval mode; `model.train()` turns on Dropout2d (one Bernoulli per sample and channel,
from the `dropout` RNG stream), the only difference between torch's train and eval modes here.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import Act, PixelShuffle, Sequential, conv, spec_kwargs, trunc_normal_002
from jaxsr.archs.upsample import DySample

# A spec's fields and their defaults: traiNNer-redux's `realplksr` ones (spandrel assumes norm_groups 4 too, and
# dropout leaves no trace in the keys); the scale is the run's
DEFAULTS = dict(dim=64, n_blocks=28, kernel_size=17, split_ratio=0.25, use_ea=True, norm_groups=4, dropout=0.0,
                upsampler="pixelshuffle", layer_norm=True)
UPSAMPLERS = ("pixelshuffle", "dysample")
IN_CH = 3  # the reference (spandrel) hard-codes 3 input and output channels


def pdim_for(dim, split_ratio):
    """Channels the large kernel convolves: int(dim * split_ratio), as the reference computes it."""
    return int(dim * split_ratio)


def dysample_groups(scale):
    """The reference's DySample groups: the output channels (3) at odd scales, else 4."""
    return IN_CH if scale % 2 else 4


class GroupNorm(nnx.Module):
    """torch.nn.GroupNorm(groups, dim) on NHWC: contiguous channel groups, eps 1e-5, biased two-pass variance.

    The statistics are means over one axis at a time: XLA:CPU sums a multi-axis reduction sequentially, and
    over a whole image in float32 that lost ~3x torch's accuracy where a group's spread is small.
    """

    def __init__(self, num_groups, num_channels, *, eps=1e-5, dtype=jnp.float32):
        self.num_groups, self.eps, self.dtype = num_groups, eps, dtype
        self.scale = nnx.Param(jnp.ones((num_channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_channels,), jnp.float32))

    def __call__(self, x):
        b, h, w, c = x.shape
        xf = x.astype(jnp.float32).reshape(b, h, w, self.num_groups, c // self.num_groups)

        def mean(t):
            return t.mean(4, keepdims=True).mean(2, keepdims=True).mean(1, keepdims=True)

        mu = mean(xf)
        y = (xf - mu) * jax.lax.rsqrt(mean(jnp.square(xf - mu)) + self.eps)
        return (y.reshape(b, h, w, c) * self.scale[...] + self.bias[...]).astype(self.dtype)


class PLKConv2d(nnx.Module):
    """Partial large kernel: a k x k conv on the first pdim channels, the rest passed through; with `with_idt`
    (PLKSR's option, no weights) the convolved channels are added to their conv."""

    def __init__(self, pdim, kernel_size, with_idt=False, *, rngs, dtype):
        self.idx, self.with_idt = pdim, with_idt
        self.conv = conv(pdim, pdim, kernel_size, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)

    def __call__(self, x):
        part = x[..., : self.idx]
        y = part + self.conv(part) if self.with_idt else self.conv(part)
        return jnp.concatenate([y, x[..., self.idx :]], axis=-1)


class EA(nnx.Module):
    """Element-wise attention: x * sigmoid(conv3x3(x))."""

    def __init__(self, dim, *, rngs, dtype):
        self.f = Sequential([conv(dim, dim, 3, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002), Act("sigmoid")])

    def __call__(self, x):
        return x * self.f(x)


class PLKBlock(nnx.Module):
    def __init__(self, dim, kernel_size, split_ratio, use_ea, norm_groups, layer_norm, *, rngs, dtype):
        # the reference's own channel LayerNorm: eps 1e-6 (not nn.LayerNorm's 1e-5), per pixel over channels
        self.layer_norm = (nnx.LayerNorm(dim, epsilon=1e-6, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32,
                                         rngs=rngs) if layer_norm else Act("identity"))
        # DCCM: conv3x3 (dim -> 2 dim), Mish, conv3x3 (2 dim -> dim)
        self.channel_mixer = Sequential([conv(dim, 2 * dim, 3, rngs=rngs, dtype=dtype), Act("mish"),
                                         conv(2 * dim, dim, 3, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)])
        self.lk = PLKConv2d(pdim_for(dim, split_ratio), kernel_size, rngs=rngs, dtype=dtype)
        self.attn = EA(dim, rngs=rngs, dtype=dtype) if use_ea else Act("identity")
        self.refine = conv(dim, dim, 1, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)
        self.norm = Act("identity") if layer_norm else GroupNorm(norm_groups, dim, dtype=dtype)

    def __call__(self, x):
        y = self.norm(self.refine(self.attn(self.lk(self.channel_mixer(self.layer_norm(x))))))
        return y + x


class RepeatedInputSR(nnx.Module):
    """The forward PLKSR and RealPLKSR share: feats(x) + x repeated per sub-pixel, then to_img."""

    def __call__(self, x):
        """x: (B, H, W, 3) float in [0, 1] -> (B, sH, sW, 3) float32."""
        x = x.astype(self.dtype)
        # torch.repeat_interleave over channels: channel c feeds sub-pixel channels c*s^2 ... c*s^2 + s^2 - 1
        x = self.feats(x) + jnp.repeat(x, self.scale * self.scale, axis=-1)
        return self.to_img(x).astype(jnp.float32)


class RealPLKSR(RepeatedInputSR):
    """RealPLKSR on NHWC images in [0, 1], any size: feats(x) + x repeated per sub-pixel, then to_img."""

    def __init__(self, *, scale=4, dim=64, n_blocks=28, kernel_size=17, split_ratio=0.25, use_ea=True, norm_groups=4,
                 dropout=0.0, upsampler="pixelshuffle", layer_norm=True, rngs: nnx.Rngs, dtype=jnp.float32):
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown RealPLKSR upsampler {upsampler!r} ({', '.join(UPSAMPLERS)})")
        if not layer_norm and dim % norm_groups:
            raise ValueError(f"RealPLKSR: dim ({dim}) must be a multiple of norm_groups ({norm_groups})")
        if not 0 < pdim_for(dim, split_ratio) <= dim:
            raise ValueError(f"RealPLKSR: split_ratio {split_ratio} gives {pdim_for(dim, split_ratio)} of {dim} channels")
        self.scale, self.in_ch, self.dtype = scale, IN_CH, dtype
        self.size_multiple = self.tile_multiple = 1  # convolutions only: any size, tiles anywhere
        out = IN_CH * scale * scale
        self.feats = Sequential(
            [conv(IN_CH, dim, 3, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)]
            + [PLKBlock(dim, kernel_size, split_ratio, use_ea, norm_groups, layer_norm, rngs=rngs, dtype=dtype)
               for _ in range(n_blocks)]
            # Dropout2d: whole channels per sample (the mask broadcasts over H and W)
            + [nnx.Dropout(dropout, broadcast_dims=(1, 2), deterministic=True, rngs=rngs)]
            + [conv(dim, out, 3, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)])
        if upsampler == "dysample":
            self.to_img = DySample(out, IN_CH, scale, groups=dysample_groups(scale), end_convolution=scale != 1,
                                   rngs=rngs, dtype=dtype)
        else:
            self.to_img = PixelShuffle(scale)
        self.eval()


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "RealPLKSR")
    return RealPLKSR(**full, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
