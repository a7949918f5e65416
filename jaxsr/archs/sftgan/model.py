"""SFT-Net (SFTGAN, Wang et al., CVPR 2018): a x4 SRResNet-like trunk whose residual blocks are modulated by Spatial
Feature Transform layers conditioned on semantic segmentation probabilities. Mirrors xinntao/SFTGAN's
`pytorch_test/architectures.py` (identical to traiNNer's `codes/models/modules/architectures/sft_arch.py`) attribute
for attribute and nn.Sequential index for index, in its two versions (`version`):

- 'pytorch': `SFT_Net` (SFTGAN_noBN_OST_bg.pth, traiNNer's sft_net_ini.pth): SFT is `fea * (scale + 1) + shift` with
  LeakyReLU(0.1) inside, blocks conv-ReLU-SFT-conv after the first SFT, and a pixel-shuffle tail
  `HR_branch` = [conv(nf, 4nf), PixelShuffle(2), ReLU] x2, conv, ReLU, conv;
- 'torch': `SFT_Net_torch` (SFTGAN_torch.pth, converted from the paper's Torch model): SFT is `fea * scale + shift`
  with LeakyReLU(0.01), blocks SFT-ReLU-conv-SFT-ReLU-conv, and a nearest tail [Upsample(2), conv, ReLU] x2, conv,
  ReLU, conv.

Both call the network as `model(x, seg)`: `x` the LR image (NHWC in [0, 1]), `seg` the class probabilities (NHWC,
`num_classes` channels) at the OUTPUT size, as SFTGAN computes them: its segmentation network runs on the
bicubic-upsampled LR image (test_segmentation.py), and `CondNet` (a 4x4 stride-4 conv then 1x1 convs, LeakyReLU 0.1)
brings them down to the LR grid the trunk runs on. One condition serves every SFT layer.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.archs.common import Act, LeakyReLU, PixelShuffle, Sequential, conv, lrelu, spec_kwargs, upsample_nearest2x

VERSIONS = ("pytorch", "torch")
# A spec's fields and their defaults: the released networks (x4, 64 features, 16 blocks, 8 classes, CondNet 8 -> 128
# -> 128 -> 128 -> 128 -> 32 channels, SFT 32 -> 32 -> 64)
DEFAULTS = dict(version="pytorch", in_ch=3, out_ch=3, num_feat=64, num_block=16, num_classes=8, cond_feat=128,
                cond_convs=5, cond_ch=32, sft_feat=32)
SCALE = 4  # two x2 stages, and CondNet's 4x4 stride-4 conv from the output grid to the input's


class SFTLayer(nnx.Module):
    """SFTLayer / SFTLayer_torch: per-pixel scale and shift of the features, each from the condition by two 1x1 convs."""

    def __init__(self, cond_ch, sft_feat, num_feat, version, *, rngs, dtype):
        self.SFT_scale_conv0 = conv(cond_ch, sft_feat, 1, rngs=rngs, dtype=dtype)
        self.SFT_scale_conv1 = conv(sft_feat, num_feat, 1, rngs=rngs, dtype=dtype)
        self.SFT_shift_conv0 = conv(cond_ch, sft_feat, 1, rngs=rngs, dtype=dtype)
        self.SFT_shift_conv1 = conv(sft_feat, num_feat, 1, rngs=rngs, dtype=dtype)
        self.torch_version = version == "torch"

    def __call__(self, fea, cond):
        slope = 0.01 if self.torch_version else 0.1
        scale = self.SFT_scale_conv1(lrelu(self.SFT_scale_conv0(cond), slope))
        shift = self.SFT_shift_conv1(lrelu(self.SFT_shift_conv0(cond), slope))
        return fea * (scale if self.torch_version else scale + 1) + shift


class ResBlock_SFT(nnx.Module):  # noqa: N801 (the reference's name)
    def __init__(self, cond_ch, sft_feat, num_feat, version, *, rngs, dtype):
        self.sft0 = SFTLayer(cond_ch, sft_feat, num_feat, version, rngs=rngs, dtype=dtype)
        self.conv0 = conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype)
        self.sft1 = SFTLayer(cond_ch, sft_feat, num_feat, version, rngs=rngs, dtype=dtype)
        self.conv1 = conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype)
        self.torch_version = version == "torch"

    def __call__(self, x, cond):
        if self.torch_version:
            fea = self.conv0(jax.nn.relu(self.sft0(x, cond)))
            fea = self.conv1(jax.nn.relu(self.sft1(fea, cond)))
        else:
            fea = jax.nn.relu(self.conv0(self.sft0(x, cond)))
            fea = self.conv1(self.sft1(fea, cond))
        return x + fea


class Nearest2x(nnx.Module):
    """nn.Upsample(scale_factor=2, mode='nearest'), parameter-free at its nn.Sequential index."""

    def __call__(self, x):
        return upsample_nearest2x(x)


class SFTNet(nnx.Module):
    """SFT_Net ('pytorch') or SFT_Net_torch ('torch'), x4: `model(x, seg)` -> the SR image (NHWC, unclipped)."""

    condition = "seg"  # what the forward takes besides the image (Arch.condition)

    def __init__(self, version="pytorch", in_ch=3, out_ch=3, num_feat=64, num_block=16, num_classes=8, cond_feat=128,
                 cond_convs=5, cond_ch=32, sft_feat=32, scale=SCALE, *, rngs=None, dtype=jnp.float32):
        if version not in VERSIONS:
            raise ValueError(f"SFT-Net version must be one of {', '.join(VERSIONS)}, got {version!r}")
        if scale != SCALE:
            raise ValueError(f"SFT-Net is a x{SCALE} network (two x2 stages, a stride-{SCALE} condition net), got "
                             f"scale {scale}")
        if num_block < 0 or cond_convs < 1:
            raise ValueError(f"SFT-Net needs num_block >= 0 and cond_convs >= 1, got {num_block} and {cond_convs}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.scale, self.in_ch, self.dtype, self.num_classes = scale, in_ch, dtype, num_classes
        self.cond_ch = num_classes  # the channels of the condition, at `scale` times the input's size (ONNX's second input)
        self.size_multiple = self.tile_multiple = 1
        self.conv0 = conv(in_ch, num_feat, 3, rngs=rngs, dtype=dtype)
        self.sft_branch = Sequential(
            [ResBlock_SFT(cond_ch, sft_feat, num_feat, version, rngs=rngs, dtype=dtype) for _ in range(num_block)]
            + [SFTLayer(cond_ch, sft_feat, num_feat, version, rngs=rngs, dtype=dtype),
               conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype)])
        tail = []
        for _ in range(2):
            if version == "torch":
                tail += [Nearest2x(), conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype), Act("relu")]
            else:
                tail += [conv(num_feat, 4 * num_feat, 3, rngs=rngs, dtype=dtype), PixelShuffle(2), Act("relu")]
        tail += [conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype), Act("relu"),
                 conv(num_feat, out_ch, 3, rngs=rngs, dtype=dtype)]
        self.HR_branch = Sequential(tail)
        chans = [num_classes] + [cond_feat] * (cond_convs - 1) + [cond_ch]
        cond = [conv(chans[0], chans[1], SCALE, stride=SCALE, padding=0, rngs=rngs, dtype=dtype)]
        for cin, cout in zip(chans[1:-1], chans[2:]):
            cond += [LeakyReLU(0.1), conv(cin, cout, 1, rngs=rngs, dtype=dtype)]
        self.CondNet = Sequential(cond)

    def __call__(self, x, seg):
        h, w = x.shape[1:3]
        if seg.shape[1] // SCALE != h or seg.shape[2] // SCALE != w or seg.shape[3] != self.num_classes:
            raise ValueError(f"SFT-Net takes the {self.num_classes}-class segmentation probabilities at the output size "
                             f"({SCALE * h}x{SCALE * w} for a {h}x{w} input), got a map of shape {tuple(seg.shape[1:])}")
        cond = self.CondNet(seg.astype(self.dtype))
        fea = self.conv0(x.astype(self.dtype))
        res, n = fea, len(self.sft_branch)
        for i in range(n - 2):  # the ResBlock_SFTs, then the closing SFTLayer and conv
            res = self.sft_branch[i](res, cond)
        res = self.sft_branch[n - 1](self.sft_branch[n - 2](res, cond))
        return self.HR_branch(fea + res).astype(jnp.float32)


def build(spec, *, rngs=None, dtype=jnp.float32):
    return SFTNet(**spec_kwargs(spec, DEFAULTS, "SFT-Net"), rngs=rngs, dtype=dtype)
