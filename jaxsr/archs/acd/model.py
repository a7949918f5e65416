"""SFTGAN's Auxiliary Classifier Discriminator (`ACD_VGG_BN_96` of traiNNer's `sft_arch.py`, xinntao's SFTGAN training
code): a VGG-style feature stack with two heads, `gan` (real/fake logit) and `cls` (the category logits that SFTGAN's
category loss trains on the segmentation classes). Attribute names and nn.Sequential indices are the reference's:

    feature = [conv3x3(in, w0), LReLU(0.1)] + [conv(w[i-1], w[i], 4x4 stride 2 | 3x3 stride 1), BN, LReLU(0.1)] ...
    gan = [Linear(w[-1] * s * s, hidden), LReLU(0.1), Linear(hidden, 1)];  cls = [..., Linear(hidden, num_classes)]

Every conv has a bias (nn.Conv2d's default, BN or not) and padding 1; the 4x4 ones halve the size. The reference is
(64, 64, 128, 128, 256, 256, 512, 512) on 96 px crops (6x6 after four halvings), hidden 100, 8 classes. BatchNorm
follows torch: batch statistics when training (the default for a discriminator, as BasicSR's net_d), `model.eval()`
uses the running ones.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import BatchNorm2d, LeakyReLU, Sequential, conv, torch_default_init

DEFAULTS = dict(num_in_ch=3, widths=(64, 64, 128, 128, 256, 256, 512, 512), hidden=100, num_classes=8, input_size=96)


def _linear(i, o, rngs, dtype):
    return nnx.Linear(i, o, kernel_init=torch_default_init, bias_init=nnx.initializers.zeros_init(), rngs=rngs,
                      param_dtype=jnp.float32, dtype=dtype, precision=jax.lax.Precision.HIGHEST)


class ACDDiscriminator(nnx.Module):
    """`model(x)` -> (gan logits (N, 1), category logits (N, num_classes)) for NHWC inputs of input_size x input_size."""

    def __init__(self, num_in_ch=3, widths=DEFAULTS["widths"], hidden=100, num_classes=8, input_size=96, *, rngs=None,
                 dtype=jnp.float32):
        widths = tuple(int(w) for w in widths)
        downs = len(widths) // 2
        if not widths or len(widths) % 2 or input_size % 2**downs:
            raise ValueError(f"the ACD discriminator needs pairs of (3x3, 4x4 stride-2) widths and an input size that is a "
                             f"multiple of {2 ** downs}; got widths {widths}, input_size {input_size}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.input_size = input_size
        layers = [conv(num_in_ch, widths[0], 3, padding=1, rngs=rngs, dtype=dtype), LeakyReLU(0.1)]
        for i in range(1, len(widths)):
            k, stride = (4, 2) if i % 2 else (3, 1)
            layers += [conv(widths[i - 1], widths[i], k, stride=stride, padding=1, rngs=rngs, dtype=dtype),
                       BatchNorm2d(widths[i], dtype=dtype), LeakyReLU(0.1)]
        self.feature = Sequential(layers)
        flat = widths[-1] * (input_size // 2**downs) ** 2
        self.gan = Sequential([_linear(flat, hidden, rngs, dtype), LeakyReLU(0.1), _linear(hidden, 1, rngs, dtype)])
        self.cls = Sequential([_linear(flat, hidden, rngs, dtype), LeakyReLU(0.1),
                               _linear(hidden, num_classes, rngs, dtype)])

    def __call__(self, x):
        if x.shape[1] != self.input_size or x.shape[2] != self.input_size:
            raise ValueError(f"the ACD discriminator takes {self.input_size}x{self.input_size} crops, got "
                             f"{x.shape[1]}x{x.shape[2]}")
        fea = self.feature(x)
        fea = fea.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # torch flattens NCHW
        return self.gan(fea).astype(jnp.float32), self.cls(fea).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    s = {**DEFAULTS, **spec}  # fields of other discriminators (a gan.discriminator section's) are ignored, as vgg's
    return ACDDiscriminator(*(s[k] for k in DEFAULTS), rngs=rngs, dtype=dtype)
