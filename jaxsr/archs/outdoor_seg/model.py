"""OutdoorSceneSeg, the segmentation network of SFTGAN (xinntao/SFTGAN `pytorch_test/architectures.py`, traiNNer's
`seg_arch.py`), whose probability maps condition SFT-Net: a dilated ResNet-101 (DeepLab-style, output stride 8) on
OST's 8 outdoor categories, mirrored attribute for attribute and nn.Sequential index for index:

    feature = conv3x3/2 BN ReLU, conv3x3 BN ReLU, conv3x3 BN ReLU, MaxPool(3, 2, ceil_mode)      indices 0..9
              Res131 x blocks[0]  (stride 1, dilation 1)                                         from 10
              Res131 x blocks[1]  (the first with stride 2)
              Res131 x blocks[2]  (dilation 2)
              Res131 x blocks[3]  (dilation 4)
              conv3x3 BN ReLU, Dropout(0.1), conv1x1 (bias) -> num_classes
    deconv  = ConvTranspose2d(C, C, 16, stride 8, padding 4, groups C, no bias): x8 back to the input grid
    softmax over the classes

Res131: res = [conv1x1 BN ReLU, conv3x3 (stride, dilation, padding = dilation) BN ReLU, conv1x1 BN], plus `proj`
(conv1x1 with the stride, BN) where in != out, then ReLU of the sum. Every conv but the classifier is bias-free.
The reference is stem (64, 64, 128), blocks (3, 4, 23, 3), widths mid (64, 128, 256, 512) / out (256, 512, 1024,
2048), head 512, 8 classes. The input is what test_segmentation.py feeds it: BGR in 0..255 less the mean
(103.939, 116.779, 123.68), NHWC here; the output is NHWC probabilities. Built in eval mode (running statistics,
Dropout off): jaxsr runs it for inference only.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import Act, BatchNorm2d, Sequential, conv, spec_kwargs, torch_default_init

DEFAULTS = dict(in_ch=3, stem=(64, 64, 128), blocks=(3, 4, 23, 3), mid=(64, 128, 256, 512), out=(256, 512, 1024, 2048),
                head=512, num_classes=8)
STAGES = ((1, 1), (2, 1), (1, 2), (1, 4))  # (stride, dilation) of each stage's 3x3 convs: output stride 8
BGR_MEAN = (103.939, 116.779, 123.68)  # what test_segmentation.py subtracts from the 0..255 BGR image


def _conv_bn(cin, cout, k, rngs, dtype, stride=1, dilation=1, relu=True):
    """B.conv_block(cin, cout, k, stride, dilation, bias=False, 'zero', 'batch'[, act]) flattened: conv, BN(, ReLU)."""
    pad = (k - 1) // 2 * dilation
    layers = [conv(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False, rngs=rngs, dtype=dtype),
              BatchNorm2d(cout, use_running_average=True, dtype=dtype)]
    return layers + [Act("relu")] if relu else layers


class Res131(nnx.Module):
    def __init__(self, cin, mid, cout, dilation=1, stride=1, *, rngs, dtype):
        self.res = Sequential(_conv_bn(cin, mid, 1, rngs, dtype) + _conv_bn(mid, mid, 3, rngs, dtype, stride, dilation)
                              + _conv_bn(mid, cout, 1, rngs, dtype, relu=False))
        self.has_proj = cin != cout
        if self.has_proj:
            self.proj = Sequential(_conv_bn(cin, cout, 1, rngs, dtype, stride, relu=False))

    def __call__(self, x):
        res = self.res(x)
        return jax.nn.relu((self.proj(x) if self.has_proj else x) + res)


class MaxPoolCeil(nnx.Module):
    """nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True): a last window that starts inside the input is kept."""

    def __call__(self, x):
        pads = []
        for n in x.shape[1:3]:
            out = math.ceil((n - 3) / 2) + 1
            if (out - 1) * 2 >= n:
                out -= 1
            pads.append((0, (out - 1) * 2 + 3 - n))
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), *pads, (0, 0)))


class GroupedDeconv(nnx.Module):
    """nn.ConvTranspose2d(C, C, 16, stride=8, padding=4, groups=C, bias=False): each class map upsampled x8 by its own
    16x16 kernel. `kernel[i, j, 0, c]` is torch's weight[c, 0, i, j] (the bridge's HWIO <-> OIHW move)."""

    def __init__(self, channels, *, rngs, dtype, k=16, stride=8, padding=4):
        # torch's default init, U(+-1/sqrt(fan_in)) with fan_in = weight.shape[1] * k * k = k * k: what
        # torch_default_init draws for an HWIO kernel of one input channel
        self.kernel = nnx.Param(torch_default_init(rngs.params(), (k, k, 1, channels)))
        self.k, self.stride, self.padding, self.dtype = k, stride, padding, dtype

    def __call__(self, x):
        p = self.k - 1 - self.padding
        w = self.kernel[...][::-1, ::-1].astype(self.dtype)
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((p, p), (p, p)), lhs_dilation=(self.stride, self.stride),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1],
                                            precision=jax.lax.Precision.HIGHEST)


class OutdoorSceneSeg(nnx.Module):
    """`model(x)` -> class probabilities (NHWC) for a mean-subtracted BGR image (NHWC, 0..255 scale)."""

    def __init__(self, in_ch=3, stem=DEFAULTS["stem"], blocks=DEFAULTS["blocks"], mid=DEFAULTS["mid"], out=DEFAULTS["out"],
                 head=512, num_classes=8, *, rngs=None, dtype=jnp.float32):
        stem, blocks, mid, out = (tuple(int(v) for v in f) for f in (stem, blocks, mid, out))
        if len(stem) != 3 or not len(blocks) == len(mid) == len(out) == len(STAGES) or min(blocks) < 1:
            raise ValueError(f"OutdoorSceneSeg has a 3-conv stem and {len(STAGES)} stages of at least one block; got stem "
                             f"{stem}, blocks {blocks}, mid {mid}, out {out}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.in_ch, self.num_classes, self.dtype = in_ch, num_classes, dtype
        layers = (_conv_bn(in_ch, stem[0], 3, rngs, dtype, stride=2) + _conv_bn(stem[0], stem[1], 3, rngs, dtype)
                  + _conv_bn(stem[1], stem[2], 3, rngs, dtype) + [MaxPoolCeil()])
        cin = stem[2]
        for n, m, c, (stride, dilation) in zip(blocks, mid, out, STAGES):
            for i in range(n):
                layers.append(Res131(cin, m, c, dilation, stride if i == 0 else 1, rngs=rngs, dtype=dtype))
                cin = c
        layers += _conv_bn(cin, head, 3, rngs, dtype) + [Act("identity"),  # Dropout(0.1), off in eval mode
                                                        conv(head, num_classes, 1, rngs=rngs, dtype=dtype)]
        self.feature = Sequential(layers)
        self.deconv = GroupedDeconv(num_classes, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        y = self.deconv(self.feature(x.astype(self.dtype)))
        return jax.nn.softmax(y.astype(jnp.float32), axis=-1)


def build(spec, *, rngs=None, dtype=jnp.float32):
    return OutdoorSceneSeg(**spec_kwargs(spec, DEFAULTS, "OutdoorSceneSeg", also=()), rngs=rngs, dtype=dtype)
