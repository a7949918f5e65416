"""Degradation pipelines as pure JAX functions: (key, clean HR batch) -> (LQ, GT, GT-USM).

Modes: 'realesrgan' (second-order blur/resize/noise/JPEG of Real-ESRGAN's
`realesrgan/models/realesrgan_model.py::feed_data`), 'bicubic' (MATLAB imresize,
fidelity pretrains) and 'mono' (gray, blurred, downscaled, noisy, few gray levels); `mono.enabled` adds the
monochrome step (gray, dither, few levels) to the other two.

Random choices follow Real-ESRGAN's split: the resize direction, scale and mode, the noise type
(Gaussian or Poisson), whether the second blur happens and the order of the final steps are drawn once
per batch; kernels, noise strengths, gray-noise flags and JPEG qualities per sample. `draw_params` makes
every draw, `apply_params` does the image work, `degrade` is both.

Static-shape strategy for the random resize scale
-------------------------------------------------
The intermediate images after the two random resizes have a size that depends on a random scale, so
they live in fixed-size canvases: the image is the top-left h x w block (h, w traced int32) of a canvas as
large as the largest possible size (rounded up to a multiple of 16), and zero elsewhere. Each resize is a
pair of dense interpolation matrices built on the device from the traced sizes and scale with torch's own
index arithmetic (source = (dst + 0.5)/s - 0.5 with the given s, clamped taps, A=-0.75 cubic; area =
adaptive average pooling), applied as two matmuls; rows beyond the output size are zero, so the canvas
stays zero outside the image. The blur pads by reflection about the traced edges (a gather), noise is
masked to the image, the Poisson level count only sees the image, and JPEG sees the zero padding that
DiffJPEG adds (edge replication for the 'libjpeg' style), so every step equals torch on the h x w image.
The only departure: the size floor(H*s) is computed in float32 where torch uses float64, which can
differ by one pixel when H*s lies within one float32 ulp of an integer (probability ~1e-5 per draw).
The cost is matmuls over the canvas, e.g. (384 x 256) for GT 256 with scale up to 1.5.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsr.errors import ConfigError

from . import augment, kernels, ops
from .jpeg import jpeg


MODES = ("realesrgan", "bicubic", "mono")


def default_config():
    """Every knob of the degradations; defaults are Real-ESRGAN's train_realesrgan_x4plus.yml."""
    c = ml_collections.ConfigDict()
    c.mode = "realesrgan"  # one of MODES
    c.gt_size = 256  # GT crop taken after degrading (0: no crop); LQ crop is gt_size // scale
    c.gt_usm = True  # degrade the USM-sharpened GT, as Real-ESRGAN (and RealESRNet with gt_usm) do
    c.usm_weight = 0.5
    c.usm_threshold = 10
    c.usm_radius = 50
    c.queue_size = 192  # training-pair queue (queue_init/queue_apply), a multiple of the batch; Real-ESRGAN's 180 suits batch 12; 0 = no queue
    c.jpeg_style = "diffjpeg"  # 'diffjpeg' (Real-ESRGAN parity) | 'libjpeg' (closer to real JPEG files)
    c.paired_prob = 1.0  # paired data: per batch, the file's LR with this probability, else this degradation of its GT
    c.augment = augment.default_config()  # batch augmentations of the final pairs (mixup, cutmix, resizemix, cutblur)
    c.resize_modes = ["area", "bilinear", "bicubic"]
    c.kernel_range = [7, 21]  # odd kernel sizes, all zero-padded to 21

    kinds = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
    probs = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
    # first degradation
    c.kernel_list, c.kernel_prob, c.sinc_prob = list(kinds), list(probs), 0.1
    c.blur_sigma, c.betag_range, c.betap_range = [0.2, 3.0], [0.5, 4.0], [1.0, 2.0]
    c.resize_prob, c.resize_range = [0.2, 0.7, 0.1], [0.15, 1.5]  # up, down, keep
    c.gaussian_noise_prob, c.noise_range, c.poisson_scale_range = 0.5, [1.0, 30.0], [0.05, 3.0]
    c.gray_noise_prob, c.jpeg_range = 0.4, [30.0, 95.0]
    # second degradation
    c.second_blur_prob = 0.8
    c.kernel_list2, c.kernel_prob2, c.sinc_prob2 = list(kinds), list(probs), 0.1
    c.blur_sigma2, c.betag_range2, c.betap_range2 = [0.2, 1.5], [0.5, 4.0], [1.0, 2.0]
    c.resize_prob2, c.resize_range2 = [0.3, 0.4, 0.3], [0.3, 1.2]
    c.gaussian_noise_prob2, c.noise_range2, c.poisson_scale_range2 = 0.5, [1.0, 25.0], [0.05, 2.5]
    c.gray_noise_prob2, c.jpeg_range2 = 0.4, [30.0, 95.0]
    c.final_sinc_prob = 0.8

    c.mono = ml_collections.ConfigDict()
    c.mono.levels = 16  # gray levels of the LQ
    c.mono.blur_sigma = [0.2, 1.5]  # isotropic Gaussian blur before downscaling
    c.mono.noise_range = [0.0, 8.0]  # Gaussian noise sigma (in 1/255) before quantising, acts as dither
    c.mono.gray_gt = True  # make the GT gray too
    # also on the 'realesrgan' and 'bicubic' modes' LQ: gray, noise_range dither, quantised to `levels` (mode 'mono' always
    # is, after its own blur and downscale); validation then makes its LR the same way (`mono_validation`)
    c.mono.enabled = False
    return c


# ----------------------------------------------------------------------------------------------- draws


class _Uniforms:
    """Hands out consecutive columns of one array of U[0,1) draws: one generator call for many draws."""

    def __init__(self, key, shape):
        self.u, self.i = jax.random.uniform(key, shape), 0

    def take(self, n=None):
        cols = self.u[..., self.i:self.i + (n or 1)]
        self.i += n or 1
        return cols if n else cols[..., 0]


N_BATCH_UNIFORMS = 13
N_SAMPLE_UNIFORMS = 2 * kernels.N_BLUR_UNIFORMS + kernels.N_SINC_UNIFORMS + 8


def _uniform(u, rng):
    return rng[0] + u * (rng[1] - rng[0])


def _draw_resize(ub, prob, rng, n_modes):
    direction = kernels.pick(ub.take(), prob)  # 0 up, 1 down, 2 keep
    u = ub.take()
    scale = jnp.where(direction == 0, _uniform(u, (1.0, rng[1])), jnp.where(direction == 1, _uniform(u, (rng[0], 1.0)), 1.0))
    return dict(direction=direction, scale=scale, mode=kernels.pick(ub.take(), [1] * n_modes))


def _draw_noise(ub, us, key, gaussian_prob, sigma, poisson_scale, gray_prob):
    return dict(gaussian=ub.take() < gaussian_prob, sigma=_uniform(us.take(), sigma) / 255.0,
                poisson_scale=_uniform(us.take(), poisson_scale),
                gray=(us.take() < gray_prob).astype(jnp.float32), key=key)


def _draw_kernels(u, cfg, suffix):
    def one(v):
        return kernels.draw_blur_params(v, cfg["kernel_list" + suffix], cfg["kernel_prob" + suffix],
                                        cfg["sinc_prob" + suffix], cfg["blur_sigma" + suffix],
                                        cfg["betag_range" + suffix], cfg["betap_range" + suffix], cfg.kernel_range)
    return jax.vmap(one)(u)


def draw_params(key, cfg, batch):
    """Every random draw of the Real-ESRGAN pipeline for one batch (per-batch scalars, per-sample (B,) arrays)."""
    kb, ks, kn1, kn2 = jax.random.split(key, 4)
    ub, us = _Uniforms(kb, (N_BATCH_UNIFORMS,)), _Uniforms(ks, (batch, N_SAMPLE_UNIFORMS))
    n_modes = len(cfg.resize_modes)
    return dict(
        kernel1=_draw_kernels(us.take(kernels.N_BLUR_UNIFORMS), cfg, ""),
        kernel2=_draw_kernels(us.take(kernels.N_BLUR_UNIFORMS), cfg, "2"),
        sinc=jax.vmap(lambda v: kernels.draw_final_sinc_params(v, cfg.final_sinc_prob, cfg.kernel_range))(
            us.take(kernels.N_SINC_UNIFORMS)),
        resize1=_draw_resize(ub, cfg.resize_prob, cfg.resize_range, n_modes),
        noise1=_draw_noise(ub, us, kn1, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range,
                           cfg.gray_noise_prob),
        jpeg1=_uniform(us.take(), cfg.jpeg_range),
        second_blur=ub.take() < cfg.second_blur_prob,
        resize2=_draw_resize(ub, cfg.resize_prob2, cfg.resize_range2, n_modes),
        noise2=_draw_noise(ub, us, kn2, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2,
                           cfg.gray_noise_prob2),
        jpeg2=_uniform(us.take(), cfg.jpeg_range2),
        final_resize_first=ub.take() < 0.5,
        final_mode=kernels.pick(ub.take(), [1] * n_modes),
        crop=ub.take(2),
    )


# ----------------------------------------------------------------------------------------------- apply


def _canvas_len(n, max_scale):
    return 16 * math.ceil((math.floor(n * max(max_scale, 1.0)) + 1) / 16)


def _resize(x, modes, mode, valid_in, valid_out, out_hw, inv_scale=None):
    """Resize the valid_in block of canvas x to a valid_out block of an out_hw canvas, mode chosen by index."""
    def build(name):
        return lambda: (ops.resize_matrix(name, valid_in[0], valid_out[0], x.shape[1], out_hw[0], inv_scale),
                        ops.resize_matrix(name, valid_in[1], valid_out[1], x.shape[2], out_hw[1], inv_scale))
    mh, mw = jax.lax.switch(mode, [build(m) for m in modes])
    return ops.apply_separable(x, mh, mw)


def _noise(p, x, valid):
    return jax.lax.cond(p["gaussian"],
                        lambda v: ops.gaussian_noise(p["key"], v, p["sigma"], p["gray"], valid),
                        lambda v: ops.poisson_noise(p["key"], v, p["poisson_scale"], p["gray"], valid), x)


def _jpeg(x, quality, style, valid=None):
    x = jnp.clip(x, 0.0, 1.0)
    if valid is None:
        return jpeg(x, quality, style)
    if style == "libjpeg":  # libjpeg pads by edge replication: fill the canvas that way
        x = jnp.take(x, jnp.minimum(jnp.arange(x.shape[1]), valid[0] - 1), axis=1)
        x = jnp.take(x, jnp.minimum(jnp.arange(x.shape[2]), valid[1] - 1), axis=2)
    return jpeg(x, quality, style) * ops.canvas_mask(x.shape[1:3], valid)


def _scaled_size(n, s, n_max):
    return jnp.clip(jnp.floor(jnp.float32(n) * s).astype(jnp.int32), 1, n_max)


def apply_params(params, x, cfg, scale):
    """The Real-ESRGAN second-order degradation of x (B,H,W,3) with drawn params; returns LQ (B,H//s,W//s,3)."""
    h, w = x.shape[1:3]
    modes, style = list(cfg.resize_modes), cfg.jpeg_style
    out = ops.filter2d(x, jax.vmap(kernels.blur_kernel)(params["kernel1"]))

    # first degradation: resize into canvas 1
    r = params["resize1"]
    c1 = (_canvas_len(h, cfg.resize_range[1]), _canvas_len(w, cfg.resize_range[1]))
    v1 = (_scaled_size(h, r["scale"], c1[0]), _scaled_size(w, r["scale"], c1[1]))
    out = _resize(out, modes, r["mode"], (h, w), v1, c1, 1.0 / r["scale"])
    out = _noise(params["noise1"], out, v1)
    out = _jpeg(out, params["jpeg1"], style, v1)

    # second degradation: sizes relative to the final LQ size
    k2 = jax.vmap(kernels.blur_kernel)(params["kernel2"])
    out = jax.lax.cond(params["second_blur"], lambda v: ops.filter2d(v, k2, v1), lambda v: v, out)
    r = params["resize2"]
    lh, lw = h // scale, w // scale
    c2 = (_canvas_len(h / scale, cfg.resize_range2[1]), _canvas_len(w / scale, cfg.resize_range2[1]))
    v2 = (_scaled_size(h / scale, r["scale"], c2[0]), _scaled_size(w / scale, r["scale"], c2[1]))
    out = _resize(out, modes, r["mode"], v1, v2, c2)
    out = _noise(params["noise2"], out, v2)

    sinc = jax.vmap(kernels.final_sinc_kernel)(params["sinc"])

    def resize_back(v, valid):
        return ops.filter2d(_resize(v, modes, params["final_mode"], valid, (lh, lw), (lh, lw)), sinc)

    def resize_then_jpeg(v):
        return _jpeg(resize_back(v, v2), params["jpeg2"], style)

    def jpeg_then_resize(v):
        return resize_back(_jpeg(v, params["jpeg2"], style, v2), v2)

    out = jax.lax.cond(params["final_resize_first"], resize_then_jpeg, jpeg_then_resize, out)
    return ops.quantize(out)


def _usm(x, cfg):
    return ops.usm_sharp(x, cfg.usm_weight, cfg.usm_threshold, cfg.usm_radius)


def _crop(u, gt, gt_size, scale, lq=None):
    """Random gt_size GT crop on the LQ grid (position from two uniforms u), one position for the whole
    batch as BasicSR's paired_random_crop does on batched tensors, and the matching LQ crop when given."""
    b, h, w, c = gt.shape
    if not gt_size or (h, w) == (gt_size, gt_size):
        return gt, lq
    if h < gt_size or w < gt_size:
        raise ValueError(f"GT {h}x{w} is smaller than gt_size {gt_size}")
    ls = gt_size // scale
    top = kernels.pick(u[0], [1] * (h // scale - ls + 1))
    left = kernels.pick(u[1], [1] * (w // scale - ls + 1))
    gt = jax.lax.dynamic_slice(gt, (0, top * scale, left * scale, 0), (b, gt_size, gt_size, c))
    if lq is not None:
        lq = jax.lax.dynamic_slice(lq, (0, top, left, 0), (b, ls, ls, c))
    return gt, lq


def is_mono(cfg):
    """Whether `degrade` makes gray, quantised pairs: mode 'mono', or another mode with mono.enabled."""
    return cfg.mode == "mono" or bool(cfg.mono.get("enabled", False))


def _gray_quantised(key, u, lq, gt, m):
    """The monochrome step: LQ to gray, dithered by Gaussian noise (sigma from the uniforms u, (B,), over
    m.noise_range), quantised to m.levels; GT gray where m.gray_gt. Both come back with 3 channels."""
    out = ops.gaussian_noise(key, ops.rgb_to_gray(lq), _uniform(u, m.noise_range) / 255.0, jnp.zeros((lq.shape[0],)))
    gt = jnp.repeat(ops.rgb_to_gray(gt), 3, axis=-1) if m.gray_gt else gt
    return jnp.repeat(ops.quantize(out, m.levels), 3, axis=-1), gt


def _mono(key, gt, cfg, scale):
    m = cfg.mono
    b, h, w, _ = gt.shape
    ku, kn = jax.random.split(key)
    us = _Uniforms(ku, (b, 3))
    gray = ops.rgb_to_gray(gt)
    sigma = _uniform(us.take(), m.blur_sigma)
    k = jax.vmap(lambda s: kernels.bivariate_kernel(0, kernels.PAD, s, s, 0.0, 1.0))(sigma)
    out = ops.filter2d(gray, k)
    mode = kernels.pick(us.take()[0], [1] * len(cfg.resize_modes))
    out = _resize(out, list(cfg.resize_modes), mode, (h, w), (h // scale, w // scale), (h // scale, w // scale))
    out = ops.gaussian_noise(kn, out, _uniform(us.take(), m.noise_range) / 255.0, jnp.zeros((b,)))
    lq = jnp.repeat(ops.quantize(out, m.levels), 3, axis=-1)
    return lq, (jnp.repeat(gray, 3, axis=-1) if m.gray_gt else gt)


def mono_validation(hr, lr, cfg, scale, seed, index):
    """(lr, hr) of one validation image of a monochrome run (`is_mono`), made as training makes its pairs and
    deterministically (the key is the run's seed and the image's index): mode 'mono' degrades the HR with its whole
    pipeline; another mode takes the image's usual LR (MATLAB-bicubic, or the paired file) through the monochrome step.
    The HR comes back gray where mono.gray_gt."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    if cfg.mode == "mono":
        lq, gt = _mono(key, jnp.asarray(hr)[None], cfg, scale)
    else:
        ku, kn = jax.random.split(key)
        lq, gt = _gray_quantised(kn, jax.random.uniform(ku, (1,)), jnp.asarray(lr)[None], jnp.asarray(hr)[None], cfg.mono)
    return np.asarray(lq[0]), np.asarray(gt[0])


def degrade(key, gt, cfg, scale):
    """Degrade clean HR crops gt (B,H,W,3) in [0,1]: dict(lq, gt, gt_usm), lq of size (gt size)/scale.

    cfg (a ConfigDict such as default_config()) and scale are static: close over them before jit, e.g.
    jax.jit(functools.partial(degrade, cfg=cfg, scale=4)). H and W must be multiples of scale. In
    'realesrgan' mode the GT crop (cfg.gt_size) is taken after degrading, as Real-ESRGAN does; the other
    modes crop first. gt_usm is always the USM of the returned gt.
    """
    if cfg.mode == "realesrgan":
        params = draw_params(key, cfg, gt.shape[0])
        lq = apply_params(params, _usm(gt, cfg) if cfg.gt_usm else gt, cfg, scale)
        gt, lq = _crop(params["crop"], gt, cfg.gt_size, scale, lq)
    else:
        kc, key = jax.random.split(key)
        gt, _ = _crop(jax.random.uniform(kc, (2,)), gt, cfg.gt_size, scale)
        if cfg.mode == "bicubic":
            lq = ops.quantize(ops.imresize(gt, 1.0 / scale))
        elif cfg.mode == "mono":
            lq, gt = _mono(key, gt, cfg, scale)
        else:
            raise ValueError(f"unknown degradation mode {cfg.mode!r}")
    if cfg.mode != "mono" and is_mono(cfg):  # its own key: the mode's draws stay what they were
        ku, kn = jax.random.split(jax.random.fold_in(key, 7))
        lq, gt = _gray_quantised(kn, jax.random.uniform(ku, (gt.shape[0],)), lq, gt, cfg.mono)
    return dict(lq=lq, gt=gt, gt_usm=_usm(gt, cfg))


# ----------------------------------------------------------------------------------------------- queue


def check_queue(cfg, batch):
    """Refuse a queue that the batches do not fill evenly (Real-ESRGAN asserts the same)."""
    size = cfg.queue_size
    if size % batch:
        raise ConfigError(f"degrade.queue_size ({size}) must be a multiple of train.batch_size ({batch}); "
                          f"set it to {max(batch, size // batch * batch)}, or 0 for no queue")


def queue_init(cfg, batch, gt_shape, scale):
    """Empty training-pair queue for batches of `batch` GT crops of shape gt_shape (H, W, C)."""
    check_queue(cfg, batch)
    size = cfg.queue_size
    h, w, c = gt_shape
    return dict(lq=jnp.zeros((size, h // scale, w // scale, c), jnp.float32),
                gt=jnp.zeros((size, h, w, c), jnp.float32), ptr=jnp.zeros((), jnp.int32))


def queue_apply(key, state, lq, gt):
    """Real-ESRGAN's training-pair pool: fill it first (batches pass through), then swap each batch with
    b random queued pairs. Returns (state, lq, gt); recompute gt_usm from the returned gt, as Real-ESRGAN does.

    Real-ESRGAN shuffles the whole queue and swaps its first b entries; taking the first b of a random
    permutation is the same as swapping b uniformly drawn distinct slots, which is what we do.
    """
    b, size = lq.shape[0], state["lq"].shape[0]

    def fill(_):
        ptr = state["ptr"]
        new = dict(lq=jax.lax.dynamic_update_slice_in_dim(state["lq"], lq, ptr, 0),
                   gt=jax.lax.dynamic_update_slice_in_dim(state["gt"], gt, ptr, 0), ptr=ptr + b)
        return new, lq, gt

    def swap(_):
        idx = jax.random.permutation(key, size)[:b]
        new = dict(lq=state["lq"].at[idx].set(lq), gt=state["gt"].at[idx].set(gt), ptr=state["ptr"])
        return new, state["lq"][idx], state["gt"][idx]

    return jax.lax.cond(state["ptr"] >= size, swap, fill, None)


def training_pairs(cfg, scale):
    """make_pair(key, batch, queue) -> (queue, lq, gt, gt_usm): the train step's training pair, on the device.

    A batch with an `lq` (paired data) is used as is; otherwise `degrade` makes the LQ from the clean GT and,
    with a queue (queue_init), Real-ESRGAN's training-pair pool mixes the pairs. cfg and scale are static.
    With paired data and cfg.paired_prob < 1, each batch uses the file's LQ with probability paired_prob and
    `degrade` of its GT otherwise (traiNNer-redux's dataroot_lq_prob), one lax.cond in the one compiled step; the
    file's pair is then cropped to cfg.gt_size as `degrade` crops, so both branches have one shape. Then the batch
    augmentations of cfg.augment (augment.py), if any. Their keys are folded from `key` (1: the paired/degraded
    choice, 2: the augmentations, 3: the paired crop), so the default path draws exactly what it always did.
    """
    paired_prob = float(cfg.get("paired_prob", 1.0))
    aug = cfg.get("augment")
    usm = lambda g: _usm(g, cfg)  # noqa: E731

    def mixed(key, k_deg, batch):
        def from_file(_):
            gt, lq = _crop(jax.random.uniform(jax.random.fold_in(key, 3), (2,)), batch["gt"], cfg.gt_size, scale, batch["lq"])
            return lq, gt, usm(gt)

        def synthetic(_):
            out = degrade(k_deg, batch["gt"], cfg, scale)
            return out["lq"], out["gt"], out["gt_usm"]

        return jax.lax.cond(jax.random.uniform(jax.random.fold_in(key, 1)) < paired_prob, from_file, synthetic, None)

    def make_pair(key, batch, queue):
        k_deg, k_queue = jax.random.split(key)
        if "lq" in batch and paired_prob >= 1:  # paired data: the LQ comes from disk
            lq, gt, gt_usm = batch["lq"], batch["gt"], usm(batch["gt"])
        elif "lq" in batch:
            lq, gt, gt_usm = mixed(key, k_deg, batch)
        else:
            out = degrade(k_deg, batch["gt"], cfg, scale)
            lq, gt, gt_usm = out["lq"], out["gt"], out["gt_usm"]
            if queue is not None:
                queue, lq, gt = queue_apply(k_queue, queue, lq, gt)
                gt_usm = usm(gt)
        if aug is not None and augment.enabled(aug):
            lq, gt, gt_usm = augment.augment(jax.random.fold_in(key, 2), lq, gt, gt_usm, aug, scale, usm)
        return queue, lq, gt, gt_usm

    return make_pair
