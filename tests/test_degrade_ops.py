"""filter2D, resize, imresize, USM and quantisation against torch, and imresize against golden values of BasicSR's MATLAB
clone (`basicsr/utils/matlab_functions.py::imresize`) on a ramp."""
import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import photo

from jaxsr.degrade import kernels, ops

TOL = 1e-5  # max abs difference against torch, float32 images in [0,1]


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1)


def torch_filter2d(x, k):
    """BasicSR filter2D semantics spelled with torch: reflect pad, grouped conv2d with one kernel per sample."""
    b, c, h, w = x.shape
    p = k.shape[-1] // 2
    xp = F.pad(x, (p, p, p, p), mode="reflect").reshape(1, b * c, h + 2 * p, w + 2 * p)
    weight = k[:, None].repeat_interleave(c, dim=0)
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)


@pytest.fixture(scope="module")
def batch():
    return np.stack([photo("astronaut", 72, 88, 40, 150), photo("coffee", 72, 88, 100, 200), photo("chelsea", 72, 88, 50, 100)])


@pytest.fixture(scope="module")
def blur_kernels():
    u = jax.random.uniform(jax.random.key(3), (3, kernels.N_BLUR_UNIFORMS))
    kinds = list(kernels.KERNEL_TYPES)
    p = jax.vmap(lambda v: kernels.draw_blur_params(v, kinds, [1] * 6, 0.3, (0.2, 3), (0.5, 4), (1, 2)))(u)
    return np.array(jax.vmap(kernels.blur_kernel)(p))


def test_filter2d_matches_torch_conv2d(batch, blur_kernels):
    ref = nhwc(torch_filter2d(nchw(batch), torch.from_numpy(blur_kernels)))
    assert np.abs(np.asarray(ops.filter2d(batch, blur_kernels)) - ref).max() <= TOL
    shared = blur_kernels[0]
    ref = nhwc(torch_filter2d(nchw(batch), torch.from_numpy(np.stack([shared] * 3))))
    assert np.abs(np.asarray(ops.filter2d(batch, shared)) - ref).max() <= TOL


def test_filter2d_on_canvas_equals_filter2d_of_the_image(batch, blur_kernels):
    h, w = 50, 61
    canvas = np.zeros((3, 80, 96, 3), np.float32)
    canvas[:, :h, :w] = batch[:, :h, :w]
    out = jax.jit(ops.filter2d)(canvas, blur_kernels, (jnp.int32(h), jnp.int32(w)))
    ref = ops.filter2d(batch[:, :h, :w], blur_kernels)
    assert np.abs(np.asarray(out[:, :h, :w]) - np.asarray(ref)).max() <= 1e-6
    assert np.all(np.asarray(out[:, h:]) == 0) and np.all(np.asarray(out[:, :, w:]) == 0)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic", "nearest"])
def test_resize_matches_torch_interpolate(batch, mode):
    for s in (0.15, 0.5, 0.73, 1.3, 2):
        ref = nhwc(F.interpolate(nchw(batch), scale_factor=s, mode=mode))
        out = np.asarray(ops.resize(batch, mode, scale_factor=s))
        assert out.shape == ref.shape == (3, math.floor(72 * s), math.floor(88 * s), 3)
        assert np.abs(out - ref).max() <= TOL, (mode, s)
    for size in ((17, 53), (101, 30)):  # the second stage of Real-ESRGAN passes a size
        ref = nhwc(F.interpolate(nchw(batch), size=size, mode=mode))
        assert np.abs(np.asarray(ops.resize(batch, mode, size=size)) - ref).max() <= TOL, (mode, size)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_resize_with_traced_sizes_on_a_canvas(batch, mode):
    """The pipeline's dynamic resize: valid sizes and scale are traced, output lands in a fixed canvas."""
    @jax.jit
    def canvas_resize(x, s, h_out, w_out):
        mh = ops.resize_matrix(mode, 72, h_out, 72, 128, 1.0 / s)
        mw = ops.resize_matrix(mode, 88, w_out, 88, 144, 1.0 / s)
        return ops.apply_separable(x, mh, mw)

    for s in (0.37, 1.42):
        ho, wo = math.floor(72 * np.float32(s)), math.floor(88 * np.float32(s))
        out = np.asarray(canvas_resize(batch, jnp.float32(s), ho, wo))
        ref = nhwc(F.interpolate(nchw(batch), scale_factor=float(np.float32(s)), mode=mode))
        assert np.abs(out[:, :ho, :wo] - ref).max() <= TOL
        assert not out[:, ho:].any() and not out[:, :, wo:].any()


def test_imresize_golden_values():
    ramp = (np.arange(64, dtype=np.float32) / 63).reshape(8, 8, 1)
    down = ops.imresize(ramp, 0.5)
    assert down.shape == (4, 4, 1)
    np.testing.assert_allclose(down[0, :, 0], [0.064174, 0.09654, 0.128658, 0.161024], atol=1e-6)
    up = ops.imresize(ramp[:4, :4], 2)
    np.testing.assert_allclose(up[0, :, 0], [-0.013393, -0.009053, -0.000372, 0.007937, 0.015873, 0.024182,
                                             0.032862, 0.037202], atol=1e-6)


def test_imresize_numpy_and_jax_agree_on_photos(batch):
    out_np = ops.imresize(batch, 1 / 4)
    out_jax = jax.jit(lambda x: ops.imresize(x, 1 / 4))(jnp.asarray(batch))
    assert isinstance(out_np, np.ndarray) and out_np.shape == (3, 18, 22, 3)
    assert np.abs(out_np - np.asarray(out_jax)).max() <= 1e-5
    assert ops.imresize(batch[0], 1 / 3).shape == (24, 30, 3)  # ceil(88/3) = 30, HWC in -> HWC out


def test_usm_matches_torch(batch):
    """USMSharp against a 51x51 torch conv2d (sigma 8). The hard mask |x-blur|*255 > 10 may flip only where
    a pixel sits on the threshold; given the same mask, the output must match."""
    g = cv2.getGaussianKernel(51, 8.0)[:, 0]  # USMSharp's window, as BasicSR builds it
    k2d = torch.from_numpy(np.outer(g, g).astype(np.float32))[None].repeat(3, 1, 1)
    x = nchw(batch)
    blur = torch_filter2d(x, k2d)
    ours_blur = np.asarray(ops.filter2d_separable(batch, g))
    assert np.abs(ours_blur - nhwc(blur)).max() <= TOL
    dist = np.abs(np.abs(batch - ours_blur) * 255 - 10)
    ours_mask = np.abs(batch - ours_blur) * 255 > 10
    torch_mask = nhwc((x - blur).abs() * 255 > 10)
    assert np.all((ours_mask == torch_mask) | (dist < 1e-3))
    soft = torch_filter2d(nchw(ours_mask.astype(np.float32)), k2d)
    ref = nhwc(soft * torch.clip(x + 0.5 * (x - blur), 0, 1) + (1 - soft) * x)
    assert np.abs(np.asarray(ops.usm_sharp(batch)) - ref).max() <= TOL


def test_quantize_rounds_half_to_even_like_torch():
    x = np.array([0.5, 1.5, 2.5, 254.5, 300.0, -3.0], np.float32) / 255
    np.testing.assert_allclose(np.asarray(ops.quantize(x)),
                                  torch.clamp(torch.round(torch.from_numpy(x) * 255), 0, 255).numpy() / 255, rtol=0, atol=1e-7)
