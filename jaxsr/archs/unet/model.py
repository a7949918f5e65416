"""Real-ESRGAN's U-Net discriminator with spectral norm (`basicsr/archs/discriminator_arch.py`,
`UNetDiscriminatorSN`), with BasicSR's attribute names so `net_d` files load and export mechanically.

Training mode is the default, as BasicSR never puts net_d in eval mode: each forward runs one power iteration
and updates the spectral-norm vectors. They live in `nnx.BatchStat` variables, so run D under `nnx.jit`, or
split/merge and keep the returned state. `model.eval()` (or `use_running_average=True`) freezes them like
torch's `.eval()`.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.common import conv, lrelu, torch_default_init

_HI = jax.lax.Precision.HIGHEST
# A spec's fields and their defaults (BasicSR's); fields of other discriminators are ignored
DEFAULTS = dict(num_in_ch=3, num_feat=64, skip_connection=True)


def _normalize(x, eps=1e-12):
    """F.normalize(x, dim=0): x / max(||x||, eps)."""
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


class SNConv2d(nnx.Module):
    """torch.nn.utils.spectral_norm(nn.Conv2d(...)) with torch's state: `weight_orig` (OIHW, as torch stores
    it), `weight_u` (out,), `weight_v` (in*kh*kw,). Forward divides the weight by sigma = u^T W v; in
    training mode u and v first take one power-iteration step (no gradient through them), as torch does."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, bias=True, *, rngs, dtype=jnp.float32):
        k = kernel_size
        w = torch_default_init(rngs.params(), (k, k, in_ch, out_ch), jnp.float32).transpose(3, 2, 0, 1)
        self.weight_orig = nnx.Param(w)
        if bias:
            bound = 1.0 / np.sqrt(in_ch * k * k)
            self.bias = nnx.Param(jax.random.uniform(rngs.params(), (out_ch,), jnp.float32, -bound, bound))
        else:
            self.bias = None
        self.weight_u = nnx.BatchStat(_normalize(jax.random.normal(rngs.params(), (out_ch,))))
        self.weight_v = nnx.BatchStat(_normalize(jax.random.normal(rngs.params(), (in_ch * k * k,))))
        self.stride, self.padding, self.dtype = stride, padding, dtype
        self.use_running_average = False

    def __call__(self, x):
        w = self.weight_orig[...]
        mat = w.reshape(w.shape[0], -1)
        u, v = self.weight_u[...], self.weight_v[...]
        if not self.use_running_average:
            m = jax.lax.stop_gradient(mat)
            v = _normalize(jnp.matmul(m.T, u, precision=_HI))
            u = _normalize(jnp.matmul(m, v, precision=_HI))
            self.weight_u[...], self.weight_v[...] = u, v
        sigma = jnp.dot(u, jnp.matmul(mat, v, precision=_HI), precision=_HI)
        p = self.padding
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), (w / sigma).astype(self.dtype), (self.stride, self.stride), ((p, p), (p, p)),
            dimension_numbers=("NHWC", "OIHW", "NHWC"), precision=_HI,
        )
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


def upsample_bilinear2x(x):
    """F.interpolate(scale_factor=2, mode='bilinear', align_corners=False) in NHWC: output pixel 2k takes
    0.75 of pixel k and 0.25 of k-1, pixel 2k+1 0.75 of k and 0.25 of k+1 (edges clamp)."""
    def along(x, axis):
        prev = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis), jax.lax.slice_in_dim(x, 0, -1, axis=axis)], axis)
        nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, None, axis=axis), jax.lax.slice_in_dim(x, -1, None, axis=axis)], axis)
        even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
        out = jnp.stack([even, odd], axis=axis + 1)
        return out.reshape(x.shape[:axis] + (2 * x.shape[axis],) + x.shape[axis + 1 :])

    return along(along(x, 1), 2)


class UNetDiscriminatorSN(nnx.Module):
    """Real-ESRGAN's U-Net discriminator with spectral norm; returns (N, H, W, 1) logits, and with features=True
    (logits, [the activations of conv0..conv8, after the skip additions]) for a feature-matching loss."""

    def __init__(self, num_in_ch=3, num_feat=64, skip_connection=True, *, rngs=None, dtype=jnp.float32):
        rngs = rngs or nnx.Rngs(0)
        f = num_feat
        self.skip_connection = skip_connection
        self.conv0 = conv(num_in_ch, f, 3, rngs=rngs, dtype=dtype)
        sn = lambda i, o, k, s, p: SNConv2d(i, o, k, s, p, bias=False, rngs=rngs, dtype=dtype)  # noqa: E731
        self.conv1, self.conv2, self.conv3 = sn(f, 2 * f, 4, 2, 1), sn(2 * f, 4 * f, 4, 2, 1), sn(4 * f, 8 * f, 4, 2, 1)
        self.conv4, self.conv5, self.conv6 = sn(8 * f, 4 * f, 3, 1, 1), sn(4 * f, 2 * f, 3, 1, 1), sn(2 * f, f, 3, 1, 1)
        self.conv7, self.conv8 = sn(f, f, 3, 1, 1), sn(f, f, 3, 1, 1)
        self.conv9 = conv(f, 1, 3, rngs=rngs, dtype=dtype)

    def __call__(self, x, features=False):
        x0 = lrelu(self.conv0(x))
        x1 = lrelu(self.conv1(x0))
        x2 = lrelu(self.conv2(x1))
        x3 = lrelu(self.conv3(x2))
        x4 = lrelu(self.conv4(upsample_bilinear2x(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = lrelu(self.conv5(upsample_bilinear2x(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = lrelu(self.conv6(upsample_bilinear2x(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        x7 = lrelu(self.conv7(x6))
        x8 = lrelu(self.conv8(x7))
        logits = self.conv9(x8)
        return (logits, [x0, x1, x2, x3, x4, x5, x6, x7, x8]) if features else logits


def build(spec, *, rngs=None, dtype=jnp.float32):
    s = {**DEFAULTS, **spec}
    return UNetDiscriminatorSN(s["num_in_ch"], s["num_feat"], s["skip_connection"], rngs=rngs, dtype=dtype)
