"""ESRGAN's VGG-style discriminator (`basicsr/archs/discriminator_arch.py`, `VGGStyleDiscriminator`) for 128 or
256 px inputs, with BasicSR's attribute names. BatchNorm follows torch (batch statistics in training, the default
for net_d; `model.eval()` uses the running ones).
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import BatchNorm2d, conv, lrelu, torch_default_init

_HI = jax.lax.Precision.HIGHEST
# A spec's fields and their defaults (BasicSR's ESRGAN net_d); fields of other discriminators are ignored
DEFAULTS = dict(num_in_ch=3, num_feat=64, input_size=128)


def _conv(in_ch, out_ch, k, stride, bias, rngs, dtype):
    """nn.Conv2d(in, out, k, stride, padding=1, bias), as BasicSR builds every conv of this network."""
    return conv(in_ch, out_ch, k, stride=stride, padding=1, bias=bias, rngs=rngs, dtype=dtype)


class VGGStyleDiscriminator(nnx.Module):
    """BasicSR VGGStyleDiscriminator (SRGAN/ESRGAN) for 128 or 256 px inputs; returns (N, 1) logits, and with
    features=True (logits, [the activation after each conv (+ BatchNorm) block]) for a feature-matching loss."""

    def __init__(self, num_in_ch=3, num_feat=64, input_size=128, *, rngs=None, dtype=jnp.float32):
        if input_size not in (128, 256):
            raise ValueError(f"VGGStyleDiscriminator input_size must be 128 or 256, got {input_size}")
        rngs = rngs or nnx.Rngs(0)
        self.input_size = input_size
        f = num_feat
        self.conv0_0 = _conv(num_in_ch, f, 3, 1, True, rngs, dtype)
        self.conv0_1 = _conv(f, f, 4, 2, False, rngs, dtype)
        self.bn0_1 = BatchNorm2d(f)
        chans = [(f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f), (8 * f, 8 * f)] + ([(8 * f, 8 * f)] if input_size == 256 else [])
        for i, (cin, cout) in enumerate(chans, start=1):
            setattr(self, f"conv{i}_0", _conv(cin, cout, 3, 1, False, rngs, dtype))
            setattr(self, f"bn{i}_0", BatchNorm2d(cout))
            setattr(self, f"conv{i}_1", _conv(cout, cout, 4, 2, False, rngs, dtype))
            setattr(self, f"bn{i}_1", BatchNorm2d(cout))
        self.n_stages = len(chans)
        self.linear1 = nnx.Linear(8 * f * 4 * 4, 100, kernel_init=torch_default_init, rngs=rngs, param_dtype=jnp.float32, dtype=dtype, precision=_HI)
        self.linear2 = nnx.Linear(100, 1, kernel_init=torch_default_init, rngs=rngs, param_dtype=jnp.float32, dtype=dtype, precision=_HI)

    def __call__(self, x, features=False):
        if x.shape[1] != self.input_size or x.shape[2] != self.input_size:
            raise ValueError(f"VGGStyleDiscriminator({self.input_size}) got a {x.shape[1]}x{x.shape[2]} input")
        feats = [lrelu(self.conv0_0(x))]
        feats.append(lrelu(self.bn0_1(self.conv0_1(feats[-1]))))
        for i in range(1, self.n_stages + 1):
            feats.append(lrelu(getattr(self, f"bn{i}_0")(getattr(self, f"conv{i}_0")(feats[-1]))))
            feats.append(lrelu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feats[-1]))))
        feat = feats[-1].transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # torch flattens NCHW
        logits = self.linear2(lrelu(self.linear1(feat)))
        return (logits, feats) if features else logits


def build(spec, *, rngs=None, dtype=jnp.float32):
    s = {**DEFAULTS, **spec}
    return VGGStyleDiscriminator(s["num_in_ch"], s["num_feat"], s["input_size"], rngs=rngs, dtype=dtype)
