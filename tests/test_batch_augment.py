"""Batch augmentations (degrade.augment: mixup, cutmix, resizemix, cutblur) against their definitions, on real-photo
pairs, and paired/on-the-fly mixing (degrade.paired_prob) following its probability in one compiled program."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_data import block_mean, tiles
from test_data_sources import within
from test_train import TINY, logged, run

from jaxsr.degrade import augment, default_config, ops, training_pairs
from jaxsr.errors import ConfigError

S = 4


def pairs(b=8, size=32):
    gt = np.stack(tiles(b, size))
    return np.stack([block_mean(x, S) for x in gt]).astype(np.float32), gt


def aug_cfg(**probs):
    c = augment.default_config()
    c.update(probs)
    return c


def draws(name, key=0, b=8):
    cfg = aug_cfg(**{name: 1.0})
    return cfg, jax.tree.map(np.asarray, augment.draw(jax.random.key(key), cfg, b, (32 // S, 32 // S)))


def run_aug(name, params, lq, gt):
    return [np.asarray(x) for x in augment.operations(params, jnp.asarray(lq), jnp.asarray(gt), S)[name]()]


def changed_box(before, after):
    """(top, left, bottom, right) of the pixels that changed, or None."""
    ys, xs = np.nonzero(np.any(before != after, axis=-1))
    return None if ys.size == 0 else (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def test_mixup_is_the_convex_combination_with_beta_lambda():
    from scipy import stats

    lq, gt = pairs()
    cfg, p = draws("mixup")
    out_lq, out_gt = run_aug("mixup", p, lq, gt)
    for i, j in enumerate(p["perm"]):
        if i == j:
            np.testing.assert_allclose(out_gt[i], gt[i], atol=1e-6)
            continue
        # lam recovered from the GT alone (least squares), then the same lam and partner must explain the LQ
        d = (gt[i] - gt[j]).ravel()
        lam = float(np.dot(out_gt[i].ravel() - gt[j].ravel(), d) / np.dot(d, d))
        np.testing.assert_allclose(out_gt[i], lam * gt[i] + (1 - lam) * gt[j], atol=1e-6)
        np.testing.assert_allclose(out_lq[i], lam * lq[i] + (1 - lam) * lq[j], atol=1e-6)
        assert abs(lam - p["lam"][i]) < 1e-4
    # lam ~ Beta(1.2, 1.2): 4000 per-sample draws, Kolmogorov-Smirnov
    lam = np.asarray(augment.draw(jax.random.key(1), cfg, 4000, (8, 8))["lam"])
    assert stats.kstest(lam, stats.beta(cfg.mixup_alpha, cfg.mixup_alpha).cdf).pvalue > 1e-3
    assert len(np.unique(lam)) == 4000  # per sample, not per batch


def test_cutmix_pastes_the_partners_box_in_lq_and_gt_at_scaled_coordinates():
    lq, gt = pairs()
    _, p = draws("cutmix")
    out_lq, out_gt = run_aug("cutmix", p, lq, gt)
    box = p["cutmix"]
    pasted = 0
    for i, j in enumerate(p["perm"]):
        t, l, h, w = (int(box[k][i]) for k in ("top", "left", "bh", "bw"))
        if i == j or h == 0 or w == 0:
            np.testing.assert_array_equal(out_gt[i], gt[i])
            continue
        pasted += 1
        lr_box, hr_box = changed_box(lq[i], out_lq[i]), changed_box(gt[i], out_gt[i])
        assert lr_box == (t, l, t + h, l + w) and hr_box == tuple(S * v for v in lr_box)  # the same box, times s
        np.testing.assert_array_equal(out_lq[i][t:t + h, l:l + w], lq[j][t:t + h, l:l + w])
        np.testing.assert_array_equal(out_gt[i][S * t:S * (t + h), S * l:S * (l + w)], gt[j][S * t:S * (t + h), S * l:S * (l + w)])
    assert pasted >= 4
    # the box: sides sqrt(1 - lam) of the image around a uniform centre, clipped; lam ~ Beta(1, 1) so before
    # clipping the area fraction 1 - lam is uniform: the clipped boxes' mean area fraction is below 1/2
    big = jax.tree.map(np.asarray, augment.draw(jax.random.key(2), aug_cfg(cutmix=1.0), 4000, (64, 64))["cutmix"])
    frac = big["bh"] * big["bw"] / 64 ** 2
    assert 0.2 < frac.mean() < 0.5 and (big["top"] + big["bh"] <= 64).all() and (big["left"] + big["bw"] <= 64).all()


def test_resizemix_pastes_the_partner_resized_into_the_box():
    import torch.nn.functional as F

    lq, gt = pairs()
    cfg, p = draws("resizemix")
    out_lq, out_gt = run_aug("resizemix", p, lq, gt)
    box = p["resizemix"]
    for i, j in enumerate(p["perm"]):
        t, l, h, w = (int(box[k][i]) for k in ("top", "left", "bh", "bw"))
        assert h == max(1, int(box["tau"][i] * 8)) and cfg.resizemix_scope[0] <= box["tau"][i] <= cfg.resizemix_scope[1]
        for out, src, s in ((out_lq, lq, 1), (out_gt, gt, S)):
            ref = F.interpolate(torch.from_numpy(src[j].transpose(2, 0, 1)[None]), size=(h * s, w * s), mode="bicubic",
                                align_corners=False).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
            np.testing.assert_allclose(out[i][s * t:s * (t + h), s * l:s * (l + w)], ref, atol=2e-5)
            rest = np.ones(out.shape[1:3], bool)
            rest[s * t:s * (t + h), s * l:s * (l + w)] = False
            np.testing.assert_array_equal(out[i][rest], src[i][rest])


def test_cutblur_puts_the_gt_content_inside_or_outside_the_box():
    lq, gt = pairs()
    _, p = draws("cutblur", key=3)
    out_lq, out_gt = run_aug("cutblur", p, lq, gt)
    np.testing.assert_array_equal(out_gt, gt)  # the target never changes
    clean = ops.imresize(gt.astype(np.float64), 1 / S)  # MATLAB bicubic on the host, float64
    box = p["cutblur"]
    assert set(box["inside"].tolist()) == {True, False}
    for i in range(len(gt)):
        t, l, h, w = (int(box[k][i]) for k in ("top", "left", "bh", "bw"))
        m = np.zeros(out_lq.shape[1:3], bool)
        m[t:t + h, l:l + w] = True
        if not box["inside"][i]:
            m = ~m
        np.testing.assert_allclose(out_lq[i][m], clean[i][m], atol=2e-5)
        np.testing.assert_array_equal(out_lq[i][~m], lq[i][~m])
        assert abs(h / 8 - 0.7) < 0.13  # sides ~ N(0.7, 0.01) of the image, floored to pixels


def test_one_augmentation_per_batch_with_its_probability_in_one_program():
    cfg = aug_cfg(mixup=0.2, cutmix=0.2, resizemix=0.1, cutblur=0.1)
    which = jax.jit(jax.vmap(lambda k: augment.draw(k, cfg, 4, (8, 8))["which"]))(jax.random.split(jax.random.key(4), 4000))
    counts = np.bincount(np.asarray(which), minlength=5)
    assert within(counts, [0.4, 0.2, 0.2, 0.1, 0.1])
    # the trainer's make_pair: augment after the pair, gt_usm recomputed from the new GT, one compilation
    dcfg = default_config()
    dcfg.update(mode="bicubic", gt_size=32)
    dcfg.augment.update(mixup=0.5, cutblur=0.5)
    make_pair = jax.jit(lambda k, b: training_pairs(dcfg, S)(k, b, None)[1:])
    _, gt = pairs(4)
    seen = set()
    for k in range(6):
        lq, g, usm = make_pair(jax.random.key(k), dict(gt=gt))
        np.testing.assert_allclose(usm, ops.usm_sharp(g, dcfg.usm_weight, dcfg.usm_threshold, dcfg.usm_radius), atol=1e-6)
        seen.add("mixup" if not np.allclose(g, gt) else "cutblur or none")
    assert make_pair._cache_size() == 1 and seen == {"mixup", "cutblur or none"}


def test_paired_and_on_the_fly_pairs_mix_with_paired_prob_in_one_compiled_step():
    lq, gt = pairs(4)
    cfg = default_config()
    cfg.update(mode="bicubic", gt_size=32, paired_prob=0.3)
    make_pair = jax.jit(lambda k, b: training_pairs(cfg, S)(k, b, None)[1:])
    n, from_file = 300, 0
    for k in range(n):
        out_lq, out_gt, _ = make_pair(jax.random.key(k), dict(gt=gt, lq=lq))
        per_sample = [np.array_equal(np.asarray(a), b) for a, b in zip(out_lq, lq)]
        assert len(set(per_sample)) == 1  # chosen per batch
        from_file += per_sample[0]
        if not per_sample[0]:  # the on-device degradation of the same GT: MATLAB bicubic, 8-bit
            np.testing.assert_allclose(out_lq, np.clip(ops.imresize(gt, 1 / S), 0, 1), atol=0.5 / 255 + 1e-6)
        np.testing.assert_array_equal(out_gt, gt)
    assert make_pair._cache_size() == 1
    assert within([from_file, n - from_file], [0.3, 0.7])
    # a degradation crop smaller than the host crop: the file's pair is cut at one aligned position
    cfg.update(gt_size=16, paired_prob=0.5)
    make_pair = jax.jit(lambda k, b: training_pairs(cfg, S)(k, b, None)[1:])
    for k in range(8):
        out_lq, out_gt, _ = (np.asarray(x) for x in make_pair(jax.random.key(k), dict(gt=gt, lq=lq)))
        assert out_lq.shape == (4, 4, 4, 3) and out_gt.shape == (4, 16, 16, 3)
        file = np.allclose(out_lq, [block_mean(x, S) for x in out_gt], atol=1e-6)
        bicubic = np.allclose(out_lq, np.clip(ops.imresize(out_gt, 1 / S), 0, 1), atol=0.5 / 255 + 1e-6)
        assert file != bicubic
    assert make_pair._cache_size() == 1


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_config_checks_and_a_run(tmp_path):
    from jaxsr.train.config import base_config, resolve

    for field, value, msg in (("augment.mixup", 0.7, "must sum to at most 1"), ("augment.cutblur", -0.1, "probability"),
                              ("paired_prob", 1.5, "degrade.paired_prob must be a probability")):
        c = base_config()
        c.degrade.augment.cutmix = 0.5
        section, _, key = field.rpartition(".")
        (c.degrade[section] if section else c.degrade)[key] = value
        with pytest.raises(ConfigError, match=msg):
            resolve(c)
    c = base_config()
    c.train.batch_size, c.degrade.queue_size, c.degrade.augment.mixup = 1, 0, 0.5
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        resolve(c)
    # the trainer: paired LR mixed with the on-device degradation, every augmentation, a few steps
    from test_data import write_folder

    hrs = tiles(6, 48)
    hr = write_folder(str(tmp_path / "hr"), hrs)
    lr = write_folder(str(tmp_path / "lr"), [block_mean(x, S) for x in hrs])
    code, out, err = run([*TINY, f"--config.data.train_dir={hr}", f"--config.data.train_lr_dir={lr}", "--config.train.total_steps=4",
                          "--config.degrade.paired_prob=0.5", *(f"--config.degrade.augment.{n}=0.25" for n in augment.NAMES)],
                         tmp_path / "wd")
    assert code == 0, err[-3000:]
    assert all(math.isfinite(r["loss"]) for r in logged(tmp_path / "wd").values())
