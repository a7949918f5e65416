"""SPAN (Swift Parameter-free Attention Network, Wan et al., NTIRE 2024 efficient SR), mirroring spandrel's module
(`architectures/SPAN/__arch/span.py`, which traiNNer-redux trains) attribute for attribute.

Conv3XC, the re-parameterisable conv: its trainable tensors are a 1x1 skip (`sk`) and a 1x1 -> 3x3 (valid) -> 1x1
chain (`conv.0/1/2`, channel gain 2) on the zero-padded input. `eval_conv` is a 3x3 conv that torch overwrites, at
every forward in eval mode, with the composition of those two branches (`Conv3XC.update_params`), and never uses in
training. So in both modes the output depends only on `sk` and `conv`, and we compute it the same way in both: the
3x3 kernel and bias composed from `conv` and `sk` (float32), then one padded 3x3 conv. In training the gradients
reach `sk` and `conv` through the composition. torch's training mode runs the branches instead (1x1 up to twice the
channels, 3x3 at that width, 1x1 back, plus the skip): the same function up to float rounding (the zero padding goes
in before the first 1x1 conv, whose bias therefore reaches every 3x3 tap, exactly as the composed bias assumes), with
about 4.6 times the multiply-adds of the composed conv (docs/performance.md, "SPAN").
`eval_conv` is kept as a buffer, so that a file's tensors survive a round trip; the bridge exports it as the
composition of the exported weights (what torch holds after its first eval forward).

Input normalisation: with `norm` (no `no_norm` buffer in the file) the input becomes (x - rgb_mean) * img_range and
the output is *not* mapped back, as in the reference; spandrel always uses img_range 255 and the DIV2K mean. Without
`norm` the model holds the `no_norm` buffer (zeros(1)) and takes x as it is. `bias` is accepted and, as in the
reference, changes nothing (every conv has a bias). The reference's SiLU runs in place, so the block-6 feature that
`conv_cat` takes (`out_b5_2`) is SiLU(c1_r(x)), not c1_r(x); we compute the same.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import RGB_MEAN, Buffer, PixelShuffle, Sequential, conv, precision, spec_kwargs

# A spec's fields and their defaults, the reference's (spandrel assumes img_range and rgb_mean are these); the scale is
# the run's
DEFAULTS = dict(in_ch=3, out_ch=3, feature_channels=48, bias=True, norm=True, img_range=255.0, rgb_mean=RGB_MEAN)


class EvalConv(nnx.Module):
    """The 3x3 `eval_conv` of a Conv3XC as stored tensors (torch keys eval_conv.weight / eval_conv.bias)."""

    def __init__(self, c_in, c_out):
        self.kernel = Buffer(jnp.zeros((3, 3, c_in, c_out), jnp.float32))
        self.bias = Buffer(jnp.zeros((c_out,), jnp.float32))


def reparameterise(sk_kernel, sk_bias, k1, b1, k2, b2, k3, b3, einsum=jnp.einsum, pad=jnp.pad, precision=None):
    """The 3x3 kernel (HWIO) and bias of Conv3XC's two branches merged into one conv (`Conv3XC.update_params`).

    k1 (1, 1, c_in, m), k2 (3, 3, m, n), k3 (1, 1, n, c_out), sk_kernel (1, 1, c_in, c_out). Works on jax or numpy arrays.
    """
    kw = {} if precision is None else {"precision": precision}
    kernel = einsum("im,hwmn,no->hwio", k1[0, 0], k2, k3[0, 0], **kw)
    kernel = kernel + pad(sk_kernel, ((1, 1), (1, 1), (0, 0), (0, 0)))
    mid = einsum("m,hwmn->n", b1, k2, **kw) + b2
    bias = einsum("n,no->o", mid, k3[0, 0], **kw) + b3 + sk_bias
    return kernel, bias


class Conv3XC(nnx.Module):
    def __init__(self, c_in, c_out, gain=2, *, rngs, dtype=jnp.float32):
        self.sk = conv(c_in, c_out, 1, padding=0, rngs=rngs, dtype=dtype)
        self.conv = Sequential([
            conv(c_in, c_in * gain, 1, padding=0, rngs=rngs, dtype=dtype),
            conv(c_in * gain, c_out * gain, 3, padding=0, rngs=rngs, dtype=dtype),
            conv(c_out * gain, c_out, 1, padding=0, rngs=rngs, dtype=dtype),
        ])
        self.eval_conv = EvalConv(c_in, c_out)
        self.dtype = dtype

    def merged(self):
        """(kernel HWIO, bias) of the re-parameterised 3x3 conv, float32, from the current weights."""
        c = self.conv
        return reparameterise(self.sk.kernel[...], self.sk.bias[...], c[0].kernel[...], c[0].bias[...], c[1].kernel[...],
                              c[1].bias[...], c[2].kernel[...], c[2].bias[...], precision=jax.lax.Precision.HIGHEST)

    def __call__(self, x):
        kernel, bias = self.merged()  # in training too: the branches' function, about a fifth of their multiply-adds
        y = jax.lax.conv_general_dilated(x, kernel.astype(self.dtype), (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision(self.dtype))
        return y + bias.astype(y.dtype)


class SPAB(nnx.Module):
    """Swift parameter-free attention block: three Conv3XC with SiLU between, attention sigmoid(out3) - 0.5."""

    def __init__(self, channels, *, rngs, dtype=jnp.float32):
        self.c1_r = Conv3XC(channels, channels, rngs=rngs, dtype=dtype)
        self.c2_r = Conv3XC(channels, channels, rngs=rngs, dtype=dtype)
        self.c3_r = Conv3XC(channels, channels, rngs=rngs, dtype=dtype)
        # the reference's act2 (LeakyReLU 0.1) is defined but never used, and holds no tensors

    def __call__(self, x):
        # the reference's SiLU is in place (nn.SiLU(inplace=True)), so the `out1` it returns is the activated one
        out1_act = jax.nn.silu(self.c1_r(x))
        out3 = self.c3_r(jax.nn.silu(self.c2_r(out1_act)))
        sim_att = jax.nn.sigmoid(out3) - 0.5
        return (out3 + x) * sim_att, out1_act, sim_att


class SPAN(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, feature_channels=48, scale=4, bias=True, norm=True, img_range=255.0,
                 rgb_mean=RGB_MEAN, *, rngs=None, dtype=jnp.float32):
        if scale < 1:
            raise ValueError(f"SPAN needs scale >= 1, got {scale}")
        if norm and in_ch != len(rgb_mean):
            raise ValueError(f"SPAN with norm subtracts a {len(rgb_mean)}-channel mean; in_ch is {in_ch} (use norm=False)")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.out_ch, self.dtype = scale, in_ch, out_ch, dtype
        self.size_multiple = self.tile_multiple = 1
        self.bias = bias  # unused, as in the reference
        self.img_range, self.rgb_mean = float(img_range), tuple(float(m) for m in rgb_mean)
        self.is_norm = bool(norm)
        if not norm:
            self.no_norm = Buffer(jnp.zeros((1,), jnp.float32))
        f = feature_channels
        self.conv_1 = Conv3XC(in_ch, f, rngs=rngs, dtype=dtype)
        for i in range(1, 7):
            setattr(self, f"block_{i}", SPAB(f, rngs=rngs, dtype=dtype))
        self.conv_cat = conv(4 * f, f, 1, padding=0, rngs=rngs, dtype=dtype)
        self.conv_2 = Conv3XC(f, f, rngs=rngs, dtype=dtype)
        self.upsampler = Sequential([conv(f, out_ch * scale * scale, 3, rngs=rngs, dtype=dtype), PixelShuffle(scale)])

    def __call__(self, x):
        x = x.astype(jnp.float32)
        if self.is_norm:
            x = (x - jnp.asarray(self.rgb_mean, jnp.float32)) * self.img_range
        x = x.astype(self.dtype)
        out_feature = self.conv_1(x)
        out_b1, _, _ = self.block_1(out_feature)
        out_b2, _, _ = self.block_2(out_b1)
        out_b3, _, _ = self.block_3(out_b2)
        out_b4, _, _ = self.block_4(out_b3)
        out_b5, _, _ = self.block_5(out_b4)
        out_b6, out_b5_2, _ = self.block_6(out_b5)
        out_b6 = self.conv_2(out_b6)
        out = self.conv_cat(jnp.concatenate([out_feature, out_b6, out_b1, out_b5_2], axis=-1))
        return self.upsampler(out).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "SPAN")
    return SPAN(int(full["in_ch"]), int(full["out_ch"]), int(full["feature_channels"]), int(full["scale"]), bool(full["bias"]),
                bool(full["norm"]), float(full["img_range"]), tuple(full["rgb_mean"]), rngs=rngs, dtype=dtype)
