"""SRFlow (Lugmayr et al., ECCV 2020): a conditional normalizing flow on an RRDB encoder, mirroring andreas128/SRFlow's
module tree (`code/models/modules/SRFlowNet_arch.py` and the modules it builds) and its numerics.

`RRDB` is the encoder (RRDBNet with `RRDB_trunk`, `upconv1..3`, `HRconv`, `conv_last`); its features at each flow
level are the level's conditioning: `fea_up{s}` (the upconv outputs after their in-place LeakyReLU, `last_lr_fea` at
s=1, its 2x2 mean at s=0.5), each concatenated with the stacked trunk blocks' outputs (`stack_blocks`) resized by
nearest neighbour. `flowUpsamplerNet.layers` holds, per level 1..L: a squeeze, `noaffine_steps` FlowSteps without
coupling (ActNorm, invertible 1x1 conv), `K` FlowSteps with the conditional affine coupling
(CondAffineSeparatedAndCond: `fFeatures` from the conditioning, then `fAffine` from half the channels and the
conditioning), and a Split2d with its learned prior on the levels below L-1 (the reference's `correct_splits: False`).
The final z has a standard normal prior. `flowUpsamplerNet.f` is a conv the reference builds and never runs; it is
kept for the key layout.

Arrays are NHWC; torch's channel orders are kept (squeeze is pixel-unshuffle's order, `split_feature(.., "cross")`
takes even channels as shift and odd ones as scale). The encoder's own image output (`RRDB(lr)`) is not the SR
image: `model(lr)` is the flow's sample at heat 0.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.common import (Act, Sequential, conv, host_init, pixel_shuffle, pixel_unshuffle, spec_kwargs,
                                upsample_nearest2x)
from jaxsr.archs.attention import run_block
from jaxsr.archs.esrgan.model import ResidualDenseBlock

HI = jax.lax.Precision.HIGHEST
LOG2PI = math.log(2 * math.pi)
AFFINE_EPS = 1e-4  # CondAffineSeparatedAndCond's `eps` option, left at its default by every released configuration
# The released SRFlow_DF2K_4X.pth (code/confs/SRFlow_DF2K_4X.yml); x8 files differ in L and stack_blocks (see
# __init__.stack_blocks_for). hidden_ch is CondAffineSeparatedAndCond's hidden_channels, f_ch the unused conv's width.
# use_chk: jaxsr's remat (each trunk block and each FlowStep recomputed in the backward pass), not in the keys.
DEFAULTS = dict(in_ch=3, out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, K=16, L=3, noaffine_steps=2,
                hidden_ch=64, kernel_hidden=1, n_hidden_layers=1, stack_blocks=(1, 8, 15, 22), f_ch=96, use_chk=False)


def _conv(x, kernel, pad):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HI)


def _zeros(shape):
    """Zeros put on the device from the host (an eager jnp.zeros compiles a program per shape)."""
    return jnp.asarray(np.zeros(shape, np.float32))


def _sum(x):
    """thops.sum over C, H, W: one value per batch element."""
    return jnp.sum(x, axis=(1, 2, 3))


def gaussian_logp(mean, logs, x):
    """flow.GaussianDiag.logp: the diagonal Gaussian's log density summed per batch element (standard: mean None)."""
    if mean is None:
        return _sum(-0.5 * (x**2 + LOG2PI))
    return _sum(-0.5 * (logs * 2.0 + (x - mean) ** 2 / jnp.exp(logs * 2.0) + LOG2PI))


def _cross(h):
    """thops.split_feature(h, 'cross'): even channels, odd channels."""
    return h[..., 0::2], h[..., 1::2]


class RRDB(nnx.Module):
    """The reference's RRDB (blocks RDB1..RDB3; ESRGAN's dense block)."""

    def __init__(self, nf, gc, *, rngs, dtype):
        self.RDB1 = ResidualDenseBlock(nf, gc, rngs=rngs, dtype=dtype)
        self.RDB2 = ResidualDenseBlock(nf, gc, rngs=rngs, dtype=dtype)
        self.RDB3 = ResidualDenseBlock(nf, gc, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


class RRDBNet(nnx.Module):
    """SRFlow's encoder: RRDBNet with the intermediate features the flow is conditioned on."""

    def __init__(self, in_ch, out_ch, nf, nb, gc, scale, use_chk=False, *, rngs, dtype):
        self.scale, self.use_chk = scale, use_chk
        self.conv_first = conv(in_ch, nf, 3, rngs=rngs, dtype=dtype)
        self.RRDB_trunk = nnx.List([RRDB(nf, gc, rngs=rngs, dtype=dtype) for _ in range(nb)])
        self.trunk_conv = conv(nf, nf, 3, rngs=rngs, dtype=dtype)
        self.num_up = int(math.log2(scale))
        for i in range(1, self.num_up + 1):
            setattr(self, f"upconv{i}", conv(nf, nf, 3, rngs=rngs, dtype=dtype))
        self.HRconv = conv(nf, nf, 3, rngs=rngs, dtype=dtype)
        self.conv_last = conv(nf, out_ch, 3, rngs=rngs, dtype=dtype)

    def features(self, x, blocks=(), ups=None):
        """{'fea_up1' (last_lr_fea), 'fea_up2', 'fea_up4', ... (the first `ups` upconv outputs after their LeakyReLU,
        which the reference applies in place), 'block_i' for i in blocks, 'fea' (what the image head takes)}."""
        fea = self.conv_first(x)
        out = {}
        for i, block in enumerate(self.RRDB_trunk):
            fea = run_block(block, fea, remat=self.use_chk)
            if i in blocks:
                out[f"block_{i}"] = fea
        fea = fea + self.trunk_conv(fea)
        out["fea_up1"] = fea
        for i in range(1, (self.num_up if ups is None else ups) + 1):
            fea = jax.nn.leaky_relu(getattr(self, f"upconv{i}")(upsample_nearest2x(fea)), 0.2)
            out[f"fea_up{2**i}"] = fea  # after the LeakyReLU: the reference's is in place
        out["fea"] = fea
        return out

    def __call__(self, x):
        """RRDBNet's own image output (`get_steps=False`)."""
        fea = self.features(x)["fea"]
        return self.conv_last(jax.nn.leaky_relu(self.HRconv(fea), 0.2))


class ActNorm2d(nnx.Module):
    """FlowActNorms.ActNorm2d: y = (x + bias) * exp(logs), logdet += sum(logs) * H * W. The data-dependent first-batch
    initialisation of `bias`/`logs` is a training step (the reference does it in train mode while bias is all zero)."""

    def __init__(self, ch):
        self.bias = nnx.Param(_zeros((1, ch, 1, 1)))
        self.logs = nnx.Param(_zeros((1, ch, 1, 1)))

    def __call__(self, x, logdet=None, reverse=False):
        """(y, logdet + d) forward with a logdet, y alone without (inside flow.Conv2d, and the reverse)."""
        b, logs = self.bias[...].reshape(-1), self.logs[...].reshape(-1)
        if reverse:
            return x * jnp.exp(-logs) - b
        x = (x + b) * jnp.exp(logs)
        return x if logdet is None else (x, logdet + jnp.sum(logs) * (x.shape[1] * x.shape[2]))


# flow.Conv2d's N(0, 0.05) weights and InvertibleConv1x1's random rotation (QR of a Gaussian), drawn on the host
_flow_conv_init = host_init(lambda g, s: g.normal(0.0, 0.05, s),
                            lambda key, s, dtype=jnp.float32: 0.05 * jax.random.normal(key, s, dtype))
_rotation_init = host_init(lambda g, s: np.linalg.qr(g.standard_normal(s))[0],
                           lambda key, s, dtype=jnp.float32: jnp.linalg.qr(jax.random.normal(key, s, dtype))[0])


class FlowConv2d(nnx.Module):
    """flow.Conv2d: a bias-free 'same' conv (weights N(0, 0.05)) followed by an ActNorm2d."""

    def __init__(self, cin, cout, k, *, rngs):
        self.kernel = nnx.Param(_flow_conv_init(rngs.params(), (k, k, cin, cout)))
        self.actnorm = ActNorm2d(cout)

    def __call__(self, x):
        return self.actnorm(_conv(x, self.kernel[...], self.kernel.shape[0] // 2))


class Conv2dZeros(nnx.Module):
    """flow.Conv2dZeros: a zero-initialised 3x3 'same' conv scaled by exp(3 * logs)."""

    def __init__(self, cin, cout):
        self.kernel = nnx.Param(_zeros((3, 3, cin, cout)))
        self.bias = nnx.Param(_zeros((cout,)))
        self.logs = nnx.Param(_zeros((cout, 1, 1)))

    def __call__(self, x):
        return (_conv(x, self.kernel[...], 1) + self.bias[...]) * jnp.exp(self.logs[...].reshape(-1) * 3.0)


class InvertibleConv1x1(nnx.Module):
    """Permutations.InvertibleConv1x1 (not LU-decomposed): z = W x per pixel, logdet += log|det W| * H * W; the
    reverse uses W's inverse (the reference inverts in float64, here in float32)."""

    def __init__(self, ch, *, rngs):
        self.weight = nnx.Param(_rotation_init(rngs.params(), (ch, ch)))

    def inverse(self):
        """W^-1: in float64 on the host as the reference when the weight is concrete (a forward outside jit, an ONNX
        trace, where it becomes a constant), else in float32 (inside jit)."""
        w = self.weight[...]
        try:
            return jnp.asarray(np.linalg.inv(np.asarray(w, np.float64)).astype(np.float32))
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            return jnp.linalg.inv(w)

    def __call__(self, x, logdet, reverse=False):
        """The reverse (logdet None) returns no log-determinant."""
        if reverse:
            return jnp.einsum("nhwc,oc->nhwo", x, self.inverse(), precision=HI), None
        d = jnp.linalg.slogdet(self.weight[...])[1] * (x.shape[1] * x.shape[2])
        return jnp.einsum("nhwc,oc->nhwo", x, self.weight[...], precision=HI), logdet + d


def _coupling_net(cin, cout, hidden, kernel_hidden, n_hidden_layers, *, rngs):
    layers = [FlowConv2d(cin, hidden, 3, rngs=rngs), Act("relu")]
    for _ in range(n_hidden_layers):
        layers += [FlowConv2d(hidden, hidden, kernel_hidden, rngs=rngs), Act("relu")]
    return Sequential([*layers, Conv2dZeros(hidden, cout)])


class CondAffineSeparatedAndCond(nnx.Module):
    """The conditional affine coupling: an affine injector from the conditioning (`fFeatures`), then an affine
    coupling of the second half of the channels from the first half and the conditioning (`fAffine`); scales are
    sigmoid(h + 2) + eps."""

    def __init__(self, ch, cond_ch, hidden, kernel_hidden, n_hidden_layers, *, rngs):
        self.n_nn = ch // 2
        self.fAffine = _coupling_net(self.n_nn + cond_ch, (ch - self.n_nn) * 2, hidden, kernel_hidden,
                                     n_hidden_layers, rngs=rngs)
        self.fFeatures = _coupling_net(cond_ch, ch * 2, hidden, kernel_hidden, n_hidden_layers, rngs=rngs)

    @staticmethod
    def _scale_shift(h):
        shift, scale = _cross(h)
        return jax.nn.sigmoid(scale + 2.0) + AFFINE_EPS, shift

    def __call__(self, z, logdet, ft, reverse=False):
        """(z, logdet) forward; the reverse returns no log-determinant."""
        scale_ft, shift_ft = self._scale_shift(self.fFeatures(ft))
        if not reverse:
            z = (z + shift_ft) * scale_ft
            logdet = logdet + _sum(jnp.log(scale_ft))
        z1, z2 = z[..., :self.n_nn], z[..., self.n_nn:]
        scale, shift = self._scale_shift(self.fAffine(jnp.concatenate([z1, ft], axis=-1)))
        if not reverse:
            z2 = (z2 + shift) * scale
            return jnp.concatenate([z1, z2], axis=-1), logdet + _sum(jnp.log(scale))
        z = jnp.concatenate([z1, z2 / scale - shift], axis=-1)
        return z / scale_ft - shift_ft, None


class FlowStep(nnx.Module):
    """ActNorm -> invertible 1x1 conv -> (the conditional affine coupling, unless `coupling` is False)."""

    def __init__(self, ch, cond_ch, coupling, hidden, kernel_hidden, n_hidden_layers, *, rngs):
        self.actnorm = ActNorm2d(ch)
        self.invconv = InvertibleConv1x1(ch, rngs=rngs)
        self.coupling = coupling
        if coupling:
            self.affine = CondAffineSeparatedAndCond(ch, cond_ch, hidden, kernel_hidden, n_hidden_layers, rngs=rngs)

    def __call__(self, z, logdet, ft, reverse=False):
        if not reverse:
            z, logdet = self.actnorm(z, logdet)
            z, logdet = self.invconv(z, logdet)
            return self.affine(z, logdet, ft) if self.coupling else (z, logdet)
        if self.coupling:
            z, _ = self.affine(z, None, ft, reverse=True)
        z, _ = self.invconv(z, None, reverse=True)
        return self.actnorm(z, reverse=True), None


class Squeeze(nnx.Module):
    """flow.SqueezeLayer(2): space-to-depth in torch's channel order (pixel-unshuffle's), parameter-free."""

    def __call__(self, z, logdet, ft=None, reverse=False):
        return (pixel_shuffle(z, 2) if reverse else pixel_unshuffle(z, 2)), logdet


class Split2d(nnx.Module):
    """Split.Split2d (consume ratio 0.5, logs_eps 0, unconditioned): half the channels leave the flow as
    eps = (z2 - mean) / exp(logs) under the prior N(mean, exp(logs)) predicted from the other half."""

    def __init__(self, ch):
        self.n_pass = ch - int(round(ch * 0.5))
        self.conv = Conv2dZeros(self.n_pass, (ch - self.n_pass) * 2)

    def prior(self, z1):
        return _cross(self.conv(z1))

    def __call__(self, z, logdet):
        z1, z2 = z[..., :self.n_pass], z[..., self.n_pass:]
        mean, logs = self.prior(z1)
        return z1, logdet + gaussian_logp(mean, logs, z2), (z2 - mean) / jnp.exp(logs)

    def reverse(self, z1, eps):
        mean, logs = self.prior(z1)
        return jnp.concatenate([z1, mean + jnp.exp(logs) * eps], axis=-1)


def _inverse(layer, z, ft):
    return layer(z, None, ft, reverse=True)[0]


class FlowUpsamplerNet(nnx.Module):
    def __init__(self, in_ch, cond_ch, K, L, noaffine_steps, hidden_ch, kernel_hidden, n_hidden_layers, f_ch,
                 use_chk=False, *, rngs):
        self.use_chk = use_chk
        layers, self.levels = [], []
        ch = in_ch
        for level in range(1, L + 1):
            ch *= 4
            steps = [FlowStep(ch, cond_ch, False, hidden_ch, kernel_hidden, n_hidden_layers, rngs=rngs)
                     for _ in range(noaffine_steps)]
            steps += [FlowStep(ch, cond_ch, True, hidden_ch, kernel_hidden, n_hidden_layers, rngs=rngs)
                      for _ in range(K)]
            level_layers = [Squeeze(), *steps]
            if level < L - 1:
                level_layers.append(Split2d(ch))
                ch = level_layers[-1].n_pass
            layers += level_layers
            self.levels += [level] * len(level_layers)
        self.layers = nnx.List(layers)
        self.levels = tuple(self.levels)
        self.z_ch = ch
        self.f = Sequential([conv(cond_ch, f_ch, 3, rngs=rngs)])

    def encode(self, x, cond, logdet):
        """(z, logdet, [the splits' eps, in level order])."""
        eps = []
        for layer, level in zip(self.layers, self.levels):
            if isinstance(layer, Split2d):
                x, logdet, e = layer(x, logdet)
                eps.append(e)
            else:
                x, logdet = run_block(layer, x, logdet, cond[level], remat=self.use_chk)
        return x, logdet, eps

    def decode(self, z, cond, eps):
        eps = list(eps)
        for layer, level in zip(reversed(self.layers), reversed(self.levels)):
            if isinstance(layer, Split2d):
                z = layer.reverse(z, eps.pop())
            elif self.use_chk:
                z = nnx.remat(_inverse)(layer, z, cond[level])
            else:
                z = _inverse(layer, z, cond[level])
        return z


class SRFlowNet(nnx.Module):
    """SRFlowNet: `RRDB` (the encoder) and `flowUpsamplerNet`. HR images and samples are in [0, 1] like the
    reference's; LR sides must be multiples of `size_multiple` (2^L / scale), which jaxsr.upscale pads to. `dtype` is
    the encoder's compute dtype; the flow (divisions by its scales, its inverses) computes in float32."""

    def __init__(self, in_ch=3, out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32, K=16, L=3,
                 noaffine_steps=2, hidden_ch=64, kernel_hidden=1, n_hidden_layers=1, stack_blocks=(1, 8, 15, 22),
                 f_ch=96, use_chk=False, *, rngs=None, dtype=jnp.float32):
        if scale not in (4, 8):
            raise ValueError(f"SRFlow is x4 or x8 (its encoder's features name the flow levels), got scale {scale}")
        if not 1 <= L <= int(math.log2(scale)) + 1:
            raise ValueError(f"SRFlow x{scale} has levels 1..{int(math.log2(scale)) + 1} (down to the LR's half), "
                             f"got L {L}")
        if any(not 0 <= b < num_block for b in stack_blocks):
            raise ValueError(f"stack_blocks {list(stack_blocks)} must index the encoder's {num_block} blocks")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.dtype, self.L = scale, in_ch, dtype, L
        self.stack_blocks = tuple(int(b) for b in stack_blocks)
        self.size_multiple = self.tile_multiple = max(1, 2**L // scale)
        self.RRDB = RRDBNet(in_ch, out_ch, num_feat, num_block, num_grow_ch, scale, use_chk, rngs=rngs, dtype=dtype)
        cond_ch = num_feat * (len(self.stack_blocks) + 1)
        self.flowUpsamplerNet = FlowUpsamplerNet(in_ch, cond_ch, K, L, noaffine_steps, hidden_ch, kernel_hidden,
                                                 n_hidden_layers, f_ch, use_chk, rngs=rngs)

    def conditions(self, lr):
        """{level: the flow's conditioning at that level} (rrdbPreprocessing with stackRRDB concat, fea_up0)."""
        lr = lr.astype(self.dtype)
        sides, m = lr.shape[1:3], self.size_multiple
        if m > 1 and all(isinstance(d, int) for d in sides) and (sides[0] % m or sides[1] % m):
            raise ValueError(f"SRFlow x{self.scale} with L={self.L} needs LR sides that are multiples of {m}, got "
                             f"{sides[0]}x{sides[1]}: pad the input (jaxsr.upscale does)")
        ups = max(0, int(math.log2(self.scale)) - 1)  # the deepest flow level's feature is fea_up{scale/2}
        f = self.RRDB.features(lr, self.stack_blocks, ups)
        stack = [f[f"block_{b}"] for b in self.stack_blocks]
        out = {}
        for level in range(1, self.L + 1):
            s = self.scale / 2**level
            if s >= 1:
                base = f[f"fea_up{int(s)}"]
                r = int(s)
                extra = [jnp.repeat(jnp.repeat(x, r, axis=1), r, axis=2) for x in stack]
            else:  # fea_up0: bilinear x1/2 (align_corners False) of an even-sided map is its 2x2 mean
                n, h, w, c = f["fea_up1"].shape
                base = f["fea_up1"].reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
                extra = [x[:, ::2, ::2] for x in stack]  # nearest to half size
            out[level] = jnp.concatenate([base, *extra], axis=-1).astype(jnp.float32)  # the flow computes in fp32
        return out

    def encode(self, hr, lr, *, return_eps=False, lr_enc=None):
        """HR (NHWC, [0, 1], already dequantized where training wants it) -> (z, logdet): the reference's
        normal_flow with add_gt_noise=False; logdet includes the splits' prior terms, as the reference's. With
        return_eps, also the splits' eps (the reference's `epses` list without its last entry, z). lr_enc: the
        conditions(lr) already computed (the reference's argument of that name), to share them between calls."""
        if hr.shape[1:3] != tuple(d * self.scale for d in lr.shape[1:3]):
            raise ValueError(f"SRFlow x{self.scale} encodes HR images {self.scale} times the LR's sides: got HR "
                             f"{hr.shape[1]}x{hr.shape[2]} for LR {lr.shape[1]}x{lr.shape[2]}")
        cond = self.conditions(lr) if lr_enc is None else lr_enc
        z, logdet, eps = self.flowUpsamplerNet.encode(hr.astype(jnp.float32), cond, jnp.zeros(hr.shape[0]))
        return (z, logdet, eps) if return_eps else (z, logdet)

    def nll(self, hr, lr, quant=None, lr_enc=None):
        """The reference's nll: -(logdet + log N(z; 0, 1)) / (log 2 * H * W), per batch element: bits per HR
        pixel-position (the reference divides by H*W, not 3*H*W). `hr` goes in as given: pass the dequantized image.
        quant: the dequantization bins of that noise (the reference's add_gt_noise path: u ~ U(-0.5, 0.5) / quant
        added to HR, and -log(quant) per pixel-position added to the log-determinant); None: no such term."""
        z, logdet = self.encode(hr, lr, lr_enc=lr_enc)
        pixels = hr.shape[1] * hr.shape[2]
        if quant is not None:
            logdet = logdet - math.log(quant) * pixels
        return -(logdet + gaussian_logp(None, None, z)) / (math.log(2.0) * pixels)

    def noise_shapes(self, lr_shape):
        """The shapes of the noise a sample takes for an NHWC LR shape: each split's eps, then z (the reference's
        `epses` order)."""
        n, h, w = lr_shape[0], lr_shape[1] * self.scale, lr_shape[2] * self.scale
        shapes = []
        for layer, level in zip(self.flowUpsamplerNet.layers, self.flowUpsamplerNet.levels):
            if isinstance(layer, Split2d):
                shapes.append((n, h // 2**level, w // 2**level, layer.conv.kernel.shape[-1] // 2))
        return [*shapes, (n, h // 2**self.L, w // 2**self.L, self.flowUpsamplerNet.z_ch)]

    def decode(self, lr, z, eps, lr_enc=None):
        """The reverse flow: z and the splits' eps (level order) -> the HR image."""
        return self.flowUpsamplerNet.decode(z, self.conditions(lr) if lr_enc is None else lr_enc, eps)

    def sample(self, lr, heat=0.0, key=None, noise=None, lr_enc=None):
        """An SR sample for the NHWC LR batch: every latent drawn from N(0, heat^2) with `key` (heat 0: all zero, the
        mean sample), or `noise`, a list shaped as noise_shapes(lr.shape), used as given (the reference's `epses`:
        not scaled by heat)."""
        *eps, z = self.draw_noise(lr.shape, heat, key) if noise is None else noise
        return self.decode(lr, z, eps, lr_enc)

    def draw_noise(self, lr_shape, heat, key=None):
        """The latents of a sample (noise_shapes(lr_shape)) from N(0, heat^2) with `key`; zeros at heat 0."""
        shapes = self.noise_shapes(lr_shape)
        if heat == 0:
            return [jnp.zeros(s, jnp.float32) for s in shapes]
        if key is None:
            raise ValueError("sampling at heat > 0 needs a key (jax.random.key(seed)), or the noise itself")
        return [heat * jax.random.normal(k, s) for k, s in zip(jax.random.split(key, len(shapes)), shapes)]

    def __call__(self, lr):
        """The heat-0 sample: what every image-only path (archs.forward, infer, evaluate, ONNX) runs."""
        return self.sample(lr, 0.0)


def build(spec, *, rngs=None, dtype=jnp.float32):
    kw = spec_kwargs(spec, DEFAULTS, "SRFlow")
    kw["stack_blocks"] = tuple(kw["stack_blocks"])
    return SRFlowNet(**kw, rngs=rngs, dtype=dtype)
