"""The loss registry: every loss is 0 on identical images with finite gradients (also for bf16 outputs),
step ranges gate terms, GAN objectives equal BasicSR's GANLoss, and the VGG19 perceptual loss equals a
torch VGG19 (torchvision's layout) on the same weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from conftest import photo
from jaxsr.errors import WeightsError
from jaxsr.losses import LOSSES, GANObjective, build_losses

VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def torch_vgg19_features():
    """torchvision's vgg19().features, built from its published config (no torchvision here)."""
    layers, c = [], 3
    for v in VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(0)
    feats = torch_vgg19_features()
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision files carry the classifier too
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(sd, path)
    return str(path), feats


def _images():
    gt = np.stack([photo("astronaut", 32, 32, 100, 150), photo("coffee", 32, 32, 100, 150)])
    rng = np.random.default_rng(0)
    sr = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1).astype(np.float32)
    return jnp.asarray(sr), jnp.asarray(gt)


def _all_losses_cfg(vgg_path):
    cfg = [{"name": n} for n in LOSSES if n not in ("perceptual", "contextual")]
    cfg.append({"name": "perceptual", "vgg_weights": vgg_path, "layer_weights": {"conv1_2": 0.1, "relu2_2": 1.0}})
    cfg.append({"name": "contextual", "vgg_weights": vgg_path, "layer_weights": {"conv2_1": 1.0}})
    cfg.append({"name": "gan", "weight": "0.1", "gan_type": "lsgan"})
    cfg.append({"name": "feature_matching", "weight": "0.01"})
    return cfg


def test_every_loss_is_zero_on_identical_images_with_finite_gradients(vgg_file):
    ls = build_losses(_all_losses_cfg(vgg_file[0]))
    sr, gt = _images()
    logits = jnp.ones((2, 32, 32, 1))  # lsgan: D says "real" -> generator loss 0
    feats = lambda x: [x, x[:, ::2, ::2] * 2.0]  # noqa: E731  stands for D's features

    @jax.jit
    def value_and_grad(x):
        loss = lambda s: ls(s, gt, fake_logits=logits, sr_ema=gt, fake_features=feats(s), real_features=feats(gt))  # noqa: E731
        return jax.value_and_grad(loss, has_aux=True)(x)

    (total, logs), _ = value_and_grad(gt)
    names = [e["name"] for e in _all_losses_cfg("")]
    assert set(names) <= set(logs)
    for k, v in logs.items():
        if k != "contextual":  # CX of a feature set with itself is below 1: its minimum is not 0
            assert abs(float(v)) <= 1e-6, (k, float(v))  # float32 rounding: XLA may fuse the two paths differently
    for x in (gt, sr, sr.astype(jnp.bfloat16), gt.astype(jnp.bfloat16)):
        (total, logs), g = value_and_grad(x)
        assert total.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in logs.values())
        assert bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))), x.dtype
        assert bool(jnp.isfinite(total))
    (total, logs), g = value_and_grad(sr)
    assert all(float(logs[n]) > 0 for n in names if n != "gan")  # each loss sees the difference
    assert float(jnp.abs(g).max()) > 0


def test_step_ranges_gate_terms_under_jit():
    ls = build_losses([{"name": "l1", "weight": "2", "end": 10}, {"name": "mse", "start": "10", "end": 20}, {"name": "ms_ssim", "weight": 0}])
    sr, gt = _images()
    f = jax.jit(lambda step: ls(sr, gt, step=step))
    l1, l2 = float(jnp.mean(jnp.abs(sr - gt))), float(jnp.mean((sr - gt) ** 2))
    for step, want in ((0, (2 * l1, 0.0)), (9, (2 * l1, 0.0)), (10, (0.0, l2)), (19, (0.0, l2)), (20, (0.0, 0.0))):
        total, logs = f(step)
        assert float(logs["l1"]) == pytest.approx(want[0], rel=1e-6) and float(logs["mse"]) == pytest.approx(want[1], rel=1e-6)
        assert float(total) == pytest.approx(sum(want), rel=1e-6)


def test_targets_keys_and_config_errors():
    sr, gt = _images()
    ls = build_losses({"pix": {"name": "l1", "target": "gt_usm"}, "pix_plain": {"name": "l1"}})
    _, logs = ls(sr, gt, gt_usm=gt * 0.5)
    assert float(logs["pix"]) == pytest.approx(float(jnp.mean(jnp.abs(sr - gt * 0.5))), rel=1e-6)
    with pytest.raises(ValueError, match="gt_usm"):
        ls(sr, gt)
    with pytest.raises(ValueError, match="unknown loss"):
        build_losses([{"name": "nope"}])
    with pytest.raises(ValueError, match="twice"):
        build_losses([{"name": "l1"}, {"name": "l1"}])
    with pytest.raises(ValueError, match="fake_logits"):
        build_losses([{"name": "gan"}])(sr, gt)
    with pytest.raises(ValueError, match="fake_features"):
        build_losses([{"name": "feature_matching"}])(sr, gt)
    with pytest.raises(ValueError, match="only one 'feature_matching'"):
        build_losses([{"name": "feature_matching"}, {"name": "feature_matching", "key": "fm2"}])
    fm = build_losses([{"name": "l1"}, {"name": "feature_matching", "weight": 0.5, "start": 10}])
    assert "fake_features" in fm.inputs and "fake_features" not in fm.without_gan().inputs
    fake, real = [sr, sr[:, ::2]], [gt, gt[:, ::2]]
    want = 0.5 * (float(jnp.mean(jnp.abs(sr - gt))) + float(jnp.mean(jnp.abs(sr[:, ::2] - gt[:, ::2])))) / 2
    for step, fm_value in ((9, 0.0), (10, want)):
        _, logs = fm(sr, gt, step=step, fake_features=fake, real_features=real)
        assert float(logs["feature_matching"]) == pytest.approx(fm_value, rel=1e-6)


def test_perceptual_loss_refuses_without_weights(tmp_path):
    with pytest.raises(WeightsError, match=r"losses\[percep\]\.vgg_weights.*vgg19"):
        build_losses([{"name": "perceptual", "key": "percep"}])
    with pytest.raises(WeightsError, match="no such file"):
        build_losses([{"name": "perceptual", "vgg_weights": str(tmp_path / "missing.pth")}])
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, bad)
    with pytest.raises(WeightsError, match="not torchvision's VGG19"):
        build_losses([{"name": "perceptual", "vgg_weights": str(bad)}])


def _basicsr_perceptual(feats, x, gt, layer_idx_weights, crit):
    """BasicSR PerceptualLoss with use_input_norm, on torch features (pre-activation conv outputs)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = {}
    for inp, tag in ((x, "x"), (gt, "gt")):
        h = (torch.from_numpy(np.asarray(inp).transpose(0, 3, 1, 2).copy()) - mean) / std
        for i, layer in enumerate(feats):
            h = layer(h)
            if i in layer_idx_weights:
                out[(tag, i)] = h
    return sum(w * crit(out[("x", i)], out[("gt", i)]) for i, w in layer_idx_weights.items()).item()


@pytest.mark.parametrize("criterion", ["l1", "fro"])
def test_perceptual_loss_equals_torch_vgg19(vgg_file, criterion):
    path, feats = vgg_file
    sr, gt = _images()
    ls = build_losses([{"name": "perceptual", "vgg_weights": path, "criterion": criterion}])  # Real-ESRGAN's default layers
    ours = float(jax.jit(lambda a, b, fp: ls(a, b, feature_params=fp)[0])(sr, gt, ls.feature_params))
    # conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 are torchvision features 2, 7, 16, 25, 34
    crit = (lambda a, b: torch.mean(torch.abs(a - b))) if criterion == "l1" else (lambda a, b: torch.norm(a - b, p="fro"))
    with torch.no_grad():
        ref = _basicsr_perceptual(feats, sr, gt, {2: 0.1, 7: 0.1, 16: 1.0, 25: 1.0, 34: 1.0}, crit)
    assert ours == pytest.approx(ref, rel=1e-4)


def test_gan_objectives_equal_basicsr_ganloss():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(4, 8, 8, 1)).astype(np.float32), rng.normal(size=(4, 8, 8, 1)).astype(np.float32) - 0.5
    tr, tf = torch.from_numpy(real), torch.from_numpy(fake)
    bce, mse = nn.BCEWithLogitsLoss(), nn.MSELoss()
    refs = {
        "vanilla": (lambda x, t, d: bce(x, torch.full_like(x, float(t)))),
        "lsgan": (lambda x, t, d: mse(x, torch.full_like(x, float(t)))),
        "hinge": (lambda x, t, d: (torch.relu(1 - x).mean() if t else torch.relu(1 + x).mean()) if d else -x.mean()),
    }
    for gan_type, ref in refs.items():
        plain, rel = GANObjective(gan_type), GANObjective(gan_type, relativistic=True)
        assert float(plain.generator_loss(jnp.asarray(fake))) == pytest.approx(ref(tf, True, False).item(), rel=1e-5)
        d_total, _ = plain.discriminator_loss(jnp.asarray(real), jnp.asarray(fake))
        assert float(d_total) == pytest.approx((ref(tr, True, True) + ref(tf, False, True)).item(), rel=1e-5)
        # ESRGAN's relativistic average GAN
        g_ref = (ref(tr - tf.mean(), False, False) + ref(tf - tr.mean(), True, False)) / 2
        assert float(rel.generator_loss(jnp.asarray(fake), jnp.asarray(real))) == pytest.approx(g_ref.item(), rel=1e-5, abs=1e-6)
        d_ref = 0.5 * ref(tr - tf.mean(), True, True) + 0.5 * ref(tf - tr.mean(), False, True)
        assert float(rel.discriminator_loss(jnp.asarray(real), jnp.asarray(fake))[0]) == pytest.approx(d_ref.item(), rel=1e-5, abs=1e-6)


def test_r1_penalty_every_n_steps():
    obj = GANObjective("vanilla", r1_weight=10.0, r1_every=4)
    a = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 8, 3)), jnp.float32)
    d = lambda x: jnp.sum(a * x ** 2, axis=(1, 2, 3))  # noqa: E731  grad = 2 a x
    x = jnp.asarray(np.random.default_rng(1).random((2, 8, 8, 3)), jnp.float32)
    want = 0.5 * 10.0 * 4 * np.mean(np.sum((2 * np.asarray(a) * np.asarray(x)) ** 2, axis=(1, 2, 3)))
    assert float(jax.jit(lambda v: obj.r1_penalty(d, v))(x)) == pytest.approx(want, rel=1e-5)
    assert [bool(obj.r1_due(s)) for s in range(6)] == [True, False, False, False, True, False]
    assert not bool(GANObjective("vanilla").r1_due(0))
    with pytest.raises(ValueError, match="gan_type"):
        GANObjective("wgan")
