"""pix2pix's PatchGAN discriminators (junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`): `NLayerDiscriminator`
(netD 'basic' is n_layers 3, the 70x70 PatchGAN; 'n_layers' any n) and `PixelDiscriminator` (netD 'pixel', the 1x1
PatchGAN). Attribute names and nn.Sequential indices are the reference's:

    NLayer: model = [conv4x4 s2 (in, ndf) (bias), LeakyReLU(0.2)]
                    + for n in 1..n_layers-1: [conv4x4 s2 (ndf*min(2^(n-1), 8), ndf*min(2^n, 8)), norm, LeakyReLU(0.2)]
                    + [conv4x4 s1 (.., ndf*min(2^n_layers, 8)), norm, LeakyReLU(0.2)] + [conv4x4 s1 (.., 1) (bias)]
    Pixel:  net = [conv1x1 (in, ndf) (bias), LeakyReLU(0.2), conv1x1 (ndf, 2ndf), norm, LeakyReLU(0.2), conv1x1 (2ndf, 1)]

every conv padding 1 (NLayer) or 0 (Pixel); the convs marked without (bias) have one only with InstanceNorm
(pix2pix.use_bias), the pixel one's last conv included.

`spectral_norm=True` is victorca25/traiNNer's NLayerDiscriminator(use_spectral_norm=True), the discriminators its WBC
model trains (train_wbc.yml: patchgan, spectral_norm, nf 32): every conv wrapped by torch's spectral_norm (keys
`weight_orig`, `weight_u`, `weight_v`; jaxsr.archs.unet.SNConv2d), the norm slots identities (norm='none'), the same
biases (first and last conv only). In training mode (the default, as the port never evaluates D) each forward takes one
power-iteration step and updates the vectors: run it under nnx.jit or split/merge and keep the returned state. Outputs are the patch logits (N, H', W', 1) (the reference's
GANLoss puts the sigmoid in its BCEWithLogits). BatchNorm follows torch: batch statistics when training (the default
for a discriminator, as the reference trains it), `model.eval()` uses the running ones.
"""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.common import LeakyReLU, Sequential, conv
from jaxsr.archs.pix2pix import NORMS, init_weights, norm_layer, sample, seed_of, use_bias
from jaxsr.archs.unet.model import SNConv2d

NETS = ("n_layers", "pixel")
# A spec's fields and their defaults: define_D's ('basic': n_layers 3, ndf 64, batch norm); in_ch is what D sees
# (pix2pix's conditional D takes A and B stacked: 6)
DEFAULTS = dict(net="n_layers", in_ch=3, ndf=64, n_layers=3, norm="batch", spectral_norm=False)


def _check(norm):
    if norm not in NORMS:
        raise ValueError(f"a PatchGAN's norm must be one of {', '.join(NORMS)}, got {norm!r}")


class NLayerDiscriminator(nnx.Module):
    def __init__(self, in_ch=3, ndf=64, n_layers=3, norm="batch", spectral_norm=False, *, rngs=None, dtype=jnp.float32):
        _check(norm)
        if spectral_norm and norm != "none":
            raise ValueError(f"the spectral-norm PatchGAN (traiNNer's) has no norm layers: set norm='none', not {norm!r}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(padding=1, rngs=rngs, dtype=dtype)

        def make(c_in, c_out, stride, bias=True):
            if spectral_norm:
                return SNConv2d(c_in, c_out, 4, stride, 1, bias, rngs=rngs, dtype=dtype)
            return conv(c_in, c_out, 4, stride=stride, bias=bias, **kw)

        b = use_bias(norm)
        layers = [make(in_ch, ndf, 2), LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            layers += [make(ndf * prev, ndf * mult, 2 if n < n_layers else 1, b), norm_layer(norm, ndf * mult, dtype),
                       LeakyReLU(0.2)]
        layers += [make(ndf * mult, 1, 1)]
        self.model = Sequential(layers)
        if spectral_norm:
            _init_sn(self, seed_of(rngs))
        else:
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


def _init_sn(model, seed):
    """traiNNer's define_D default, init_weights(kaiming, scale 0.1): weight_orig ~ 0.1 * N(0, 2 / fan_in), biases 0."""
    g = np.random.default_rng(seed)
    for _, m in nnx.iter_graph(model):
        if isinstance(m, SNConv2d):
            m.weight_orig[...] = jnp.asarray(0.1 * sample(g, "kaiming", m.weight_orig[...].shape, 0.02), jnp.float32)
            if m.bias is not None:
                m.bias[...] = jnp.zeros_like(m.bias[...])


def build(spec, *, rngs=None, dtype=jnp.float32):
    s = {**DEFAULTS, **spec}  # fields of other discriminators (a gan.discriminator section's) are ignored, as vgg's
    if s["net"] not in NETS:
        raise ValueError(f"a PatchGAN's net must be one of {', '.join(NETS)}, got {s['net']!r}")
    if s["net"] == "pixel":
        if s["spectral_norm"]:
            raise ValueError("spectral_norm is built for the n_layers PatchGAN only (traiNNer's), not net='pixel'")
        return PixelDiscriminator(s["in_ch"], s["ndf"], s["norm"], rngs=rngs, dtype=dtype)
    return NLayerDiscriminator(s["in_ch"], s["ndf"], s["n_layers"], s["norm"], bool(s["spectral_norm"]), rngs=rngs,
                               dtype=dtype)
