"""Upsamplers against their PyTorch counterparts (spandrel's modules) on identical weights."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import photo, torch_forward
from flax import nnx

from jaxsr.archs.bridge import load_state_dict, state_dict
from jaxsr.archs import upsample
from jaxsr.archs.common import pixel_shuffle, pixel_unshuffle

TOL = 1e-5


def features(c, h=12, w=10):
    """A feature map built from a real photograph (its channels and shifted copies), NHWC."""
    img = photo("astronaut", h + 4, w + 4, top=120, left=200)
    chans = [np.roll(img[..., i % 3], i // 3, axis=i % 2)[:h, :w] * (1 + 0.1 * i) - 0.3 for i in range(c)]
    return np.stack(chans, -1)[None].astype(np.float32)


def check(flax_module, torch_module, x):
    sd = {k: v.detach().numpy() for k, v in torch_module.state_dict().items()}
    load_state_dict(flax_module, sd)  # strict: the key trees must mirror each other
    ours = np.asarray(flax_module(jnp.asarray(x)))
    ref = torch_forward(torch_module, x)
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref).max()
    assert diff <= TOL, diff


def test_pixel_shuffle_and_unshuffle_match_torch():
    x = features(12)
    ref = torch.nn.functional.pixel_shuffle(torch.from_numpy(x.transpose(0, 3, 1, 2)), 2).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 2)), ref)
    back = torch.nn.functional.pixel_unshuffle(torch.from_numpy(ref.transpose(0, 3, 1, 2)), 2).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(pixel_unshuffle(jnp.asarray(ref), 2)), back)
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pixelshuffle_upsampler(scale):
    from spandrel.architectures.DAT.__arch.DAT import Upsample

    torch.manual_seed(scale)
    check(upsample.pixelshuffle(scale, 8, rngs=nnx.Rngs(0)), Upsample(scale, 8), features(8))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pixelshuffle_direct_upsampler(scale):
    from spandrel.architectures.DAT.__arch.DAT import UpsampleOneStep

    torch.manual_seed(scale)
    check(upsample.pixelshuffle_direct(scale, 8, 3, rngs=nnx.Rngs(0)), UpsampleOneStep(scale, 8, 3, None), features(8))


@pytest.mark.parametrize("scale,groups,end_conv", [(2, 4, True), (3, 4, True), (4, 2, False)])
def test_dysample(scale, groups, end_conv):
    from spandrel.architectures.__arch_helpers.dysample import DySample

    torch.manual_seed(scale)
    ref = DySample(8, 3, scale=scale, groups=groups, end_convolution=end_conv)
    with torch.no_grad():  # a non-zero scope, so that the offsets really move the sampling points (and hit the border)
        ref.scope.weight.normal_(0, 0.5)
        ref.offset.weight.normal_(0, 0.5)
    check(upsample.DySample(8, 3, scale, groups, end_conv, rngs=nnx.Rngs(0)), ref, features(8))


def test_dysample_starts_as_bilinear_and_exports_init_pos():
    """With zero offsets DySample is bilinear upsampling (init_pos alone); the buffer equals torch's."""
    from spandrel.architectures.__arch_helpers.dysample import DySample

    ours = upsample.DySample(4, 4, 2, 4, end_convolution=False, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(state_dict(ours)["init_pos"], DySample(4, 4, 2, 4, False).init_pos.numpy(), atol=0)
    ours.offset.kernel[...] = jnp.zeros_like(ours.offset.kernel[...])
    ours.offset.bias[...] = jnp.zeros_like(ours.offset.bias[...])
    x = features(4, 8, 8)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), scale_factor=2, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), ref.numpy().transpose(0, 2, 3, 1), atol=TOL)
