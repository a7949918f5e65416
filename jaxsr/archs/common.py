"""Building blocks shared by all architectures, with PyTorch's numerics, and the spec helpers every `build` uses.

Modules mirror torch's attribute names so that the bridge (`archs/bridge.py`) is a mechanical rename plus
transpose. Parameters are float32; `dtype` is the compute dtype. The torch defaults that matter are listed
in docs/architecture.md ("Numerics").
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from flax import nnx

# DIV2K's RGB mean, which the references (DAT, SwinIR, HAT, SPAN) subtract from 3-channel inputs
RGB_MEAN = (0.4488, 0.4371, 0.4040)


def precision(dtype):
    """Precision.HIGHEST for float32 compute (torch's fp32 matmuls), the backend's default for bf16/fp16."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def host_init(sample, fallback):
    """An initializer that draws on the host with numpy (seeded from the jax key) when the key is concrete.

    Eager jax initializers compile one XLA program per new shape (about a second each on a small CPU), which made
    building a DAT take tens of seconds; numpy draws take milliseconds. Under a trace (jit/eval_shape) it uses
    the equivalent jax initializer.
    """

    def init(key, shape, dtype=jnp.float32):
        try:
            seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            return fallback(key, shape, dtype)
        return jnp.asarray(sample(np.random.default_rng(seed), shape).astype(dtype))

    return init


# torch's default Conv2d/Linear weight init (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
# fan_in = kh*kw*in/groups for an HWIO kernel, in for an (in, out) one.
torch_default_init = host_init(lambda g, s: g.uniform(-1.0, 1.0, s) / math.sqrt(math.prod(s[:-1])),
                               nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"))


# timm's trunc_normal_(std=0.02) truncates at +-2 absolute (100 std): effectively a normal
trunc_normal_002 = host_init(lambda g, s: np.clip(g.normal(0.0, 0.02, s), -2.0, 2.0),
                             nnx.initializers.truncated_normal(0.02, lower=-100.0, upper=100.0))


def _sum_of_taps(x, w, strides, padding, dilation, out_dtype):
    """A depthwise convolution (one k x k filter per channel) as the sum of k*k strided slices of the padded input,
    each scaled by its tap: what XLA:CPU runs as one fused loop. Accumulates in float32 tap by tap (the forward came
    out bit for bit XLA:CPU's convolution's)."""
    (sh, sw), (dh, dw) = strides, dilation
    kh, kw = w.shape[:2]
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0))).astype(jnp.float32)
    ho, wo = (xp.shape[1] - (kh - 1) * dh - 1) // sh + 1, (xp.shape[2] - (kw - 1) * dw - 1) // sw + 1
    y = 0.0
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw, :]
            y = y + tap * w[i, j, 0].astype(jnp.float32)
    return y.astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_stride1(x, w, padding, dilation, out_dtype):
    """The stride-1 sum of taps with its gradients written out. Differentiating the sum keeps every tap's slice for the
    weight gradient and pads every tap's input gradient to the input's size, k*k tensors each way; here the input
    gradient is the same kind of sum (dy correlated with the flipped taps) and the weight gradient one reduction of
    every tap's slice against dy. MoSR's and OmniSR's train steps 6-16% faster with 45-70% less temporary memory
    (docs/performance.md)."""
    return _sum_of_taps(x, w, (1, 1), padding, dilation, out_dtype)


def _depthwise_stride1_fwd(x, w, padding, dilation, out_dtype):
    return _depthwise_stride1(x, w, padding, dilation, out_dtype), (x, w)


def _depthwise_stride1_bwd(padding, dilation, out_dtype, residuals, dy):
    # the barrier keeps XLA from merging these slices with the forward's (shared slices are materialised, not fused)
    x, w = jax.lax.optimization_barrier(residuals)
    (dh, dw), (kh, kw) = dilation, w.shape[:2]
    full = tuple(((k - 1) * d - lo, (k - 1) * d - hi) for k, d, (lo, hi) in zip((kh, kw), dilation, padding))
    gx = _sum_of_taps(dy, w[::-1, ::-1], (1, 1), full, dilation, jnp.float32)
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0))).astype(jnp.float32)
    dyf = dy.astype(jnp.float32)
    ho, wo = dy.shape[1:3]
    products = tuple(xp[:, i * dh:i * dh + ho, j * dw:j * dw + wo, :] * dyf for i in range(kh) for j in range(kw))
    # one reduction with an output per tap: XLA fuses the slices into it, where it hands a reduction of one output to
    # YNNPACK, which takes only materialised inputs (k*k slices kept at once: most of OmniSR's temporaries)
    sums = jax.lax.reduce(products, (jnp.float32(0),) * len(products),
                          lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1, 2))
    gw = jnp.stack(sums).reshape(kh, kw, 1, -1)
    return gx.astype(x.dtype), gw.astype(w.dtype)


_depthwise_stride1.defvjp(_depthwise_stride1_fwd, _depthwise_stride1_bwd)


def _depthwise_as_shifts(x, w, strides, padding, dilation, out_dtype):
    """A depthwise convolution as shifted slices (_sum_of_taps); at stride 1, with no more padding than the kernel
    spans, with its own gradients (_depthwise_stride1). The gradients sum in another order than XLA's convolution's,
    within 2e-6 relative of torch's (tests/test_depthwise.py)."""
    spans = [(k - 1) * d for k, d in zip(w.shape[:2], dilation)]
    if tuple(strides) == (1, 1) and all(max(p) <= s for p, s in zip(padding, spans)):
        return _depthwise_stride1(x, w, padding, dilation, out_dtype)
    return _sum_of_taps(x, w, strides, padding, dilation, out_dtype)


def _large_kernel_as_fft(x, w, padding, out_dtype):
    """A dense stride-1 convolution as 2-D FFTs: the padded input and the kernel, zero-padded to one FFT size of at
    least the padded input's, multiplied per frequency (X * conj(W) is the cross-correlation torch's conv2d computes)
    with the channels mixed there, and transformed back; the outputs no tap wraps around are the convolution's. In
    float32: within ~1e-6 relative of the direct sum (tests/test_large_kernel.py)."""
    kh, kw = w.shape[:2]
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0))).astype(jnp.float32)
    hp, wp = xp.shape[1:3]
    size = (scipy.fft.next_fast_len(hp, real=True), scipy.fft.next_fast_len(wp, real=True))  # 2^a 3^b 5^c
    xf = jnp.fft.rfft2(xp, s=size, axes=(1, 2))
    wf = jnp.fft.rfft2(w.astype(jnp.float32), s=size, axes=(0, 1))
    yf = jnp.einsum("bhwi,hwio->bhwo", xf, jnp.conj(wf))
    return jnp.fft.irfft2(yf, s=size, axes=(1, 2))[:, :hp - kh + 1, :wp - kw + 1].astype(out_dtype)


# Dense convolutions with a kernel at least this large on each side and at most this many channels in and out run as
# FFTs on the CPU: XLA:CPU computes their gradients on its Eigen kernels (YNNPACK takes only wider convolutions),
# 3-14x slower than the FFTs at 8-16 channels and kernels 9-17 (8x at RealPLKSR's and PLKSR's 17 x 17 on 16). From 32
# channels on, or under 9, XLA's convolution is as fast or faster; at 24 the FFTs win at 17 and lose at 9
# (docs/performance.md).
FFT_MIN_KERNEL, FFT_MAX_CHANNELS = 9, 16


def conv_general_dilated(x, w, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, **kwargs):
    """jax.lax.conv_general_dilated, except for depthwise and narrow large-kernel convolutions on the CPU.

    XLA:CPU runs a depthwise convolution (feature_group_count = channels) about 20-40x slower than the same
    multiply-adds written as shifted slices, and its gradients 2-20x slower; a 17 x 17 convolution of 16 channels
    with its gradients 8x slower than the same convolution as FFTs (benchmarks/bench_cpu_convs.py). Under
    `jax.lax.platform_dependent` the CPU gets the slices or the FFTs, and every other platform (and the ONNX graph)
    the convolution itself."""
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=window_strides, padding=padding,
                             lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                             feature_group_count=feature_group_count, **kwargs)
    nhwc = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    plain = (x.ndim == 4 and not isinstance(padding, str) and all(d == 1 for d in lhs_dilation or (1, 1))
             and jax.lax.conv_dimension_numbers(x.shape, w.shape, dimension_numbers) == nhwc)
    depthwise = plain and feature_group_count > 1 and feature_group_count == x.shape[-1] == w.shape[-1]
    large = (plain and feature_group_count == 1 and min(w.shape[:2]) >= FFT_MIN_KERNEL
             and max(w.shape[2:]) <= FFT_MAX_CHANNELS and all(s == 1 for s in window_strides)
             and all(d == 1 for d in rhs_dilation or (1, 1)) and min(min(p) for p in padding) >= 0
             and all(isinstance(d, int) for d in x.shape))  # not under the ONNX export's symbolic sizes
    if not (depthwise or large):
        return conv(x, w)
    out_dtype = kwargs.get("preferred_element_type") or jnp.result_type(x, w)
    padding = tuple(map(tuple, padding))
    if large:
        cpu = functools.partial(_large_kernel_as_fft, padding=padding, out_dtype=out_dtype)
    else:
        cpu = functools.partial(_depthwise_as_shifts, strides=tuple(window_strides), padding=padding,
                                dilation=tuple(rhs_dilation or (1, 1)), out_dtype=out_dtype)
    return jax.lax.platform_dependent(x, w, cpu=cpu, default=conv)


class Buffer(nnx.Variable):
    """A non-trainable tensor that the PyTorch module registers as a buffer (exported with the weights)."""


def conv(in_ch, out_ch, kernel_size, *, rngs, dtype=jnp.float32, stride=1, padding=None, groups=1, bias=True,
         kernel_init=torch_default_init, dilation=1):
    """nn.Conv2d(in, out, k, stride, padding (default k//2 * dilation), dilation) in NHWC with explicit symmetric zero
    padding, as torch pads; k and padding an int or an (h, w) pair."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    ph, pw = ((kh // 2 * dilation, kw // 2 * dilation) if padding is None
              else (padding, padding) if isinstance(padding, int) else padding)
    return nnx.Conv(
        in_ch,
        out_ch,
        (kh, kw),
        strides=stride,
        padding=((ph, ph), (pw, pw)),
        kernel_dilation=dilation,
        feature_group_count=groups,
        use_bias=bias,
        kernel_init=kernel_init,
        bias_init=nnx.initializers.zeros_init(),
        dtype=dtype,
        param_dtype=jnp.float32,
        precision=jax.lax.Precision.HIGHEST,
        conv_general_dilated=conv_general_dilated,
        rngs=rngs,
    )


def lrelu(x, slope=0.2):
    return jax.nn.leaky_relu(x, slope)


def pixel_shuffle(x, r):
    """torch.nn.PixelShuffle in NHWC: NCHW channel c*r*r + i*r + j goes to sub-pixel (i, j) of channel c."""
    n, h, w, c = x.shape
    oc = c // (r * r)
    x = x.reshape(n, h, w, oc, r, r).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, h * r, w * r, oc)


def pixel_unshuffle(x, r):
    """torch.nn.functional.pixel_unshuffle in NHWC (inverse of pixel_shuffle)."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, h // r, w // r, c * r * r)


def reflect_pad_to(x, m):
    """NHWC reflect-padded at the bottom/right to sides that are multiples of m, as the references' check_image_size
    pads (unchanged where they already are)."""
    ph, pw = (-x.shape[1]) % m, (-x.shape[2]) % m
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else x


def upsample_nearest2x(x):
    """F.interpolate(scale_factor=2, mode='nearest'): repeat every pixel twice along H and W."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def top_left(x, h, w):
    """x[:, :h, :w] (NHWC), the crop back to the input's size after a model pads it. For symbolic sizes (an ONNX trace,
    where no comparison of sizes can be decided) a gather from an index ramp."""
    if isinstance(h, int) and isinstance(w, int):
        return x[:, :h, :w]
    x = jnp.take(x, jax.lax.iota(jnp.int32, h), axis=1, mode="clip")
    return jnp.take(x, jax.lax.iota(jnp.int32, w), axis=2, mode="clip")


class PixelShuffle(nnx.Module):
    """Parameter-free module so that nn.Sequential indices stay aligned with torch's."""

    def __init__(self, r):
        self.r = r

    def __call__(self, x):
        return pixel_shuffle(x, self.r)


class PixelUnshuffle(nnx.Module):
    """nn.PixelUnshuffle as a parameter-free module, at its nn.Sequential index."""

    def __init__(self, r):
        self.r = r

    def __call__(self, x):
        return pixel_unshuffle(x, self.r)


class Sequential(nnx.List):
    """nn.Sequential: children indexed 0..n-1 exactly as torch numbers them, so state-dict keys line up."""

    def __call__(self, x):
        for layer in self:
            x = layer(x)
        return x


class LeakyReLU(nnx.Module):
    """Parameter-free nn.LeakyReLU (torch's default slope is 0.01; RRDB uses 0.2)."""

    def __init__(self, slope=0.01):
        self.slope = slope

    def __call__(self, x):
        return lrelu(x, self.slope)


class Act(nnx.Module):
    """A parameter-free torch module (GELU, ReLU, Mish, SiLU, ELU, Sigmoid, AdaptiveAvgPool2d(1), Identity, Rearrange)
    kept at its nn.Sequential index or attribute."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, x):
        if self.kind == "gelu":
            return jax.nn.gelu(x, approximate=False)
        if self.kind == "relu":
            return jax.nn.relu(x)
        if self.kind == "mish":
            return jax.nn.mish(x)
        if self.kind == "silu":
            return jax.nn.silu(x)
        if self.kind == "elu":  # nn.ELU's alpha 1
            return jax.nn.elu(x)
        if self.kind == "sigmoid":
            return jax.nn.sigmoid(x)
        if self.kind == "avgpool":
            return jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
        if self.kind == "identity":
            return x
        raise ValueError(self.kind)


class BatchNorm2d(nnx.Module):
    """torch.nn.BatchNorm2d (eps 1e-5, momentum 0.1) on NHWC, with torch's state and update rule.

    Running statistics normalise when `use_running_average` (NNX's eval()); otherwise the biased batch
    variance normalises while running_var takes the unbiased one and num_batches_tracked counts, as torch does.
    """

    def __init__(self, num_features, *, momentum=0.1, eps=1e-5, use_running_average=False, dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.num_batches_tracked = Buffer(jnp.zeros((), jnp.int32))
        self.momentum, self.eps, self.dtype = momentum, eps, dtype
        self.use_running_average = use_running_average

    def __call__(self, x):
        xf = x.astype(jnp.float32)
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            n = math.prod(x.shape[:-1])
            mean = jnp.mean(xf, axes)
            var = jnp.mean(jnp.square(xf - mean), axes)
            m = self.momentum
            self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
            self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
        return y.astype(self.dtype)


# ---------------------------------------------------------------------------------------------------------------
# specs: each folder's model.py holds DEFAULTS (and, for the named-variant models, VARIANTS), its one definition of
# the spec fields a spec may leave out; `build(spec, *, rngs, dtype)` fills them in with these helpers


def spec_kwargs(spec, defaults, name, also=("scale",)):
    """A model's keyword arguments from a spec: `defaults` under the spec's own fields, `arch` dropped; a field that is
    neither in `defaults` nor in `also` is refused by name."""
    full = {**defaults, **spec}
    full.pop("arch", None)
    unknown = sorted(set(full) - set(defaults) - set(also))
    if unknown:
        raise ValueError(f"unknown {name} spec fields: {', '.join(unknown)}")
    return full


def variant_fields(variants, variant, name):
    """The fields of a named variant, or a ValueError that lists the known ones."""
    if variant not in variants:
        raise ValueError(f"unknown {name} variant {variant!r}; known: {', '.join(variants)}")
    return variants[variant]


def variant_spec(arch, variants, defaults, variant, name, overrides):
    """A complete spec for a named variant: {'arch', **defaults, **the variant's fields, **overrides}."""
    return {"arch": arch, **defaults, **variant_fields(variants, variant, name), **overrides}


def constructor_kwargs(spec, variants, defaults, default_variant, name, int_tuples):
    """A model's keyword arguments from a spec: the bridge's (every field) or a named variant plus overrides
    ({'variant': 'hat_l', 'scale': 2}). Lists become int tuples, out_ch must equal in_ch, unknown fields are refused."""
    spec = dict(spec)
    variant = spec.pop("variant", None)
    fields = variant_fields(variants, variant or default_variant, name)
    full = {**defaults, **fields, **spec}
    full.pop("arch", None)
    out_ch = full.pop("out_ch", full["in_ch"])
    if out_ch != full["in_ch"]:
        raise ValueError(f"{name} outputs as many channels as it takes (in_ch {full['in_ch']}), not out_ch {out_ch}")
    for field in int_tuples:
        full[field] = tuple(int(v) for v in full[field])
    return spec_kwargs(full, {**defaults, **variants[default_variant]}, name, also=())
