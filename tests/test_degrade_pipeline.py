"""The degradation pipelines: one jit, determinism, torch parity of the chain, branch frequencies, queue."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import photo

from jaxsr.degrade import apply_params, default_config, degrade, draw_params, kernels, ops, queue_apply, queue_init
from jaxsr.degrade.jpeg import jpeg

SCALE = 4


@pytest.fixture(scope="module")
def gt():
    return np.stack([photo("astronaut", 64, 64, 40, 180), photo("coffee", 64, 64, 150, 250),
                     photo("chelsea", 64, 64, 60, 120)])


@pytest.fixture(scope="module")
def cfg():
    c = default_config()
    c.gt_size = 48
    return c


def test_realesrgan_is_one_jit_deterministic_and_key_dependent(gt, cfg):
    fn = jax.jit(functools.partial(degrade, cfg=cfg, scale=SCALE))
    a, b, c = fn(jax.random.key(0), gt), fn(jax.random.key(0), gt), fn(jax.random.key(1), gt)
    assert fn._cache_size() == 1  # every key runs the same compiled program: no shape depends on a draw
    assert a["lq"].shape == (3, 12, 12, 3) and a["gt"].shape == a["gt_usm"].shape == (3, 48, 48, 3)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    assert np.abs(np.asarray(a["lq"]) - np.asarray(c["lq"])).mean() > 0.01
    lq = np.asarray(a["lq"])
    assert lq.min() >= 0 and lq.max() <= 1 and np.allclose(lq * 255, np.round(lq * 255), atol=1e-4)
    # the GT crop is a crop of the input on the LQ grid, and gt_usm is its USM
    top, left = [(i, j) for i in range(0, 17, 4) for j in range(0, 17, 4)
                 if np.array_equal(gt[:, i:i + 48, j:j + 48], np.asarray(a["gt"]))][0]
    assert top % SCALE == 0 and left % SCALE == 0
    np.testing.assert_allclose(np.asarray(a["gt_usm"]), np.asarray(ops.usm_sharp(a["gt"])), atol=1e-6)


_blur_kernels = jax.jit(jax.vmap(kernels.blur_kernel))
_sinc_kernels = jax.jit(jax.vmap(kernels.final_sinc_kernel))
_jpeg = jax.jit(jpeg)


def torch_chain(x, p, cfg):
    """Real-ESRGAN's feed_data with torch ops (noise off), driven by our drawn parameters."""
    def filt(t, k):
        b, c, h, w = t.shape
        pad = k.shape[-1] // 2
        tp = F.pad(t, (pad,) * 4, mode="reflect").reshape(1, b * c, h + 2 * pad, w + 2 * pad)
        return F.conv2d(tp, torch.from_numpy(np.array(k))[:, None].repeat_interleave(c, 0), groups=b * c).reshape(b, c, h, w)

    def jpg(t, q):
        out = _jpeg(t.numpy().transpose(0, 2, 3, 1), q)
        return torch.from_numpy(np.array(out).transpose(0, 3, 1, 2))

    modes = list(cfg.resize_modes)
    h, w = x.shape[1:3]
    out = filt(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), _blur_kernels(p["kernel1"]))
    out = F.interpolate(out, scale_factor=float(p["resize1"]["scale"]), mode=modes[int(p["resize1"]["mode"])])
    out = jpg(torch.clamp(out, 0, 1), p["jpeg1"])
    if bool(p["second_blur"]):
        out = filt(out, _blur_kernels(p["kernel2"]))
    s2 = float(p["resize2"]["scale"])
    out = F.interpolate(out, size=(int(h / SCALE * s2), int(w / SCALE * s2)), mode=modes[int(p["resize2"]["mode"])])
    out = torch.clamp(out, 0, 1)
    sinc = _sinc_kernels(p["sinc"])
    final_mode = modes[int(p["final_mode"])]
    if bool(p["final_resize_first"]):
        out = filt(F.interpolate(out, size=(h // SCALE, w // SCALE), mode=final_mode), sinc)
        out = jpg(torch.clamp(out, 0, 1), p["jpeg2"])
    else:
        out = jpg(torch.clamp(out, 0, 1), p["jpeg2"])
        out = filt(F.interpolate(out, size=(h // SCALE, w // SCALE), mode=final_mode), sinc)
    return (torch.clamp(torch.round(out * 255), 0, 255) / 255).numpy().transpose(0, 2, 3, 1)


def test_chain_matches_torch_with_noise_off(gt, cfg):
    """Canvas mechanics against torch at the drawn (dynamic) sizes. Noise is switched off through the
    params; JPEG runs at q=95 so that float32 summation-order differences flip only small DCT steps."""
    apply = jax.jit(functools.partial(apply_params, cfg=cfg, scale=SCALE))
    draw = jax.jit(functools.partial(draw_params, cfg=cfg, batch=3))
    seen = set()
    for seed in (3, 6, 9, 12, 18):  # stage-1 up/down/keep, all modes, both final orders, no second blur
        p = draw(jax.random.key(seed))
        for n in ("noise1", "noise2"):
            p[n] = dict(p[n], sigma=jnp.zeros(3), poisson_scale=jnp.zeros(3))
        p["jpeg1"] = p["jpeg2"] = jnp.full((3,), 95.0)
        ours = np.asarray(apply(p, x=gt))
        ref = torch_chain(gt, p, cfg)
        psnr = 10 * np.log10(1 / np.mean((ours - ref) ** 2)) if np.any(ours != ref) else np.inf
        assert psnr > 45, (seed, psnr)
        seen.add((int(p["resize1"]["direction"]), int(p["resize2"]["direction"])))
    assert {d for d, _ in seen} == {0, 1, 2} and {d for _, d in seen} == {0, 1, 2}


def test_bicubic_mode_is_matlab_imresize(gt, cfg):
    c = cfg.copy_and_resolve_references()
    c.mode, c.gt_size = "bicubic", 0
    out = jax.jit(functools.partial(degrade, cfg=c, scale=SCALE))(jax.random.key(0), gt)
    ref = np.clip(np.round(ops.imresize(gt, 1 / SCALE) * 255), 0, 255) / 255
    assert np.abs(np.asarray(out["lq"]) - ref).max() <= 1 / 255 + 1e-6
    assert np.mean(np.abs(np.asarray(out["lq"]) - ref) > 1e-6) < 0.01
    np.testing.assert_array_equal(np.asarray(out["gt"]), gt)


def test_mono_mode_is_gray_with_few_levels(gt, cfg):
    c = cfg.copy_and_resolve_references()
    c.mode = "mono"
    out = jax.jit(functools.partial(degrade, cfg=c, scale=SCALE))(jax.random.key(0), gt)
    lq = np.asarray(out["lq"])
    assert lq.shape == (3, 12, 12, 3)
    assert np.all(lq == lq[..., :1]) and np.all(np.asarray(out["gt"]) == np.asarray(out["gt"])[..., :1])
    assert len(np.unique(np.round(lq * 15))) <= 16 and np.allclose(lq * 15, np.round(lq * 15), atol=1e-5)


def test_branch_frequencies_match_the_configured_probabilities(cfg):
    """20,000 draws; every observed frequency within 5 binomial standard errors of its probability
    (per-sample kernel types from 40,000 samples)."""
    n = 20000
    p = jax.jit(jax.vmap(lambda k: draw_params(k, cfg, 2)))(jax.random.split(jax.random.key(7), n))

    def check(values, probs):
        values = np.asarray(values).ravel()
        for i, pr in enumerate(probs):
            se = math.sqrt(pr * (1 - pr) / values.size)
            assert abs(np.mean(values == i) - pr) <= 5 * se + 1e-12, (i, np.mean(values == i), pr)

    k1_types = np.asarray(p["kernel1"]["type"])
    check(k1_types, [(1 - cfg.sinc_prob) * q for q in cfg.kernel_prob] + [cfg.sinc_prob])
    check(p["kernel2"]["type"], [(1 - cfg.sinc_prob2) * q for q in cfg.kernel_prob2] + [cfg.sinc_prob2])
    check(p["resize1"]["direction"], cfg.resize_prob)
    check(p["resize2"]["direction"], cfg.resize_prob2)
    check(p["resize1"]["mode"], [1 / 3] * 3)
    check(~np.asarray(p["noise1"]["gaussian"]), [cfg.gaussian_noise_prob])  # 0 = Gaussian
    check(~np.asarray(p["noise2"]["gaussian"]), [cfg.gaussian_noise_prob2])
    check(1 - np.asarray(p["noise1"]["gray"]), [cfg.gray_noise_prob])
    check(~np.asarray(p["second_blur"]), [cfg.second_blur_prob])
    check(~np.asarray(p["final_resize_first"]), [0.5])
    check(np.asarray(p["sinc"]["type"]) - 6, [cfg.final_sinc_prob])
    # ranges: per-direction scales, kernel sizes, noise and JPEG parameters
    s, d = np.asarray(p["resize1"]["scale"]), np.asarray(p["resize1"]["direction"])
    assert s[d == 0].min() >= 1 and s[d == 0].max() <= 1.5 and s[d == 1].min() >= 0.15 and s[d == 1].max() <= 1
    assert np.all(s[d == 2] == 1)
    assert set(np.unique(p["kernel1"]["ks"])) == set(range(7, 22, 2))
    sig = np.asarray(p["noise1"]["sigma"]) * 255
    assert sig.min() >= 1 and sig.max() <= 30 and abs(sig.mean() - 15.5) < 0.2
    q = np.asarray(p["jpeg1"])
    assert q.min() >= 30 and q.max() <= 95 and len(np.unique(q)) > 1000  # float quality, not rounded
    sinc_small = np.asarray(p["kernel1"]["omega_c"])[(k1_types == 6) & (np.asarray(p["kernel1"]["ks"]) < 13)]
    assert sinc_small.min() >= math.pi / 3


def test_training_pair_queue():
    cfg = default_config()
    cfg.queue_size = 4
    state = queue_init(cfg, 2, (8, 8, 3), SCALE)
    apply = jax.jit(queue_apply)
    batches = [(np.full((2, 2, 2, 3), i, np.float32), np.full((2, 8, 8, 3), 10 + i, np.float32)) for i in range(6)]
    for i in range(2):  # filling: batches pass through unchanged
        state, lq, g = apply(jax.random.key(i), state, *batches[i])
        np.testing.assert_array_equal(lq, batches[i][0])
    assert int(state["ptr"]) == 4
    held = [0.0, 0.0, 1.0, 1.0]
    for i in range(2, 6):  # full: each batch swaps with two queued pairs, lq and gt stay paired
        state, lq, g = apply(jax.random.key(i), state, *batches[i])
        out = sorted(np.asarray(lq)[:, 0, 0, 0])
        assert np.all(np.asarray(g)[:, 0, 0, 0] == np.asarray(lq)[:, 0, 0, 0] + 10)
        assert all(v < i for v in out)
        for v in out:
            held.remove(v)
        held += [float(i)] * 2
        assert sorted(np.asarray(state["lq"])[:, 0, 0, 0]) == sorted(held)
    with pytest.raises(ValueError):
        queue_init(cfg, 3, (8, 8, 3), SCALE)
