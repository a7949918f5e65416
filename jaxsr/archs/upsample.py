"""Upsamplers any architecture can reuse, each mirroring its PyTorch counterpart's state-dict keys.

- `nearest_conv`: RRDB's tail (nearest x2 + conv + LeakyReLU(0.2) per stage, then conv_hr, conv_last).
- `pixelshuffle`: SwinIR/DAT `Upsample`, an nn.Sequential of [conv(nf, 4nf), PixelShuffle(2)] per x2 (or one x3).
- `pixelshuffle_direct`: SwinIR/DAT `UpsampleOneStep`, [conv(nf, out*s^2), PixelShuffle(s)].
- `swinir_head` / `swinir_tail`: the reconstruction after the body of SwinIR and the models built on its skeleton
  (SRFormer, ATD, Swin2SR): pixelshuffle, pixelshuffledirect, nearest+conv, or none (x1 with a global residual).
- `DySample`: the SR variant (lp style, dynamic scope, end conv) of arXiv 2308.15085, as spandrel and traiNNer-redux build it.

And what the bridges read back from a state dict, as spandrel reads it: `pixelshuffle_scale` (the factor of a
`pixelshuffle` stack) and `scale_and_out_ch` (the factor and output channels of the conv before a PixelShuffle).
"""
import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsr.archs.common import Buffer, LeakyReLU, PixelShuffle, Sequential, conv, lrelu, upsample_nearest2x
from jaxsr.errors import WeightsError


def nearest_conv(x, up_convs, conv_hr, conv_last, slope=0.2):
    for c in up_convs:
        x = lrelu(c(upsample_nearest2x(x)), slope)
    return conv_last(lrelu(conv_hr(x), slope))


def pixelshuffle(scale, num_feat, *, rngs, dtype=jnp.float32):
    if scale & (scale - 1) == 0:
        layers = []
        for _ in range(int(math.log2(scale))):
            layers += [conv(num_feat, 4 * num_feat, 3, rngs=rngs, dtype=dtype), PixelShuffle(2)]
    elif scale == 3:
        layers = [conv(num_feat, 9 * num_feat, 3, rngs=rngs, dtype=dtype), PixelShuffle(3)]
    else:
        raise ValueError(f"pixelshuffle upsampler supports scale 2^n and 3, got {scale}")
    return Sequential(layers)


def pixelshuffle_direct(scale, num_feat, out_ch, *, rngs, dtype=jnp.float32):
    return Sequential([conv(num_feat, out_ch * scale * scale, 3, rngs=rngs, dtype=dtype), PixelShuffle(scale)])


def swinir_head(owner, upsampler, scale, dim, out_ch, *, rngs, dtype=jnp.float32, num_feat=64):
    """SwinIR's reconstruction, set on `owner` under the reference's attribute names (conv_before_upsample, upsample,
    conv_up1.., conv_hr, conv_last), so that the keys of every model built on SwinIR's skeleton map mechanically."""
    if upsampler in ("pixelshuffle", "nearest+conv"):
        owner.conv_before_upsample = Sequential([conv(dim, num_feat, 3, rngs=rngs, dtype=dtype), LeakyReLU(0.01)])
    if upsampler == "pixelshuffle":
        owner.upsample = pixelshuffle(scale, num_feat, rngs=rngs, dtype=dtype)
        owner.conv_last = conv(num_feat, out_ch, 3, rngs=rngs, dtype=dtype)
    elif upsampler == "pixelshuffledirect":
        owner.upsample = pixelshuffle_direct(scale, dim, out_ch, rngs=rngs, dtype=dtype)
    elif upsampler == "nearest+conv":
        for i in range(1, int(math.log2(scale)) + 1):
            setattr(owner, f"conv_up{i}", conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype))
        owner.conv_hr = conv(num_feat, num_feat, 3, rngs=rngs, dtype=dtype)
        owner.conv_last = conv(num_feat, out_ch, 3, rngs=rngs, dtype=dtype)
    else:  # restoration (denoising, JPEG): x1 with a global residual
        owner.conv_last = conv(dim, out_ch, 3, rngs=rngs, dtype=dtype)


def swinir_tail(owner, x, inp, scale):
    """The forward of `swinir_head` on the body's output `x`; `inp` is the normalised input of the x1 residual."""
    if owner.upsampler == "pixelshuffle":
        return owner.conv_last(owner.upsample(owner.conv_before_upsample(x)))
    if owner.upsampler == "pixelshuffledirect":
        return owner.upsample(x)
    if owner.upsampler == "nearest+conv":
        ups = [getattr(owner, f"conv_up{i}") for i in range(1, int(math.log2(scale)) + 1)]
        return nearest_conv(owner.conv_before_upsample(x), ups, owner.conv_hr, owner.conv_last, slope=0.2)
    return inp + owner.conv_last(x).astype(jnp.float32)


def pixelshuffle_scale(sd, prefix="upsample", num_feat=None):
    """(factor, num_feat) of a `pixelshuffle` stack stored under `prefix` (convs at indices 0, 2, 4, ...): each conv
    multiplies its input channels by the square of its stage's factor. num_feat is the last conv's input width
    (the given one where there is no stage)."""
    scale = 1
    for i in range(0, 10, 2):
        w = sd.get(f"{prefix}.{i}.weight")
        if w is None:
            break
        num_feat = int(w.shape[1])
        scale *= math.isqrt(int(w.shape[0]) // num_feat)
    return scale, num_feat


def scale_and_out_ch(channels, in_ch):
    """(scale, out_ch) with scale**2 * out_ch == channels, for the conv before a PixelShuffle, as spandrel guesses it
    (`spandrel.util.get_scale_and_output_channels`): out_ch is tried as in_ch, 3, 4 and 1, in that order."""
    for c in (in_ch, 3, 4, 1):
        if channels % c == 0 and math.isqrt(channels // c) ** 2 == channels // c:
            return math.isqrt(channels // c), c
    raise WeightsError(f"no (scale, output channels) pair gives the {channels} channels before the PixelShuffle "
                       "(output channels must be 1, 3, 4 or the input channels)")


def dysample_init_pos(scale, groups):
    """Offsets that make DySample bilinear upsampling when the learned part is zero; channel (xy*G + g)*s^2 + i*s + j."""
    h = (np.arange(scale) - (scale - 1) / 2) / scale
    x = np.broadcast_to(h[None, :], (scale, scale))  # x offset follows the sub-pixel column j
    y = np.broadcast_to(h[:, None], (scale, scale))  # y offset follows the sub-pixel row i
    pos = np.stack([np.tile(x.reshape(-1), groups), np.tile(y.reshape(-1), groups)])
    return pos.reshape(1, 1, 1, -1).astype(np.float32)


class DySample(nnx.Module):
    """Learned point sampling upsampler; with zero offsets it is bilinear upsampling with border clamp."""

    def __init__(self, in_ch, out_ch, scale=2, groups=4, end_convolution=True, *, rngs, dtype=jnp.float32):
        if in_ch < groups or in_ch % groups:
            raise ValueError(f"DySample: in_ch ({in_ch}) must be a multiple of groups ({groups})")
        self.scale, self.groups, self.end_convolution = scale, groups, end_convolution
        n = 2 * groups * scale * scale
        self.offset = conv(in_ch, n, 1, rngs=rngs, dtype=dtype, kernel_init=nnx.initializers.truncated_normal(0.02))
        self.scope = conv(in_ch, n, 1, rngs=rngs, dtype=dtype, bias=False, kernel_init=nnx.initializers.zeros_init())
        self.init_pos = Buffer(jnp.asarray(dysample_init_pos(scale, groups).transpose(0, 3, 1, 2)))  # torch (1, n, 1, 1)
        if end_convolution:
            self.end_conv = conv(in_ch, out_ch, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        b, h, w, c = x.shape
        s, g = self.scale, self.groups
        init_pos = self.init_pos[...].reshape(1, 1, 1, -1)
        off = self.offset(x) * nnx.sigmoid(self.scope(x)) * 0.5 + init_pos  # (b, h, w, 2*g*s*s)
        off = off.astype(jnp.float32).reshape(b, h, w, 2, g, s, s)
        # sample point of output pixel (h*s+i, w*s+j) in LR pixel-index coordinates, clamped (padding_mode='border')
        px = jnp.clip(jnp.arange(w, dtype=jnp.float32)[None, None, :, None, None, None] + off[:, :, :, 0], 0, w - 1)
        py = jnp.clip(jnp.arange(h, dtype=jnp.float32)[None, :, None, None, None, None] + off[:, :, :, 1], 0, h - 1)
        out = _bilinear(x.reshape(b, h, w, g, c // g), px, py)  # (b, h, w, g, s, s, c/g)
        out = out.transpose(0, 1, 4, 2, 5, 3, 6).reshape(b, h * s, w * s, c).astype(x.dtype)
        return self.end_conv(out) if self.end_convolution else out


def _bilinear(feat, px, py):
    """feat (b, h, w, g, cg); px, py (b, h, w, g, s, s) in-range coordinates -> (b, h, w, g, s, s, cg)."""
    b, h, w, g, cg = feat.shape
    x0, y0 = jnp.floor(px), jnp.floor(py)
    wx, wy = (px - x0)[..., None], (py - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    flat = feat.astype(jnp.float32).transpose(0, 3, 1, 2, 4).reshape(b, g, h * w, cg)

    def gather(yi, xi):
        idx = (yi * w + xi).transpose(0, 3, 1, 2, 4, 5).reshape(b, g, -1)  # (b, g, h*w*s*s)
        vals = jnp.take_along_axis(flat, idx[..., None], axis=2)
        return vals.reshape(b, g, *px.shape[1:3], *px.shape[4:], cg).transpose(0, 2, 3, 1, 4, 5, 6)

    top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
    return top * (1 - wy) + bottom * wy
