"""CycleGAN's ResNet generator (`ResnetGenerator` of junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`, after
Johnson et al.'s fast style transfer; `resnet_9blocks` / `resnet_6blocks`), with traiNNer's `upsample_mode='upconv'`.
One nn.Sequential `model`, indices as the reference's:

    0 ReflectionPad2d(3), 1 conv7x7(in, ngf), 2 norm, 3 ReLU,
    4 conv3x3 s2 (ngf, 2ngf), 5 norm, 6 ReLU, 7 conv3x3 s2 (2ngf, 4ngf), 8 norm, 9 ReLU,
    10 .. 9+n_blocks  ResnetBlock(4ngf): x + conv_block(x), conv_block = [pad, conv3x3, norm, ReLU, (Dropout(0.5)),
                      pad, conv3x3, norm] (no pad modules, conv padding 1, with padding_type 'zero'),
    then twice: up(4ngf -> 2ngf, then 2ngf -> ngf), norm, ReLU, where up is ConvTranspose2d(3, stride 2, padding 1,
                output_padding 1) ('deconv') or [Upsample(nearest x2), conv3x3] ('upconv'),
    ReflectionPad2d(3), conv7x7(ngf, out) (bias), Tanh.

The convs before a norm have a bias only with InstanceNorm (pix2pix.use_bias). Inputs and outputs are in [-1, 1]
(`value_range`); scale 1. The two stride-2 convs take a side n to ceil(n / 2) and the upsamplings double it, so sides
that are multiples of 4 (`size_multiple`) come back at their size (others come back rounded up, as the reference's do).
Built in eval mode; `model.train()` turns on BatchNorm's batch statistics and the dropout.
"""
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import Act, Sequential, conv, spec_kwargs
from jaxsr.archs.pix2pix import NORMS, Pad, Tanh, dropout, init_weights, norm_layer, seed_of, upsampler, use_bias

PADDINGS = ("reflect", "replicate", "zero")
# A spec's fields and their defaults: resnet_9blocks as CycleGAN trains it (--norm instance, --no_dropout)
DEFAULTS = dict(in_ch=3, out_ch=3, ngf=64, n_blocks=9, norm="instance", use_dropout=False, padding_type="reflect",
                upsample_mode="deconv")


class ResnetBlock(nnx.Module):
    def __init__(self, dim, padding_type, norm, use_dropout, *, rngs, dtype):
        pad = [] if padding_type == "zero" else [Pad(1, padding_type)]
        p = 1 if padding_type == "zero" else 0
        c = dict(padding=p, bias=use_bias(norm), rngs=rngs, dtype=dtype)
        self.conv_block = Sequential(
            pad + [conv(dim, dim, 3, **c), norm_layer(norm, dim, dtype), Act("relu")]
            + ([dropout(rngs)] if use_dropout else [])
            + pad + [conv(dim, dim, 3, **c), norm_layer(norm, dim, dtype)])

    def __call__(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, ngf=64, n_blocks=9, norm="instance", use_dropout=False,
                 padding_type="reflect", upsample_mode="deconv", scale=1, *, rngs=None, dtype=jnp.float32):
        if norm not in NORMS or padding_type not in PADDINGS or scale != 1 or n_blocks < 0:
            raise ValueError(f"ResnetGenerator: norm in {NORMS}, padding_type in {PADDINGS}, n_blocks >= 0, scale 1; got "
                             f"{norm!r}, {padding_type!r}, {n_blocks}, {scale}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.dtype = 1, in_ch, dtype
        self.size_multiple = self.tile_multiple = 4
        self.value_range = (-1.0, 1.0)  # the reference's images: jaxsr.infer.upscale maps [0, 1] to it and back
        b = use_bias(norm)
        layers = [Pad(3), conv(in_ch, ngf, 7, padding=0, bias=b, rngs=rngs, dtype=dtype), norm_layer(norm, ngf, dtype),
                  Act("relu")]
        for m in (1, 2):
            layers += [conv(ngf * m, ngf * m * 2, 3, stride=2, padding=1, bias=b, rngs=rngs, dtype=dtype),
                       norm_layer(norm, ngf * m * 2, dtype), Act("relu")]
        layers += [ResnetBlock(ngf * 4, padding_type, norm, use_dropout, rngs=rngs, dtype=dtype) for _ in range(n_blocks)]
        for m in (4, 2):
            layers += [upsampler(upsample_mode, ngf * m, ngf * m // 2, k=3, padding=1, output_padding=1, bias=b,
                                 rngs=rngs, dtype=dtype), norm_layer(norm, ngf * m // 2, dtype), Act("relu")]
        layers += [Pad(3), conv(ngf, out_ch, 7, padding=0, rngs=rngs, dtype=dtype), Tanh()]
        self.model = Sequential(layers)
        init_weights(self, "normal", 0.02, seed_of(rngs))  # define_G's init_net default
        self.eval()

    def __call__(self, x):
        return self.model(x.astype(self.dtype)).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "ResnetGenerator")
    return ResnetGenerator(**full, rngs=rngs, dtype=dtype)
