"""pix2pix's PatchGAN discriminators (junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`): `NLayerDiscriminator`
(netD 'basic' is n_layers 3, the 70x70 PatchGAN; 'n_layers' any n) and `PixelDiscriminator` (netD 'pixel', the 1x1
PatchGAN). Attribute names and nn.Sequential indices are the reference's:

    NLayer: model = [conv4x4 s2 (in, ndf) (bias), LeakyReLU(0.2)]
                    + for n in 1..n_layers-1: [conv4x4 s2 (ndf*min(2^(n-1), 8), ndf*min(2^n, 8)), norm, LeakyReLU(0.2)]
                    + [conv4x4 s1 (.., ndf*min(2^n_layers, 8)), norm, LeakyReLU(0.2)] + [conv4x4 s1 (.., 1) (bias)]
    Pixel:  net = [conv1x1 (in, ndf) (bias), LeakyReLU(0.2), conv1x1 (ndf, 2ndf), norm, LeakyReLU(0.2), conv1x1 (2ndf, 1)]

every conv padding 1 (NLayer) or 0 (Pixel); the convs marked without (bias) have one only with InstanceNorm
(pix2pix.use_bias), the pixel one's last conv included. Outputs are the patch logits (N, H', W', 1) (the reference's
GANLoss puts the sigmoid in its BCEWithLogits). BatchNorm follows torch: batch statistics when training (the default
for a discriminator, as the reference trains it), `model.eval()` uses the running ones.
"""
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import LeakyReLU, Sequential, conv
from jaxsr.archs.pix2pix import NORMS, init_weights, norm_layer, seed_of, use_bias

NETS = ("n_layers", "pixel")
# A spec's fields and their defaults: define_D's ('basic': n_layers 3, ndf 64, batch norm); in_ch is what D sees
# (pix2pix's conditional D takes A and B stacked: 6)
DEFAULTS = dict(net="n_layers", in_ch=3, ndf=64, n_layers=3, norm="batch")


def _check(norm):
    if norm not in NORMS:
        raise ValueError(f"a PatchGAN's norm must be one of {', '.join(NORMS)}, got {norm!r}")


class NLayerDiscriminator(nnx.Module):
    def __init__(self, in_ch=3, ndf=64, n_layers=3, norm="batch", *, rngs=None, dtype=jnp.float32):
        _check(norm)
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(padding=1, rngs=rngs, dtype=dtype)
        b = use_bias(norm)
        layers = [conv(in_ch, ndf, 4, stride=2, **kw), LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            layers += [conv(ndf * prev, ndf * mult, 4, stride=2 if n < n_layers else 1, bias=b, **kw),
                       norm_layer(norm, ndf * mult, dtype), LeakyReLU(0.2)]
        layers += [conv(ndf * mult, 1, 4, **kw)]
        self.model = Sequential(layers)
        init_weights(self, "normal", 0.02, seed_of(rngs))  # define_D's init_net default

    def __call__(self, x):
        return self.model(x).astype(jnp.float32)


class PixelDiscriminator(nnx.Module):
    def __init__(self, in_ch=3, ndf=64, norm="batch", *, rngs=None, dtype=jnp.float32):
        _check(norm)
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(padding=0, rngs=rngs, dtype=dtype)
        b = use_bias(norm)
        self.net = Sequential([conv(in_ch, ndf, 1, **kw), LeakyReLU(0.2), conv(ndf, ndf * 2, 1, bias=b, **kw),
                               norm_layer(norm, ndf * 2, dtype), LeakyReLU(0.2), conv(ndf * 2, 1, 1, bias=b, **kw)])
        init_weights(self, "normal", 0.02, seed_of(rngs))

    def __call__(self, x):
        return self.net(x).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    s = {**DEFAULTS, **spec}  # fields of other discriminators (a gan.discriminator section's) are ignored, as vgg's
    if s["net"] not in NETS:
        raise ValueError(f"a PatchGAN's net must be one of {', '.join(NETS)}, got {s['net']!r}")
    if s["net"] == "pixel":
        return PixelDiscriminator(s["in_ch"], s["ndf"], s["norm"], rngs=rngs, dtype=dtype)
    return NLayerDiscriminator(s["in_ch"], s["ndf"], s["n_layers"], s["norm"], rngs=rngs, dtype=dtype)
