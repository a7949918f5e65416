"""pix2pix's U-Net generator (`UnetGenerator` / `UnetSkipConnectionBlock` of junyanz/pytorch-CycleGAN-and-pix2pix
`models/networks.py`; `unet_128` is num_downs 7, `unet_256` num_downs 8), with traiNNer's `upsample_mode='upconv'`.

Built from the innermost block out, each block one `model` nn.Sequential (indices as the reference's), nested through
its submodule at index 1 (outermost) or 3 (the others), so keys read `model.model.1.model.3.model.3...`:

    outermost  [conv4x4 s2 (in, ngf), submodule, ReLU, up(2ngf -> out) (bias), Tanh]
    middle     [LeakyReLU(0.2), conv4x4 s2 (outer, inner), norm, submodule, ReLU, up(2 inner -> outer), norm, (Dropout)]
    innermost  [LeakyReLU(0.2), conv4x4 s2 (8ngf, 8ngf), ReLU, up(8ngf -> 8ngf), norm]
    widths from the outside in: ngf, 2ngf, 4ngf, then 8ngf for the num_downs - 4 inner ones; Dropout(0.5) in the
    num_downs - 5 middle blocks of 8ngf (use_dropout); every block but the outermost returns cat([x, model(x)]).

up is ConvTranspose2d(4, stride 2, padding 1) ('deconv') or [Upsample(nearest x2), conv3x3] ('upconv'). The convs before
a norm have a bias only with InstanceNorm (pix2pix.use_bias). Inputs and outputs in [-1, 1] (`value_range`), scale 1;
sides must be multiples of 2^num_downs (`size_multiple`: 256 for unet_256), which the reference needs too (the skip
concatenations fail otherwise): a forward on other sides is refused by name. Built in eval mode; `model.train()` turns
on BatchNorm's batch statistics and the dropout (junyanz's test.py without --eval runs in that mode).
"""
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import Act, LeakyReLU, Sequential, conv, spec_kwargs
from jaxsr.archs.pix2pix import NORMS, Tanh, dropout, init_weights, norm_layer, seed_of, upsampler, use_bias

# A spec's fields and their defaults: unet_256 as pix2pix trains it (--norm batch, dropout on)
DEFAULTS = dict(in_ch=3, out_ch=3, ngf=64, num_downs=8, norm="batch", use_dropout=True, upsample_mode="deconv")


class UnetSkipConnectionBlock(nnx.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm="batch", use_dropout=False, upsample_mode="deconv", *, rngs, dtype):
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        b = use_bias(norm)
        up = dict(k=4, padding=1, rngs=rngs, dtype=dtype)
        downconv = conv(input_nc, inner_nc, 4, stride=2, padding=1, bias=b, rngs=rngs, dtype=dtype)
        if outermost:
            layers = [downconv, submodule, Act("relu"), upsampler(upsample_mode, inner_nc * 2, outer_nc, bias=True, **up),
                      Tanh()]
        elif innermost:
            layers = [LeakyReLU(0.2), downconv, Act("relu"), upsampler(upsample_mode, inner_nc, outer_nc, bias=b, **up),
                      norm_layer(norm, outer_nc, dtype)]
        else:
            layers = [LeakyReLU(0.2), downconv, norm_layer(norm, inner_nc, dtype), submodule, Act("relu"),
                      upsampler(upsample_mode, inner_nc * 2, outer_nc, bias=b, **up), norm_layer(norm, outer_nc, dtype)]
            layers += [dropout(rngs)] if use_dropout else []
        self.model = Sequential(layers)

    def __call__(self, x):
        return self.model(x) if self.outermost else jnp.concatenate([x, self.model(x)], axis=-1)


class UnetGenerator(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, ngf=64, num_downs=8, norm="batch", use_dropout=True, upsample_mode="deconv",
                 scale=1, *, rngs=None, dtype=jnp.float32):
        if norm not in NORMS or num_downs < 5 or scale != 1:
            raise ValueError(f"UnetGenerator: norm in {NORMS}, num_downs >= 5 (the reference's five levels at least), "
                             f"scale 1; got {norm!r}, {num_downs}, {scale}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.dtype = 1, in_ch, dtype
        self.size_multiple = self.tile_multiple = 2**num_downs
        self.value_range = (-1.0, 1.0)  # the reference's images: jaxsr.infer.upscale maps [0, 1] to it and back
        kw = dict(norm=norm, upsample_mode=upsample_mode, rngs=rngs, dtype=dtype)
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, **kw)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout, **kw)
        for m in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * m, ngf * m * 2, submodule=block, **kw)
        self.model = UnetSkipConnectionBlock(out_ch, ngf, input_nc=in_ch, submodule=block, outermost=True, **kw)
        init_weights(self, "normal", 0.02, seed_of(rngs))  # define_G's init_net default
        self.eval()

    def __call__(self, x):
        m = self.size_multiple
        bad = [n for n in x.shape[1:3] if isinstance(n, int) and n % m]
        if bad:
            raise ValueError(f"a U-Net generator with {m.bit_length() - 1} downsamplings takes sides that are multiples "
                             f"of {m}, not {x.shape[1]}x{x.shape[2]}: pad or crop the input (jaxsr.infer.upscale pads)")
        return self.model(x.astype(self.dtype)).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "UnetGenerator")
    return UnetGenerator(**full, rngs=rngs, dtype=dtype)
