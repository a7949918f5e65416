"""SRVGGNetCompact ("Compact", Real-ESRGAN's realesr-general / realesr-animevideo models), mirroring the reference
module tree (Real-ESRGAN `realesrgan/archs/srvgg_arch.py`, identical to spandrel's `architectures/Compact/__arch/SRVGG.py`).

`body` is torch's ModuleList: conv(in, nf), act, then `num_conv` x (conv(nf, nf), act), then conv(nf, out*s*s),
so the activations sit at the odd indices (PReLU's per-channel slopes are `body.1.weight`, `body.3.weight`, ...;
ReLU and LeakyReLU hold no tensors). A PixelShuffle(s) follows, and the nearest-upsampled input is added, so the
network learns the residual. No padding requirement: any input size.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import LeakyReLU, PixelShuffle, Sequential, conv, spec_kwargs

ACT_TYPES = ("prelu", "relu", "leakyrelu")
# A spec's fields and their defaults (realesr-animevideov3's size); the scale is the run's
DEFAULTS = dict(in_ch=3, out_ch=3, num_feat=64, num_conv=16, act_type="prelu")


class PReLU(nnx.Module):
    """nn.PReLU(num_parameters): one learned negative slope per channel, initialised to 0.25 (torch's default)."""

    def __init__(self, num_parameters, init=0.25):
        self.weight = nnx.Param(jnp.full((num_parameters,), init, jnp.float32))

    def __call__(self, x):
        return jnp.where(x >= 0, x, self.weight[...].astype(x.dtype) * x)


class ReLU(nnx.Module):
    def __call__(self, x):
        return jax.nn.relu(x)


def activation(act_type, num_feat):
    if act_type == "prelu":
        return PReLU(num_feat)
    if act_type == "relu":
        return ReLU()
    return LeakyReLU(0.1)  # the reference's 'leakyrelu' slope


class SRVGGNetCompact(nnx.Module):
    def __init__(self, in_ch=3, out_ch=3, num_feat=64, num_conv=16, scale=4, act_type="prelu", *, rngs=None, dtype=jnp.float32):
        if act_type not in ACT_TYPES:
            raise ValueError(f"Compact act_type must be one of {', '.join(ACT_TYPES)}, got {act_type!r}")
        if scale < 1 or num_conv < 0:
            raise ValueError(f"Compact needs scale >= 1 and num_conv >= 0, got scale={scale}, num_conv={num_conv}")
        if out_ch != in_ch and in_ch != 1:
            raise ValueError(f"Compact adds the upsampled input to the output: out_ch ({out_ch}) must equal in_ch ({in_ch})")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.out_ch, self.dtype = scale, in_ch, out_ch, dtype
        self.size_multiple = self.tile_multiple = 1
        layers = [conv(in_ch, num_feat, 3, rngs=rngs, dtype=dtype), activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype), activation(act_type, num_feat)]
        layers.append(conv(num_feat, out_ch * scale * scale, 3, rngs=rngs, dtype=dtype))
        self.body = Sequential(layers)
        self.upsampler = PixelShuffle(scale)

    def __call__(self, x):
        x = x.astype(jnp.float32)
        out = self.upsampler(self.body(x.astype(self.dtype))).astype(jnp.float32)
        s = self.scale  # F.interpolate(scale_factor=s, mode='nearest') for an integer s: each pixel repeated s times
        return out + jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "Compact")
    if full["act_type"] == "lrelu":
        full["act_type"] = "leakyrelu"  # traiNNer-style spelling of the reference's 'leakyrelu'
    return SRVGGNetCompact(full["in_ch"], full["out_ch"], int(full["num_feat"]), int(full["num_conv"]), int(full["scale"]),
                           full["act_type"], rngs=rngs, dtype=dtype)
