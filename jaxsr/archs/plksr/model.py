"""PLKSR (Partial Large Kernel CNNs for Efficient Super-Resolution, Lee et al., arXiv 2404.11848), the original network
(not traiNNer-redux's "Real" variant, jaxsr/archs/realplksr), in Flax NNX, numerically equal to spandrel's
`architectures/PLKSR/__arch/PLKSR.py`.

The module tree mirrors the reference's: `feats` is the nn.Sequential [conv, PLKBlock x n_blocks, conv] (no dropout
slot, unlike RealPLKSR), `to_img` a PixelShuffle; each block holds `channe_mixer` (the reference's spelling), `lk`,
`attn` and `refine`. The channel mixer is CCM (3x3 then 1x1), ICCM (1x1 then 3x3) or DCCM (3x3 twice), with exact
GELU between; the large kernel is PLK (one k x k conv on the first pdim channels), SparsePLK (dilated convs summed, one
more k x k with `use_max_kernel`) or RectSparsePLK (k x k/3 + k/3 x k + k/3 x k/3). `with_idt` adds the convolved
channels back (PLK and SparsePLK; no weights). Convolutions and per-pixel ops only: tiles are exact once the overlap
covers the receptive field. Training and eval mode compute the same function (the reference's eval branches write in
place what its training branches concatenate).
"""
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import Act, PixelShuffle, Sequential, conv, spec_kwargs, trunc_normal_002
from jaxsr.archs.realplksr.model import EA, IN_CH, PLKConv2d, RepeatedInputSR, pdim_for

# A spec's fields and their defaults: spandrel's PLKSR class defaults, which traiNNer-redux's `plksr` takes too
# (the paper's released x2/x3/x4 models are DCCM); the scale is the run's
DEFAULTS = dict(dim=64, n_blocks=28, ccm_type="CCM", kernel_size=17, split_ratio=0.25, lk_type="PLK",
                use_max_kernel=False, sparse_kernels=(5, 5, 5, 5), sparse_dilations=(1, 2, 3, 4), with_idt=False,
                use_ea=True)
CCM_TYPES = {"CCM": (3, 1), "ICCM": (1, 3), "DCCM": (3, 3)}  # the kernel sizes of channe_mixer.0 and .2
LK_TYPES = ("PLK", "SparsePLK", "RectSparsePLK")


def rep_kernel_size(kernel, dilation):
    """The extent of a dilated kernel: (k - 1) * d + 1."""
    return (kernel - 1) * dilation + 1


def max_kernel_size(kernel_size, sparse_kernels, sparse_dilations):
    """SparsePLK's `use_max_kernel` conv: kernel_size, or the largest dilated sub-kernel's extent if that is larger."""
    return max([kernel_size] + [rep_kernel_size(k, d) for k, d in zip(sparse_kernels, sparse_dilations)])


def channel_mixer(dim, ccm_type, *, rngs, dtype):
    """CCM / ICCM / DCCM: conv (dim -> 2 dim), GELU, conv (2 dim -> dim, timm-initialised)."""
    k0, k2 = CCM_TYPES[ccm_type]
    return Sequential([conv(dim, 2 * dim, k0, rngs=rngs, dtype=dtype), Act("gelu"),
                       conv(2 * dim, dim, k2, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)])


class SparsePLKConv2d(nnx.Module):
    """Dilated k_i x k_i convs (padding k_i//2 * d_i) on the first pdim channels, summed in order after the identity
    (with_idt) or zero; `use_max_kernel` appends one plain conv of max_kernel_size."""

    def __init__(self, pdim, kernel_size, sparse_kernels, sparse_dilations, use_max_kernel, with_idt, *, rngs, dtype):
        convs = [conv(pdim, pdim, k, dilation=d, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)
                 for k, d in zip(sparse_kernels, sparse_dilations)]
        if use_max_kernel:
            big = max_kernel_size(kernel_size, sparse_kernels, sparse_dilations)
            convs.append(conv(pdim, pdim, big, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002))
        self.convs = nnx.List(convs)
        self.idx, self.with_idt = pdim, with_idt

    def __call__(self, x):
        part = x[..., : self.idx]
        out = part if self.with_idt else 0.0
        for c in self.convs:
            out = out + c(part)
        return jnp.concatenate([out, x[..., self.idx :]], axis=-1)


class RectSparsePLKConv2d(nnx.Module):
    """SLaK-style rectangles on the first pdim channels: m x n + n x m + n x n convs (m = kernel_size, n = m // 3)."""

    def __init__(self, pdim, kernel_size, *, rngs, dtype):
        m, n = kernel_size, kernel_size // 3
        self.mn_conv = conv(pdim, pdim, (m, n), rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)
        self.nm_conv = conv(pdim, pdim, (n, m), rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)
        self.nn_conv = conv(pdim, pdim, n, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)
        self.idx = pdim

    def __call__(self, x):
        part = x[..., : self.idx]
        y = self.mn_conv(part) + self.nm_conv(part) + self.nn_conv(part)
        return jnp.concatenate([y, x[..., self.idx :]], axis=-1)


class PLKBlock(nnx.Module):
    def __init__(self, dim, ccm_type, kernel_size, split_ratio, lk_type, use_max_kernel, sparse_kernels,
                 sparse_dilations, with_idt, use_ea, *, rngs, dtype):
        self.channe_mixer = channel_mixer(dim, ccm_type, rngs=rngs, dtype=dtype)  # sic: the reference's key
        pdim = pdim_for(dim, split_ratio)
        if lk_type == "PLK":
            self.lk = PLKConv2d(pdim, kernel_size, with_idt, rngs=rngs, dtype=dtype)
        elif lk_type == "SparsePLK":
            self.lk = SparsePLKConv2d(pdim, kernel_size, sparse_kernels, sparse_dilations, use_max_kernel, with_idt,
                                      rngs=rngs, dtype=dtype)
        else:
            self.lk = RectSparsePLKConv2d(pdim, kernel_size, rngs=rngs, dtype=dtype)
        self.attn = EA(dim, rngs=rngs, dtype=dtype) if use_ea else Act("identity")
        self.refine = conv(dim, dim, 1, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)

    def __call__(self, x):
        return self.refine(self.attn(self.lk(self.channe_mixer(x)))) + x


def check_hyperparameters(dim, ccm_type, kernel_size, split_ratio, lk_type, use_max_kernel, sparse_kernels,
                          sparse_dilations):
    """A ValueError naming what the reference would refuse, or build and then fail on (even kernels change the size)."""
    if ccm_type not in CCM_TYPES:
        raise ValueError(f"unknown PLKSR ccm_type {ccm_type!r} ({', '.join(CCM_TYPES)})")
    if lk_type not in LK_TYPES:
        raise ValueError(f"unknown PLKSR lk_type {lk_type!r} ({', '.join(LK_TYPES)})")
    if not 0 < pdim_for(dim, split_ratio) <= dim:
        raise ValueError(f"PLKSR: split_ratio {split_ratio} gives {pdim_for(dim, split_ratio)} of {dim} channels")
    if lk_type == "SparsePLK":
        if len(sparse_kernels) != len(sparse_dilations) or not sparse_kernels:
            raise ValueError(f"PLKSR SparsePLK: sparse_kernels {list(sparse_kernels)} and sparse_dilations "
                             f"{list(sparse_dilations)} must be non-empty and as long as each other")
        sizes = list(sparse_kernels) + ([max_kernel_size(kernel_size, sparse_kernels, sparse_dilations)]
                                        if use_max_kernel else [])
    elif lk_type == "RectSparsePLK":
        sizes = [kernel_size, kernel_size // 3]
    else:
        sizes = [kernel_size]
    if any(k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(f"PLKSR {lk_type} with kernel_size {kernel_size}: its kernels ({sizes}) must be odd, or the "
                         "reference's padding changes the image size")


class PLKSR(RepeatedInputSR):
    """PLKSR on NHWC images in [0, 1], any size: feats(x) + x repeated per sub-pixel, then PixelShuffle."""

    def __init__(self, *, scale=4, dim=64, n_blocks=28, ccm_type="CCM", kernel_size=17, split_ratio=0.25, lk_type="PLK",
                 use_max_kernel=False, sparse_kernels=(5, 5, 5, 5), sparse_dilations=(1, 2, 3, 4), with_idt=False,
                 use_ea=True, rngs: nnx.Rngs, dtype=jnp.float32):
        sparse_kernels, sparse_dilations = tuple(map(int, sparse_kernels)), tuple(map(int, sparse_dilations))
        check_hyperparameters(dim, ccm_type, kernel_size, split_ratio, lk_type, use_max_kernel, sparse_kernels,
                              sparse_dilations)
        self.scale, self.in_ch, self.dtype = scale, IN_CH, dtype
        self.size_multiple = self.tile_multiple = 1  # convolutions only: any size, tiles anywhere
        self.feats = Sequential(
            [conv(IN_CH, dim, 3, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)]
            + [PLKBlock(dim, ccm_type, kernel_size, split_ratio, lk_type, use_max_kernel, sparse_kernels, sparse_dilations,
                        with_idt, use_ea, rngs=rngs, dtype=dtype) for _ in range(n_blocks)]
            + [conv(dim, IN_CH * scale * scale, 3, rngs=rngs, dtype=dtype, kernel_init=trunc_normal_002)])
        self.to_img = PixelShuffle(scale)
        self.eval()


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "PLKSR")
    return PLKSR(**full, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=dtype)
