"""The `srflow` training kind: one run through run_train.py (a tiny SRFlow from scratch, its encoder from an ESRGAN
file, frozen for 2 of 4 steps), resumed in this process from step 2 bit for bit; the encoder bit-identical during the
delay (also its optimizer state) and moving after it; the NLL falling over repeated steps on one batch through the
compiled step; the heat grid written at validation; ActNorm's data-dependent initialisation; refusals in one line;
in process, one compiled step: add_gt_noise's dequantization and -log(quant) term, config.losses on the heat-0
reconstruction; NaN heat samples counted at validation."""
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import metric_rows

from jaxsr import parallel, weights
from jaxsr.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:SRFlow. spandrel", "ignore:num_grow_ch=4. spandrel")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "srflow", "SRFlow_x4_small.pth")
# A tiny SRFlow x4 (all three levels, the split, one coupling step each; no uncoupled steps, one trunk block: what
# compiles fastest, the golden tests cover the rest) and its ESRGAN encoder
TINY = {"arch": "srflow", "in_ch": 3, "out_ch": 3, "num_feat": 4, "num_block": 1, "num_grow_ch": 4, "K": 1, "L": 3,
        "noaffine_steps": 0, "hidden_ch": 4, "kernel_hidden": 1, "n_hidden_layers": 1, "stack_blocks": (0,), "f_ch": 4}
ESRGAN = {"arch": "esrgan", "scale": 4, "in_ch": 3, "out_ch": 3, "num_feat": 4, "num_block": 1, "num_grow_ch": 4}
HEATS, N_SAMPLE = (0.0, 0.8), 2


def tiny_run(encoder, *extra):
    """configs/srflow_x4.py shrunk: 4 steps of batch 2 on 32 px HR crops, the encoder frozen for the first half,
    validation (one 32 px image, 2 heats x 2 samples) at step 4, checkpoints at 2 and 4."""
    return ["--config", "configs/srflow_x4.py", f"--config.model={TINY}", f"--config.srflow.encoder_weights={encoder}",
            f"--config.srflow.heats={HEATS}", f"--config.srflow.n_sample={N_SAMPLE}", "--config.train.batch_size=2",
            "--config.data.gt_size=32", "--config.degrade.gt_size=32", "--config.data.num_workers=0",
            "--config.train.total_steps=4", "--config.train.ckpt_every=2", "--config.train.log_every=1",
            "--config.val.every=4", "--config.data.val_max_size=32", "--config.data.val_max_images=1", *extra]


def host(tree):
    """A copy on the host (a CPU array's numpy view would change with the next step, which donates it)."""
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def encoder_bytes(params):
    from jaxsr.train.kinds.srflow import in_encoder

    return [np.asarray(v).tobytes() for m, v in zip(jax.tree.leaves(in_encoder(params)), jax.tree.leaves(params)) if m]


@pytest.mark.slow
def test_a_run_freezes_the_encoder_then_trains_it_and_resumes_bitwise(tmp_path, quick_compiles):
    from parity import perturbed
    from test_train import tensorboard_summaries

    from jaxsr.archs.bridge import state_dict
    from jaxsr.train import state as state_lib
    from jaxsr.train.config import get_config, resolve
    from jaxsr.train.kinds.srflow import esrgan_pairs
    from jaxsr.train.loop import start

    encoder = tmp_path / "esrgan.pth"
    weights.export(perturbed(ESRGAN, spread=0.05), ESRGAN, encoder)
    wd = tmp_path / "wd"
    r = subprocess.run([sys.executable, "run_train.py", *tiny_run(encoder), "--workdir", str(wd)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "encoder_weights from" in out and "42 of 110 tensors (all 42 of RRDB); the flow's 68 keep their init" in out
    assert "ActNorm data-dependent initialisation on the first batch: 15 of 15 ActNorms set" in out
    first, val = metric_rows(wd), metric_rows(wd, "val_psnr")
    assert [first[s]["encoder_frozen"] for s in (1, 2, 3, 4)] == [1, 1, 0, 0]
    assert all(np.isfinite(first[s]["nll"]) and first[s]["skipped"] == 0 for s in first)
    assert val[4]["val_nan_samples"] == 0 and np.isfinite(val[4]["val_nll"])
    images, _ = tensorboard_summaries(wd)  # rows LR | 2 samples | HR of 32 px, one per heat
    assert images == [(4, "val/lr_sr_hr", 32 * len(HEATS), 32 * (N_SAMPLE + 2))]

    # the same trainer, in this process, branched at step 2 (where the encoder unfreezes): steps 3, 4 again, bitwise
    again = tmp_path / "again"
    shutil.copytree(wd, again)
    trainer = start(resolve(get_config(str(wd / "config.json"))), str(again), resume_from=2)
    seen, step_fn = {}, trainer.kind.train_step

    def recording(state, batch, step):
        seen.setdefault(step, host((state.params, state.opt_state)))  # the restored state at 2
        new, metrics = step_fn(state, batch, step)
        seen[step + 1] = host((new.params, new.opt_state))
        return new, metrics

    trainer.kind.train_step = recording
    assert trainer.run() == 4
    assert all(metric_rows(again)[s] == first[s] for s in (3, 4)) and metric_rows(again, "val_psnr")[4] == val[4]

    # through the delay the encoder is the ESRGAN file's, bit for bit, and its optimizer state never moved
    params, opt_state = seen[2]
    src, ours = weights.read_state_dict(encoder)[0], state_dict(trainer.kind.deployable(trainer.state))
    theirs = {f"{d}.{leaf}": src[f"{s}.{leaf}"] for d, s in esrgan_pairs(1, 2) for leaf in ("weight", "bias")}
    at2 = state_dict(state_lib.merge(trainer.kind.eval_def, params, host(trainer.state.buffers)))
    assert all(at2[k].tobytes() == v.tobytes() for k, v in theirs.items())
    assert not any(np.any(np.asarray(x)) for x in jax.tree.leaves(opt_state["encoder"]))
    assert encoder_bytes(seen[3][0]) != encoder_bytes(params)  # it trains from step 2 on
    assert any(not np.array_equal(ours[k], v) for k, v in theirs.items())

    # the NLL falls over repeated steps on one batch, through the compiled step (no new compile)
    kind, state = trainer.kind, trainer.state
    batch = parallel.global_batch(trainer.mesh, next(kind.data.train))
    before = kind.jitted[False]._cache_size()
    nll = []
    for _ in range(4):
        state, m = kind.train_step(state, batch, 3)
        nll.append(float(m["nll"]))
    assert kind.jitted[False]._cache_size() == before
    assert nll[-1] < nll[0], nll


def test_the_recipe_builds_the_released_network_and_a_golden_file_resolves_with_arch_auto():
    from flax import nnx

    from jaxsr import archs
    from jaxsr.recipes import srflow_x4
    from jaxsr.train.config import resolve
    from jaxsr.train.kinds.sr import generator_spec
    from jaxsr.train.kinds.srflow import SRFlow, check_srflow, delay_steps

    model = archs.build(generator_spec(resolve(srflow_x4.get_config())))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 39_541_811  # SRFlow_DF2K_4X.pth's
    cfg = srflow_x4.get_config()
    cfg.model.arch, cfg.init_weights = "auto", GOLDEN
    cfg = SRFlow.resolve_config(resolve(cfg), None)
    check_srflow(cfg)
    assert cfg.model.arch == "srflow" and cfg.model.K == 2 and delay_steps(cfg) == 100_000


def srflow_config(**overrides):
    """The recipe with `a__b=value` overrides (model.arch after resolving, which checks the model's fields)."""
    from jaxsr.recipes import srflow_x4
    from jaxsr.train.config import resolve

    c = srflow_x4.get_config()
    arch = overrides.pop("model__arch", None)
    for field, value in overrides.items():
        node = c
        *parents, leaf = field.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    c = resolve(c)
    if arch:
        c.model.arch = arch
    return c


@pytest.mark.parametrize("overrides, message", [
    ({}, None),
    ({"train__batch_size": 1, "optim__accumulate": 2}, None),
    ({"train__batch_size": 1}, "batch_size=1 turns NaN .*optim.accumulate > 1"),
    ({"losses": {"gan": {"name": "gan", "weight": 0.1}}}, r"losses.gan \('gan'\) needs a discriminator"),
    ({"model__arch": "esrgan"}, "kind='srflow' trains an SRFlow network"),
    ({"srflow__train_rrdb_delay": 1.5}, r"train_rrdb_delay is the fraction .* in \[0, 1\]"),
    ({"srflow__heats": (0.5, -1.0)}, "srflow.heats must be standard deviations >= 0"),
    ({"optim__schedule": "plateau"}, "does not support optim.schedule='plateau'"),
    ({"srflow__encoder_weights": "/no/such.pth"}, "srflow.encoder_weights: no such file"),
])
def test_the_config_is_checked_in_one_line(overrides, message):
    from jaxsr.train.kinds.srflow import check_srflow

    cfg = srflow_config(**overrides)
    if message is None:
        check_srflow(cfg)
        return
    with pytest.raises(ConfigError, match=message):
        check_srflow(cfg)


def test_an_encoder_of_other_widths_is_refused_by_name(tmp_path):
    from parity import perturbed

    from jaxsr import archs
    from jaxsr.train.kinds.srflow import load_encoder

    other = {**ESRGAN, "num_block": 3}
    weights.export(perturbed(other), other, tmp_path / "esrgan.pth")
    spec = {**TINY, "scale": 4}
    with pytest.raises(ConfigError, match="ESRGAN with num_block=3 but the SRFlow encoder has num_block=1"):
        load_encoder(archs.build(spec), spec, tmp_path / "esrgan.pth")


def test_actnorm_data_init_whitens_what_each_actnorm_receives():
    """The reference's initialize_parameters: after it, the first ActNorm's output on the batch it saw has zero mean
    and unit standard deviation per channel; ActNorms already set are left alone."""
    import jax.numpy as jnp

    from jaxsr import archs
    from jaxsr.archs.common import pixel_unshuffle
    from jaxsr.train.kinds.srflow import actnorm_init

    model = archs.build({**TINY, "scale": 4})
    hr = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32))
    lq = hr.reshape(2, 8, 4, 8, 4, 3).mean(axis=(2, 4))
    assert actnorm_init(model, hr, lq) == (15, 15)
    a = model.flowUpsamplerNet.layers[1].actnorm  # after the first squeeze
    y = np.asarray((pixel_unshuffle(hr, 2) + a.bias[...].reshape(-1)) * jnp.exp(a.logs[...].reshape(-1)))
    assert np.abs(y.mean(axis=(0, 1, 2))).max() < 1e-6 and np.abs(y.std(axis=(0, 1, 2)) - 1).max() < 1e-5
    assert actnorm_init(model, hr, lq) == (0, 15)


def test_infer_writes_one_file_per_keyed_sample_and_refuses_tiles_for_them(tmp_path, capsys):
    """`jaxsr.infer --heat 0.8 --samples 2 --seed 3`: sample i is the model's sample of the image at that heat with
    fold_in(key(3), i), one file each; an explicit tile size is refused for keyed samples (each tile would draw its
    own latents); --heat on a one-output model is refused."""
    from jaxsr import infer
    from jaxsr.imageio import load_image, to_u8, write_image

    lr = np.load(os.path.join(ROOT, "tests", "golden", "srflow", "io.npz"))["lr"][0, :5, :9]  # odd sides: padded to 2
    write_image(tmp_path / "in.png", lr, bits=8)
    img = load_image(tmp_path / "in.png")[0]
    args = ["--weights", GOLDEN, "--input", str(tmp_path / "in.png"), "--output", str(tmp_path / "out.png"),
            "--heat", "0.8", "--samples", "2", "--seed", "3"]
    assert infer.main([*args, "--tile", "0"]) == 0
    model = weights.load_model(GOLDEN)[0]
    got = [load_image(tmp_path / f"out_sample{i}.png")[0] for i in (0, 1)]
    assert got[0].shape == (20, 36, 3) and not np.array_equal(got[0], got[1])
    want = infer.sample(model, img, 0.8, jax.random.fold_in(jax.random.key(3), 0))
    assert np.array_equal(to_u8(got[0]), to_u8(want))
    assert infer.main([*args, "--tile", "64"]) == 2
    assert "tiles sampled at one seed would not join seamlessly" in capsys.readouterr().err
    esrgan = tmp_path / "esrgan.pth"
    from parity import perturbed

    weights.export(perturbed(ESRGAN), ESRGAN, esrgan)
    assert infer.main(["--weights", str(esrgan), *args[2:]]) == 2
    assert "--heat samples a flow model (SRFlow)" in capsys.readouterr().err



@pytest.fixture(scope="module")
def noisy_step(quick_compiles):
    """kind='srflow''s step (make_step, as SRFlow.__init__ builds it, encoder training) for the tiny SRFlow with
    srflow.add_gt_noise, quant 16, nll_weight 2 and losses l1 (weight 0.5), run once on a paired batch of 2 (HR 16 px,
    its LR the 4x box mean): (cfg, eval model, the state before, the batch, the step's metrics). One compile for the
    tests below."""
    import jax.numpy as jnp
    from flax import nnx

    from jaxsr.degrade import training_pairs
    from jaxsr.train import state as state_lib
    from jaxsr.train.kinds.sr import build_generator, build_objective, build_state
    from jaxsr.train.kinds.srflow import in_encoder, make_step, split_optimizer

    cfg = srflow_config(data__gt_size=16, degrade__gt_size=16, train__batch_size=2, optim__ema_decay=0.0,
                        srflow__add_gt_noise=True, srflow__quant=16, srflow__nll_weight=2.0,
                        losses={"l1": {"name": "l1", "weight": 0.5}})
    cfg.model.update({k: v for k, v in TINY.items() if k != "arch"})
    model = build_generator(cfg)[0]
    model.train()
    g_def = state_lib.split(model)[0]
    tx = split_optimizer(cfg, 0)(True)
    state = build_state(cfg, model, tx)
    step = jax.jit(make_step(cfg, g_def, None, build_objective(cfg), tx, training_pairs(cfg.degrade, cfg.scale), False,
                             in_encoder(state.params)))
    hr = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 16, 16, 3)).astype(np.float32))
    batch = {"gt": hr, "lq": hr.reshape(2, 4, 4, 4, 4, 3).mean(axis=(2, 4))}
    before = host(state)
    metrics = {k: float(v) for k, v in step(state, batch, {})[1].items()}
    model.eval()
    return cfg, model, before, batch, metrics


_outside = []


def outside(model, hr, lq, quant):
    """The model's mean NLL of `hr` with and without quant's dequantization term, and its heat-0 sample: one compile."""
    import jax.numpy as jnp
    from flax import nnx

    if not _outside:
        _outside.append(nnx.jit(lambda m, hr, lq, q: (jnp.mean(m.nll(hr, lq, quant=q)), jnp.mean(m.nll(hr, lq)), m(lq)),
                                static_argnums=3))
    return [np.asarray(x) for x in _outside[0](model, hr, lq, quant)]


def test_gt_noise_dequantizes_the_hr_and_adds_the_log_quant_term(noisy_step):
    """srflow.add_gt_noise with quant 16: the step's NLL is the model's NLL of HR + U(-0.5, 0.5) / 16 (the noise the
    step draws from its key) with -log(16) per pixel position: the no-term NLL of that HR + log2(16) = 4 bits."""
    from jaxsr.train.kinds.srflow import training_hr

    cfg, model, state, batch, m = noisy_step
    hr, quant = training_hr(cfg, jax.random.split(state.rng)[1], batch["gt"])
    noise = np.asarray(hr - batch["gt"])
    assert quant == 16 and 0.45 / 16 < np.abs(noise).max() <= 0.5 / 16 and abs(noise.mean()) < 0.05 / 16
    with_term, plain, _ = outside(model, hr, batch["lq"], 16.0)
    assert float(with_term) == pytest.approx(float(plain) + 4.0, abs=1e-5)
    assert m["nll"] == pytest.approx(float(with_term), rel=1e-5, abs=1e-5)
    clean = outside(model, batch["gt"], batch["lq"], 16.0)[0]
    assert abs(m["nll"] - float(clean)) > 1e-4  # the noise went in


def test_extra_losses_act_on_the_heat0_reconstruction(noisy_step):
    """config.losses' l1 (weight 0.5) is logged weighted, 0.5 x mean |model(lr) - hr| of the heat-0 sample against
    the clean HR, and loss = nll_weight (2) x nll + that."""
    cfg, model, state, batch, m = noisy_step
    sr = outside(model, batch["gt"], batch["lq"], 16.0)[2]
    l1 = 0.5 * float(np.mean(np.abs(sr - np.asarray(batch["gt"]))))
    assert m["l1"] == pytest.approx(l1, rel=1e-4) and l1 > 0
    assert m["loss"] == pytest.approx(2.0 * m["nll"] + l1, rel=1e-5, abs=1e-5)


def test_nan_heat_samples_are_counted_and_shown_black(noisy_step):
    """SRFlow.validate with one heat sample turned NaN (its reverse flow's output): the scores and the NLL are those of
    the run without it, nan_samples is 1, and that sample is black in the grid while the others are as before."""
    import copy
    import types

    from flax import nnx

    from jaxsr.train.kinds.srflow import SRFlow

    cfg, model, _, _, _ = noisy_step
    cfg = copy.deepcopy(cfg)
    cfg.srflow.heats, cfg.srflow.n_sample = (0.0, 0.8), 2
    rng = np.random.default_rng(2)
    hr = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    item = {"lr": hr.reshape(6, 4, 6, 4, 3).mean(axis=(1, 3)), "hr": hr}
    kind = SRFlow.__new__(SRFlow)
    kind.cfg, kind.perceptual, kind.data, kind._bicubic_psnr = cfg, {}, types.SimpleNamespace(val=[item]), {}
    decode = nnx.jit(lambda m, lr, noise: m.decode(lr, noise[-1], noise[:-1]))
    kind._nll = nnx.jit(lambda m, hr, lr: m.nll(hr, lr))
    calls = []

    def poisoned(m, lr, noise):  # call 0: the heat-0 mean; 1, 2: heat 0 samples; 3, 4: heat 0.8's
        calls.append(len(calls))
        out = decode(m, lr, noise)
        return out * np.nan if poison and len(calls) == 4 else out

    kind._decode = poisoned
    poison = False
    clean = kind.validate(model)
    assert len(calls) == 5
    calls.clear()
    poison = True
    got = kind.validate(model)
    assert len(calls) == 5 and clean.values["nan_samples"] == 0 and got.values["nan_samples"] == 1
    assert got.values["psnr"] == clean.values["psnr"] and got.values["nll"] == clean.values["nll"]
    assert np.isfinite(got.values["psnr"]) and np.isfinite(got.values["nll"]) and "1 of 4 heat samples NaN" in got.line
    (_, a, _), (_, b, _) = clean.images[1], got.images[1]  # the heat 0.8 row: sample 0 | sample 1, 24 px each
    assert np.any(a[:, :24]) and not np.any(b[:, :24]) and np.array_equal(a[:, 24:], b[:, 24:])
    assert np.array_equal(clean.images[0][1], got.images[0][1])
