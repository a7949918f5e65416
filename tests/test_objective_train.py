"""The objective's controls inside the trainer, each in a short run of the demo recipe (shrunk) on the built-in
photographs: the adversarial ramp, FreezeD and feature matching with separate G and D schedules; a plateau schedule
against torch's ReduceLROnPlateau on the run's own validation PSNRs, resumed bitwise; LDL; best-k by LPIPS;
schedule-free Adan's eval weights in the exports; float16 with dynamic loss scaling against float32, recovering from
an injected overflow and still telling real divergence apart."""
import os

import jax
import numpy as np
import pytest
from conftest import metric_rows
from safetensors.numpy import save_file

from jaxsr import optim, weights
from jaxsr.errors import Diverged
from jaxsr.recipes import demo
from jaxsr.train import state as state_lib
from jaxsr.train.config import resolve
from jaxsr.train.kinds.sr import build_discriminator, build_objective
from jaxsr.train.loop import start


def tiny(**overrides):
    """configs/demo.py with an 8-channel RRDB, batch 2 of 32 px crops, one 64 px validation image."""
    c = demo.get_config()
    c.model.update(num_feat=8, num_block=1, num_grow_ch=8)
    c.train.update(batch_size=2, total_steps=6, log_every=1, ckpt_every=100)
    c.data.update(gt_size=32, val_max_size=64, val_max_images=1)
    c.degrade.gt_size = 32
    c.val.update(every=0, at_start=False)
    c.optim.warmup_steps = 0
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    return resolve(c)


def run(cfg, workdir):
    trainer = start(cfg, str(workdir))
    trainer.run()
    return trainer



GAN = {"gan.enabled": True, "gan.start_step": 2, "gan.discriminator.num_feat": 8,
       "losses": {"l1": dict(name="l1"), "gan": dict(name="gan", weight=0.1), "fm": dict(name="feature_matching")}}


def test_gan_ramp_freezed_and_feature_matching_with_separate_g_and_d_schedules(tmp_path):
    cfg = tiny(**GAN, **{"gan.ramp_steps": 3, "gan.freeze_blocks": 2, "optim.schedule": "cosine", "optim.warmup_steps": 2,
                         "optim_d.schedule": "multistep", "optim_d.milestones": (4,)})
    trainer = run(cfg, tmp_path)
    got = metric_rows(tmp_path)
    assert sorted(got) == list(range(1, 7))
    g_sched, d_sched = (optim.learning_rate_schedule(cfg[s], 6) for s in ("optim", "optim_d"))
    for s, r in got.items():  # row s is train step s - 1 (0-based); D joins at step 2 and runs its schedule by train step
        assert r["lr"] == pytest.approx(float(g_sched(s - 1)), rel=1e-6)
        if s <= 2:
            assert "gan" not in r and "fm" not in r and "lr_d" not in r
            continue
        assert r["lr_d"] == pytest.approx(float(d_sched(s - 1)), rel=1e-6)
        assert r["gan_weight"] == pytest.approx(0.1 * min(1.0, (s - 1 - 2 + 1) / 3), rel=1e-6)  # 1/3, 2/3, 1, 1 of 0.1
        assert r["fm"] > 0 and np.isfinite(r["d_loss"])
    assert [got[s]["lr_d"] for s in (3, 4, 5, 6)] == pytest.approx([1e-4, 1e-4, 5e-5, 5e-5], rel=1e-6)

    # FreezeD: the first two blocks (conv0, conv1) kept their initial weights exactly; every other block trained
    initial = state_lib.split(build_discriminator(cfg, trainer.kind.spec))[1]
    final = jax.device_get(trainer.state.d_params)
    for name in initial:
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(initial[name]), jax.tree.leaves(final[name])))
        assert same == (name in ("conv0", "conv1")), name

    # the ramp multiplies the adversarial term itself, not only its logged weight
    objective = build_objective(cfg)
    sr, gt = (jax.random.uniform(jax.random.PRNGKey(i), (2, 16, 16, 3)) for i in (0, 1))
    logits = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 1))
    feats = [sr, gt]
    full = objective.without_gan()  # the reference: the same terms, adversarial value computed by its GANObjective
    for step, factor in ((2, 1 / 3), (3, 2 / 3), (9, 1.0)):
        _, logs = objective(sr, gt, step=step, fake_logits=logits, fake_features=feats, real_features=feats)
        _, base = full(sr, gt, step=step)
        assert logs["gan"] == pytest.approx(factor * 0.1 * float(objective.gan.generator_loss(logits, None)), rel=1e-6)
        assert logs["l1"] == base["l1"]


def test_freezed_and_feature_matching_are_refused_where_they_cannot_work(tmp_path):
    from jaxsr.errors import ConfigError

    with pytest.raises(ConfigError, match="freeze 1 to 9"):
        start(tiny(**GAN, **{"gan.freeze_blocks": 10}), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="add a 'gan' loss entry"):
        start(tiny(losses={"l1": dict(name="l1"), "fm": dict(name="feature_matching")}), str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="optim.ema_decay > 0"):
        start(tiny(**{"losses": {"ldl": dict(name="ldl")}, "optim.ema_decay": 0.0}), str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="val.every > 0"):
        tiny(**{"optim.schedule": "plateau"})
    with pytest.raises(ConfigError, match="val.lpips"):
        tiny(**{"val.best_metric": "lpips", "val.every": 2})


def torch_plateau_lrs(values, lr, **kw):
    """torch.optim.lr_scheduler.ReduceLROnPlateau fed the same validation values: the lr after each."""
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    out = []
    for v in values:
        sched.step(v)
        out.append(opt.param_groups[0]["lr"])
    return out


PLATEAU = {"optim.schedule": "plateau", "optim.plateau_patience": 0, "optim.plateau_factor": 0.5,
           "optim.plateau_threshold_mode": "abs", "optim.plateau_threshold": 0.05, "val.every": 1, "optim.ema_decay": 0.9,
           "losses": {"l1": dict(name="l1"), "ldl": dict(name="ldl", weight=1.0)}}


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_plateau_follows_torch_on_the_runs_own_validation_and_resumes_bitwise(tmp_path):
    cfg = tiny(**PLATEAU)
    assert cfg.optim.plateau_mode == "max"  # 'auto': the direction of val.best_metric (PSNR)
    run(cfg, tmp_path / "ref")
    got, val = metric_rows(tmp_path / "ref"), metric_rows(tmp_path / "ref", "val_psnr")
    assert sorted(val) == list(range(1, 7)) and all("ldl" in r for r in got.values())
    psnrs = [val[s]["val_psnr"] for s in range(1, 7)]
    ref = torch_plateau_lrs(psnrs, 2e-3, mode="max", factor=0.5, patience=0, threshold=0.05, threshold_mode="abs", min_lr=1e-7)
    logged = [got[s]["lr"] for s in range(1, 7)]  # step s + 1 trains with the lr left by the validation at step s
    np.testing.assert_allclose(logged, [2e-3] + ref[:5], rtol=1e-6)
    assert min(ref[:5]) < 2e-3, (psnrs, ref)  # it did reduce

    # the plateau state is in the checkpoint: stopping at step 3 and continuing gives the same floats
    run(tiny(**PLATEAU, **{"train.stop_at": 3}), tmp_path / "wd")
    run(cfg, tmp_path / "wd")
    again = metric_rows(tmp_path / "wd")
    assert all(again[s] == got[s] for s in range(1, 7))


def lpips_files(tmp_path):
    """Random AlexNet-shaped LPIPS weights (the metric is tested against its reference in test_evaluate.py)."""
    rng = np.random.default_rng(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    backbone = {}
    for i, shape in shapes.items():
        backbone[f"features.{i}.weight"] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        backbone[f"features.{i}.bias"] = (0.01 * rng.standard_normal(shape[0])).astype(np.float32)
    lins = {f"lin{k}.model.1.weight": (0.1 * rng.random((1, c, 1, 1))).astype(np.float32) for k, c in enumerate((64, 192, 384, 256, 256))}
    save_file(backbone, tmp_path / "alex_backbone.safetensors")
    save_file(lins, tmp_path / "alex_lin.safetensors")
    return str(tmp_path / "alex_backbone.safetensors"), str(tmp_path / "alex_lin.safetensors")


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_best_k_follows_lpips_lowest_first(tmp_path):
    cfg = tiny(**{"val.lpips": lpips_files(tmp_path), "val.best_metric": "lpips", "val.every": 2, "train.total_steps": 8,
                  "train.keep_best": 1, "train.snapshot_every": 2, "optim.lr": 5e-3})
    wd = tmp_path / "wd"
    run(cfg, wd)
    val = metric_rows(wd, "val_lpips")
    assert sorted(val) == [2, 4, 6, 8] and all("val_psnr" in r for r in val.values())
    lp = {s: val[s]["val_lpips"] for s in val}
    best = min(lp, key=lp.get)
    # the _best export is the lowest-LPIPS validation's weights (every validation step also has a snapshot export)
    b = weights.read(str(wd / "models" / "demo_x4_best.safetensors")).tensors
    s = weights.read(str(wd / "models" / f"demo_x4_step{best}.safetensors")).tensors
    assert all(np.array_equal(b[k], s[k]) for k in b)
    # best-k: the latest two, and the lowest LPIPS (snapshots aside, which are kept by their own rule)
    cfg2 = tiny(**{"val.lpips": cfg.val.lpips, "val.best_metric": "lpips", "val.every": 2, "train.total_steps": 8,
                   "train.keep_best": 1, "optim.lr": 5e-3})
    run(cfg2, tmp_path / "wd2")
    assert metric_rows(tmp_path / "wd2", "val_lpips") == val
    kept = sorted(int(d) for d in os.listdir(tmp_path / "wd2" / "checkpoints") if d.isdigit())
    assert kept == sorted({6, 8, best}), (kept, lp)


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_adan_schedule_free_validates_and_exports_its_eval_weights(tmp_path):
    cfg = tiny(**{"optim.name": "adan_schedule_free", "optim.betas": (0.98, 0.92, 0.99), "optim.schedule": "constant",
                  "train.total_steps": 4, "optim.weight_decay": 0.01})
    trainer = run(cfg, tmp_path)
    assert trainer.state.ema is None  # the eval weights replace the EMA
    x = optim.eval_params(jax.device_get(trainer.state.opt_state), jax.device_get(trainer.state.params))
    exported, _ = weights.load_model(str(tmp_path / "models" / "demo_x4.safetensors"))
    from flax import nnx

    got = jax.tree.leaves(nnx.state(exported, nnx.Param))
    want, raw = jax.tree.leaves(x), jax.tree.leaves(jax.device_get(trainer.state.params))
    # equal up to float32 rounding (computed on the device there, on the host here); the raw y sequence is 1e-4 away
    assert max(np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(got, want)) < 1e-7
    assert min(np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(want, raw)) > 1e-5


FP = {"train.total_steps": 30, "optim.lr": 2e-3, "optim.warmup_steps": 5}


@pytest.mark.usefixtures("quick_compiles_one_test")
def test_float16_with_loss_scaling_trains_like_float32_and_recovers_from_an_overflow(tmp_path):
    f32 = metric_rows(run(tiny(**FP, compute_dtype="float32"), tmp_path / "f32").workdir)
    f16 = metric_rows(run(tiny(**FP, compute_dtype="float16"), tmp_path / "f16").workdir)
    assert all(r["overflow"] == 0 and r["loss_scale"] == 2.0**16 for r in f16.values())
    last = lambda rs: np.mean([rs[s]["loss"] for s in range(21, 31)])  # noqa: E731
    first = np.mean([f32[s]["loss"] for s in range(1, 6)])
    assert last(f32) < 0.8 * first  # it trains
    assert abs(last(f16) - last(f32)) <= 0.02 * last(f32), (last(f16), last(f32))  # within 2%

    # an injected overflow: a loss scale of 2^30 overflows float16 gradients; the scale halves per skipped update until
    # they fit, those updates change nothing and do not count as divergence (max_nonfinite=3 < the overflows)
    wd = tmp_path / "overflow"
    t = run(tiny(**FP, compute_dtype="float16", **{"optim.loss_scale_init": 2.0**30, "train.max_nonfinite": 3}), wd)
    got = metric_rows(wd)
    n = sum(r["overflow"] for r in got.values())
    assert n > 3 and all(got[s]["overflow"] == 1 for s in range(1, int(n) + 1))
    assert [got[s]["loss_scale"] for s in range(1, 4)] == [2.0**29, 2.0**28, 2.0**27]
    assert all(got[s]["overflow"] == 0 for s in range(int(n) + 1, 31)) and int(jax.device_get(t.state.nonfinite)) == 0
    assert np.mean([got[s]["loss"] for s in range(26, 31)]) < 0.8 * first  # it trained afterwards

    # a real divergence (a huge lr makes the weights, then the loss, non-finite) still stops the run
    with pytest.raises(Diverged):
        run(tiny(**{**FP, "optim.lr": 1e30, "train.max_nonfinite": 3}, compute_dtype="float16"), tmp_path / "diverged")
