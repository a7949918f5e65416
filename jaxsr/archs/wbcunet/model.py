"""White-box Cartoonization's U-Net generator (`UnetGeneratorWBC` of victorca25/traiNNer's
`codes/models/modules/architectures/WBCNet_arch.py`, a port of SystemErrorWang/White-box-Cartoonization's TF
`unet_generator`), attribute for attribute so keys read as that port's `.pth` (`conv.weight`, `block_0.conv1.weight`,
`conv_9.bias`...):

    conv 7x7 (in, nf) lrelu = x0
    conv_1 3x3 s2 (nf, nf) lrelu, conv_2 (nf, 2nf) lrelu = x1          (half size)
    conv_3 3x3 s2 (2nf, 2nf) lrelu, conv_4 (2nf, 4nf) lrelu            (quarter size)
    block_0..block_{n-1}: x + conv2(lrelu(conv1(x))), 4nf
    conv_5 (4nf, 2nf) lrelu; up2 + x1; conv_6 (2nf, 2nf) lrelu, conv_7 (2nf, nf) lrelu
    up2 + x0; conv_8 (nf, nf) lrelu; conv_9 7x7 (nf, out)             (no final activation, as the port)

LeakyReLU 0.2 everywhere (the port's ResBlock ignores its `slope` argument and uses 0.2; the generator's `slope`
defaults to 0.2). `mode='pt'` (the port's default): stride-2 convs pad 1 and the upsampling is
F.interpolate(bilinear, align_corners=False); `mode='tf'` (TF-converted weights): the stride-2 convs pad
(top/left 0, bottom/right 1) as TF's SAME does, and the upsampling is the port's `tf_2xupsample_bilinear` (inserted
pixels are the mean of two neighbours, the diagonal one of the diagonal pair, edges replicated). The mode leaves no
trace in the keys: a file reads as 'pt'; give mode='tf' in the spec for TF-converted weights.

Inputs and outputs in [-1, 1] (`value_range`); scale 1; the skip additions need sides that are multiples of 4
(`size_multiple`; the original's inference crops to multiples of 8), and a forward on other sides is refused by name.
No BatchNorm or dropout: train and eval modes compute the same. `guided_filter` (r, eps), default (1, 5e-3): what
jaxsr.infer applies to the output with the input as guide, as the original's cartoonize.py; the forward itself (and so
training and the ONNX export) is the bare network, as the port's module is.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import LeakyReLU, conv, spec_kwargs
from jaxsr.archs.srresnet.model import bilinear_upscale

# A spec's fields and their defaults: the port's UnetGeneratorWBC(nf=32, mode='pt') with its four residual blocks
DEFAULTS = dict(in_ch=3, out_ch=3, nf=32, num_blocks=4, mode="pt")
MODES = ("pt", "tf")


def _shift(x, axis):
    """x[i + 1] along `axis`, the last row repeated (replicate padding)."""
    n = x.shape[axis]
    return jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis)


def _interleave(p, q, axis):
    """p and q alternating along `axis` (p first); concatenate + reshape, as jnp.stack has no ONNX lowering."""
    out = jnp.concatenate([jnp.expand_dims(p, axis + 1), jnp.expand_dims(q, axis + 1)], axis + 1)
    return out.reshape(p.shape[:axis] + (2 * p.shape[axis],) + p.shape[axis + 1:])


def upsample_tf2x(x):
    """The port's tf_2xupsample_bilinear in NHWC: out[2i, 2j] = x[i, j]; out[2i+1, 2j], out[2i, 2j+1] and
    out[2i+1, 2j+1] the means of x[i, j] with x[i+1, j], x[i, j+1] and x[i+1, j+1] (edges replicated)."""
    down, right = _shift(x, 1), _shift(x, 2)
    diag = _shift(right, 1)
    even = _interleave(x, (x + right) / 2, 2)  # rows 2i
    odd = _interleave((x + down) / 2, (x + diag) / 2, 2)  # rows 2i+1
    return _interleave(even, odd, 1)


class ResBlock(nnx.Module):
    def __init__(self, nf, *, rngs, dtype):
        self.conv1 = conv(nf, nf, 3, rngs=rngs, dtype=dtype)
        self.conv2 = conv(nf, nf, 3, rngs=rngs, dtype=dtype)
        self.leaky_relu = LeakyReLU(0.2)

    def __call__(self, x):
        return x + self.conv2(self.leaky_relu(self.conv1(x)))


class UnetGeneratorWBC(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, nf=32, num_blocks=4, mode="pt", scale=1, *, rngs=None, dtype=jnp.float32):
        if mode not in MODES or scale != 1 or num_blocks < 1:
            raise ValueError(f"UnetGeneratorWBC: mode in {MODES}, scale 1, num_blocks >= 1; got {mode!r}, {scale}, "
                             f"{num_blocks}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.dtype, self.mode = 1, in_ch, dtype, mode
        self.size_multiple = self.tile_multiple = 4
        self.value_range = (-1.0, 1.0)  # the reference's images: jaxsr.infer maps [0, 1] to it and back
        self.guided_filter = (1, 5e-3)  # (r, eps) jaxsr.infer filters the output with (the input as guide); None: off
        kw = dict(rngs=rngs, dtype=dtype)
        down = dict(stride=2, padding=0 if mode == "tf" else 1)  # 'tf' pads in __call__ (asymmetric)
        self.conv = conv(in_ch, nf, 7, **kw)
        self.conv_1 = conv(nf, nf, 3, **down, **kw)
        self.conv_2 = conv(nf, 2 * nf, 3, **kw)
        self.conv_3 = conv(2 * nf, 2 * nf, 3, **down, **kw)
        self.conv_4 = conv(2 * nf, 4 * nf, 3, **kw)
        for i in range(num_blocks):
            setattr(self, f"block_{i}", ResBlock(4 * nf, **kw))
        self.num_blocks = num_blocks
        self.conv_5 = conv(4 * nf, 2 * nf, 3, **kw)
        self.conv_6 = conv(2 * nf, 2 * nf, 3, **kw)
        self.conv_7 = conv(2 * nf, nf, 3, **kw)
        self.conv_8 = conv(nf, nf, 3, **kw)
        self.conv_9 = conv(nf, out_ch, 7, **kw)
        self.leaky_relu = LeakyReLU(0.2)
        self.eval()

    def __call__(self, x):
        bad = [n for n in x.shape[1:3] if isinstance(n, int) and n % 4]
        if bad:
            raise ValueError(f"the WBC U-Net takes sides that are multiples of 4, not {x.shape[1]}x{x.shape[2]}: pad or "
                             "crop the input (jaxsr.infer.upscale pads)")
        act, tf = self.leaky_relu, self.mode == "tf"
        up = upsample_tf2x if tf else (lambda t: bilinear_upscale(t, 2))
        same = (lambda t: jnp.pad(t, ((0, 0), (0, 1), (0, 1), (0, 0)))) if tf else (lambda t: t)  # port's tf_same_padding
        x0 = act(self.conv(x.astype(self.dtype)))
        x1 = act(self.conv_2(act(self.conv_1(same(x0)))))
        x2 = act(self.conv_4(act(self.conv_3(same(x1)))))
        for i in range(self.num_blocks):
            x2 = getattr(self, f"block_{i}")(x2)
        x2 = act(self.conv_5(x2))
        x3 = act(self.conv_7(act(self.conv_6(up(x2) + x1))))
        x4 = self.conv_9(act(self.conv_8(up(x3) + x0)))
        return x4.astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    return UnetGeneratorWBC(**spec_kwargs(spec, DEFAULTS, "UnetGeneratorWBC"), rngs=rngs, dtype=dtype)
