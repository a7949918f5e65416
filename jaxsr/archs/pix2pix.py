"""What the pix2pix / CycleGAN networks share (junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`, and
victorca25/traiNNer's port of it): the norm layers of `get_norm_layer`, the transposed and resize convolutions, and
`init_weights`, the reference's weight initialisations. The families: `p2p_unet`, `p2p_resnet` (generators) and
`patchgan` (discriminators).

Norms, as the reference's `get_norm_layer` makes them, each keeping its nn.Sequential slot:
  batch     BatchNorm2d(affine=True), running statistics; the convs before it have no bias
  instance  InstanceNorm2d(affine=False, track_running_stats=False): no tensors; the convs before it have a bias
  none      an identity module; the convs before it have no bias (`use_bias` is True for InstanceNorm only)
So the keys tell the three apart: BatchNorm's weights, else the biases of the convs that precede a norm.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.bridge import to_flax_layout, to_torch_layout
from jaxsr.archs.common import Act, BatchNorm2d, Sequential, conv, precision, torch_default_init, upsample_nearest2x

NORMS = ("batch", "instance", "none")
UPSAMPLE_MODES = ("deconv", "upconv")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


class InstanceNorm2d(nnx.Module):
    """nn.InstanceNorm2d(affine=False, track_running_stats=False): each sample's channels normalised over H, W with
    the biased variance, eps 1e-5, in training and evaluation alike."""

    def __init__(self, dtype=jnp.float32):
        self.dtype = dtype

    def __call__(self, x):
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=(1, 2), keepdims=True)
        return ((xf - mean) * jax.lax.rsqrt(var + 1e-5)).astype(self.dtype)


def norm_layer(norm, channels, dtype):
    """The module in a norm's slot (see the module docstring)."""
    if norm == "batch":
        return BatchNorm2d(channels, dtype=dtype)
    if norm == "instance":
        return InstanceNorm2d(dtype)
    if norm == "none":
        return Act("identity")
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def use_bias(norm):
    """The reference's `use_bias`: convs followed by a norm have a bias only under InstanceNorm."""
    return norm == "instance"


class Pad(nnx.Module):
    """nn.ReflectionPad2d(n) ('reflect') or nn.ReplicationPad2d(n) ('replicate') on NHWC, from one-pixel slices, so
    symbolic sizes trace (ONNX with a dynamic height and width; jnp.pad's reflect cannot). Sides must exceed n, as
    torch's reflection padding requires."""

    def __init__(self, n, mode="reflect"):
        if mode not in ("reflect", "replicate"):
            raise ValueError(f"padding must be 'reflect' or 'replicate', got {mode!r}")
        self.n, self.mode = n, mode

    def __call__(self, x):
        for axis in (1, 2):
            size = x.shape[axis]

            def row(i):  # a one-pixel dynamic slice: no size comparison at trace time
                return jax.lax.dynamic_slice_in_dim(x, i, 1, axis=axis)

            if self.mode == "reflect":
                before = [row(i) for i in range(self.n, 0, -1)]
                last = jnp.asarray(size, jnp.int32) - 1  # a value, not a (possibly symbolic) size to compare
                after = [row(last - i) for i in range(1, self.n + 1)]
            else:
                before, after = [row(0)] * self.n, [row(jnp.asarray(size, jnp.int32) - 1)] * self.n
            x = jnp.concatenate([*before, x, *after], axis=axis)
        return x


class Tanh(nnx.Module):
    """nn.Tanh at its nn.Sequential slot: the generators' output in [-1, 1]."""

    def __call__(self, x):
        return jnp.tanh(x)


class Nearest2x(nnx.Module):
    """traiNNer's Upsample(scale_factor=2, mode='nearest'), at its nn.Sequential slot."""

    def __call__(self, x):
        return upsample_nearest2x(x)


class ConvTranspose2d(nnx.Module):
    """nn.ConvTranspose2d(c_in, c_out, k, stride, padding, output_padding, bias) on NHWC.

    The kernel is stored (k, k, c_out, c_in), so that the bridge's HWIO -> OIHW transpose gives torch's
    (c_in, c_out, k, k); the forward is the convolution of the stride-dilated input with the spatially flipped kernel,
    padded k - 1 - padding before and k - 1 - padding + output_padding after."""

    def __init__(self, c_in, c_out, k, stride, padding, output_padding=0, bias=True, *, rngs, dtype=jnp.float32):
        # torch's default init, U(+-1/sqrt(fan_in)) with the fan_in of the (c_in, c_out, k, k) weight: c_out * k * k
        self.kernel = nnx.Param(torch_default_init(rngs.params(), (k, k, c_out, c_in)))
        self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32)) if bias else None
        self.k, self.stride, self.padding, self.output_padding, self.dtype = k, stride, padding, output_padding, dtype

    def __call__(self, x):
        kernel = jnp.flip(self.kernel[...], (0, 1)).transpose(0, 1, 3, 2).astype(self.dtype)  # HWIO
        p = self.k - 1 - self.padding
        pad = ((p, p + self.output_padding),) * 2
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel, (1, 1), pad, lhs_dilation=(self.stride,) * 2,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision(self.dtype))
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


def upsampler(mode, c_in, c_out, *, k, padding, output_padding=0, bias, rngs, dtype):
    """The x2 upsampling conv: the reference's ConvTranspose2d ('deconv'), or traiNNer's `upconv_block` ('upconv':
    nearest x2, then a 3x3 zero-padded conv: an nn.Sequential whose conv is entry 1)."""
    if mode == "deconv":
        return ConvTranspose2d(c_in, c_out, k, 2, padding, output_padding, bias, rngs=rngs, dtype=dtype)
    if mode == "upconv":
        return Sequential([Nearest2x(), conv(c_in, c_out, 3, padding=1, bias=bias, rngs=rngs, dtype=dtype)])
    raise ValueError(f"upsample_mode must be one of {', '.join(UPSAMPLE_MODES)}, got {mode!r}")


def dropout(rngs):
    """nn.Dropout(0.5): off until model.train()."""
    return nnx.Dropout(0.5, deterministic=True, rngs=rngs)


# ---------------------------------------------------------------------------------------------------------------
# the reference's init_weights(net, init_type, init_gain): every Conv/ConvTranspose/Linear weight drawn, its bias 0;
# BatchNorm2d weight N(1, gain), bias 0. Drawn with numpy on the torch-layout shape (fans as torch computes them).


def _fans(shape):
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _orthogonal(g, shape, gain):
    rows = shape[0]
    cols = math.prod(shape) // rows
    flat = g.normal(0.0, 1.0, (rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


def sample(g, init_type, shape, gain):
    """A torch-layout weight of `shape` drawn as the reference's init_weights draws it."""
    fan_in, fan_out = _fans(shape)
    if init_type == "normal":
        return g.normal(0.0, gain, shape)
    if init_type == "xavier":  # init.xavier_normal_(w, gain)
        return g.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), shape)
    if init_type == "kaiming":  # init.kaiming_normal_(w, a=0, mode='fan_in'): the gain is not used
        return g.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    if init_type == "orthogonal":
        return _orthogonal(g, shape, gain)
    raise ValueError(f"init_type must be one of {', '.join(INIT_TYPES)}, got {init_type!r}")


def init_weights(model, init_type="normal", gain=0.02, seed=0):
    """Re-initialise `model` in place as the reference's init_weights(net, init_type, init_gain) does."""
    g = np.random.default_rng(seed)
    for path, m in nnx.iter_graph(model):
        if isinstance(m, (nnx.Conv, nnx.Linear, ConvTranspose2d)):
            shape = to_torch_layout(("kernel",), np.zeros(m.kernel[...].shape, np.float32)).shape
            w = sample(g, init_type, shape, gain).astype(np.float32)
            m.kernel[...] = jnp.asarray(to_flax_layout(("kernel",), w))
            if m.bias is not None:
                m.bias[...] = jnp.zeros_like(m.bias[...])
        elif isinstance(m, BatchNorm2d):
            m.scale[...] = jnp.asarray(g.normal(1.0, gain, m.scale[...].shape).astype(np.float32))
            m.bias[...] = jnp.zeros_like(m.bias[...])
    return model


def seed_of(rngs):
    """A numpy seed from the model's params stream (so a build is a function of its Rngs)."""
    return np.asarray(jax.random.key_data(rngs.params())).ravel().tolist()


# ---------------------------------------------------------------------------------------------------------------
# reading files


def drop_instance_stats(sd):
    """junyanz's loader patch (`__patch_instance_norm_state_dict`): InstanceNorm layers saved before PyTorch 0.4 (or with
    track_running_stats=True) carry running_mean / running_var / num_batches_tracked and no weight; today's
    InstanceNorm has none of them, so they are dropped. BatchNorm (always with a weight) keeps its statistics, and
    gains a num_batches_tracked where a pre-0.4 file lacks it."""
    out = {}
    for k, v in sd.items():
        prefix, _, leaf = k.rpartition(".")
        if leaf in ("running_mean", "running_var", "num_batches_tracked") and f"{prefix}.weight" not in sd:
            continue
        out[k] = v
    for k in list(out):
        if k.endswith(".running_mean") and (c := k[: -len("running_mean")] + "num_batches_tracked") not in out:
            out[c] = np.zeros((), np.int64)
    return out


def norm_from_keys(sd, norm_slots, conv_slots):
    """'batch' when a norm slot holds BatchNorm weights, else 'instance' when the convs before the norms have biases,
    else 'none' (see the module docstring)."""
    if any(f"{p}.weight" in sd for p in norm_slots):
        return "batch"
    return "instance" if all(f"{p}.bias" in sd for p in conv_slots) else "none"
