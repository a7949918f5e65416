"""PPON (Progressive Perception-Oriented Network, Hui et al., Information Sciences 2020), mirroring the reference
module tree attribute for attribute (Zheng222/PPON `models/architecture.py` class PPON and `models/block.py`;
victorca25/traiNNer's `PPON_arch.py` builds the same tree without `alpha`).

Three branches share the content trunk and add up:
    CFEM (conv, then nb RRBlock_32 and a conv around a long skip) -> CRM  -> content
    SFEM (ssim_blocks RRBlock_32 on CFEM's features)              -> SRM  -> + content = structure
    PFEM (gan_blocks RRBlock_32 on SFEM's features)               -> PRM  -> alpha * it + structure = perceptual
An RRBlock_32 is n_rb `_ResBlock_32`s (conv, LeakyReLU(0.2), n_dil dilated 3x3 convs of dil_nf channels at rates
1..n_dil summed cumulatively and concatenated, LeakyReLU, 1x1 conv back, x0.2 plus its input), x0.2 plus its input.
Each reconstruction module is torch's flattened nn.Sequential: per x2 stage (one x3 stage for scale 3) nearest
Upsample, conv, activation; then conv, activation, conv. The reference's `B.sequential` returns a lone module
unwrapped, which moves its keys (`SFEM.RB1...` for one block); `_seq` does the same.

The module returns (content, structure, perceptual); `branch` (default perceptual) is the one jaxsr's inference,
evaluation and ONNX export take (`jaxsr.archs.forward`). `branch_only` is for PPON's phases (`kind='ppon'`): the
earlier branches' outputs enter `branch` without gradient, so their modules are frozen as the reference freezes them.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import Act, LeakyReLU, Sequential, conv, spec_kwargs
from jaxsr.archs.compact.model import PReLU

BRANCHES = ("content", "structure", "perceptual")
ACT_TYPES = ("lrelu", "relu", "prelu")
# A spec's fields and their defaults: the released PPON_G.pth (64 features, 24 content blocks), and what the reference
# hard-codes (2 structure and 2 perceptual blocks, 3 residual blocks each, 8 dilated convs of nf // 2 channels:
# dil_nf None). alpha scales the perceptual residual (Zheng222's test option; 1 in traiNNer). The scale is the run's.
DEFAULTS = dict(in_ch=3, out_ch=3, nf=64, nb=24, ssim_blocks=2, gan_blocks=2, n_rb=3, n_dil=8, dil_nf=None, alpha=1.0,
                act_type="lrelu")


def _seq(modules):
    """The reference's `B.sequential`: a lone module stays itself, more go into an nn.Sequential."""
    return modules[0] if len(modules) == 1 else Sequential(modules)


def activation(act_type):
    """block.activation: LeakyReLU(0.2), ReLU, or PReLU with one slope initialised to 0.2."""
    return {"lrelu": lambda: LeakyReLU(0.2), "relu": lambda: Act("relu"), "prelu": lambda: PReLU(1, 0.2)}[act_type]()


class Upsample(nnx.Module):
    """nn.Upsample(scale_factor=f, mode='nearest'), parameter-free, at its nn.Sequential index."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return jnp.repeat(jnp.repeat(x, self.factor, axis=1), self.factor, axis=2)


class ShortcutBlock(nnx.Module):
    def __init__(self, sub):
        self.sub = sub

    def __call__(self, x):
        return x + self.sub(x)


class ResBlock32(nnx.Module):
    """_ResBlock_32."""

    def __init__(self, nc, n_dil, dil_nf, *, rngs, dtype):
        self.n_dil = n_dil
        self.c1 = conv(nc, nc, 3, rngs=rngs, dtype=dtype)
        for i in range(1, n_dil + 1):
            setattr(self, f"d{i}", conv(nc, dil_nf, 3, dilation=i, rngs=rngs, dtype=dtype))
        self.act = LeakyReLU(0.2)
        self.c2 = conv(n_dil * dil_nf, nc, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        out1 = self.act(self.c1(x))
        sums = [self.d1(out1)]
        for i in range(2, self.n_dil + 1):
            sums.append(sums[-1] + getattr(self, f"d{i}")(out1))
        return x + self.c2(self.act(jnp.concatenate(sums, axis=-1))) * 0.2


class RRBlock32(nnx.Module):
    """RRBlock_32: RB1..RB{n_rb}."""

    def __init__(self, nc, n_rb, n_dil, dil_nf, *, rngs, dtype):
        self.n_rb = n_rb
        for i in range(1, n_rb + 1):
            setattr(self, f"RB{i}", ResBlock32(nc, n_dil, dil_nf, rngs=rngs, dtype=dtype))

    def __call__(self, x):
        out = x
        for i in range(1, self.n_rb + 1):
            out = getattr(self, f"RB{i}")(out)
        return out * 0.2 + x


def n_upsample(scale):
    """The reference's upconv stages: log2(scale), one (x3) for scale 3."""
    return 1 if scale == 3 else scale.bit_length() - 1


class PPON(nnx.Module):
    branches = BRANCHES

    def __init__(self, in_ch=3, out_ch=3, nf=64, nb=24, scale=4, ssim_blocks=2, gan_blocks=2, n_rb=3, n_dil=8, dil_nf=None,
                 alpha=1.0, act_type="lrelu", *, rngs=None, dtype=jnp.float32):
        if scale < 1 or not (scale == 3 or scale & (scale - 1) == 0):
            raise ValueError(f"PPON supports scale 2^n and 3, got {scale}")
        if act_type not in ACT_TYPES:
            raise ValueError(f"PPON act_type must be one of {', '.join(ACT_TYPES)}, got {act_type!r}")
        if min(ssim_blocks, gan_blocks, n_rb, n_dil) < 1 or nb < 0:
            raise ValueError("PPON needs ssim_blocks, gan_blocks, n_rb and n_dil >= 1 and nb >= 0, got "
                             f"{ssim_blocks}, {gan_blocks}, {n_rb}, {n_dil} and {nb}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.out_ch, self.dtype, self.alpha = scale, in_ch, out_ch, dtype, float(alpha)
        self.size_multiple = self.tile_multiple = 1
        self.branch = "perceptual"
        self.branch_only = False  # True (PPON's phases): gradients stop at the earlier branches' outputs
        dil_nf = nf // 2 if dil_nf is None else dil_nf

        def rrblocks(n):
            return [RRBlock32(nf, n_rb, n_dil, dil_nf, rngs=rngs, dtype=dtype) for _ in range(n)]

        def reconstruction():
            f = 3 if scale == 3 else 2
            layers = []
            for _ in range(n_upsample(scale)):
                layers += [Upsample(f), conv(nf, nf, 3, rngs=rngs, dtype=dtype), activation(act_type)]
            return Sequential([*layers, conv(nf, nf, 3, rngs=rngs, dtype=dtype), activation(act_type),
                               conv(nf, out_ch, 3, rngs=rngs, dtype=dtype)])

        trunk = _seq([*rrblocks(nb), conv(nf, nf, 3, rngs=rngs, dtype=dtype)])
        self.CFEM = Sequential([conv(in_ch, nf, 3, rngs=rngs, dtype=dtype), ShortcutBlock(trunk)])
        self.SFEM = _seq(rrblocks(ssim_blocks))
        self.PFEM = _seq(rrblocks(gan_blocks))
        self.CRM = reconstruction()
        self.SRM = reconstruction()
        self.PRM = reconstruction()

    def __call__(self, x):
        """x: (B, H, W, in_ch) in [0, 1] -> (content, structure, perceptual), each (B, s*H, s*W, out_ch) float32."""
        feat_c = self.CFEM(x.astype(self.dtype))
        out_c = self.CRM(feat_c).astype(jnp.float32)
        if self.branch_only and self.branch != "content":
            feat_c, out_c = jax.lax.stop_gradient(feat_c), jax.lax.stop_gradient(out_c)
        feat_s = self.SFEM(feat_c)
        out_s = self.SRM(feat_s).astype(jnp.float32) + out_c
        if self.branch_only and self.branch == "perceptual":
            feat_s, out_s = jax.lax.stop_gradient(feat_s), jax.lax.stop_gradient(out_s)
        out_p = self.alpha * self.PRM(self.PFEM(feat_s)).astype(jnp.float32) + out_s
        return out_c, out_s, out_p


def build(spec, *, rngs=None, dtype=jnp.float32):
    full = spec_kwargs(spec, DEFAULTS, "PPON")
    dil_nf = None if full["dil_nf"] is None else int(full["dil_nf"])
    return PPON(int(full["in_ch"]), int(full["out_ch"]), int(full["nf"]), int(full["nb"]), int(full["scale"]),
                int(full["ssim_blocks"]), int(full["gan_blocks"]), int(full["n_rb"]), int(full["n_dil"]), dil_nf,
                float(full["alpha"]), str(full["act_type"]), rngs=rngs, dtype=dtype)


__all__ = ["BRANCHES", "DEFAULTS", "PPON", "build"]
