"""Optimizers against independent PyTorch implementations, schedules under gradient accumulation, FreezeD masks."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxsr import optim

STEPS = 100


def _cfg(**overrides):
    """A complete optimizer section: the defaults with the test's values."""
    c = optim.default_config()
    c.update(overrides)
    return c


def _problem(seed=0):
    """A small least-squares problem with a few parameter tensors."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    y = rng.normal(size=(32, 3)).astype(np.float32)
    params = {"w": rng.normal(size=(6, 3)).astype(np.float32) * 0.5, "b": rng.normal(size=(3,)).astype(np.float32)}
    return x, y, params


def _jax_run(tx, x, y, params, steps=STEPS):
    loss = lambda p: jnp.mean((x @ p["w"] + p["b"] - y) ** 2)  # noqa: E731
    p = jax.tree.map(jnp.asarray, params)
    state = tx.init(p)

    @jax.jit
    def step(p, state):
        g = jax.grad(loss)(p)
        u, state = tx.update(g, state, p)
        return optax.apply_updates(p, u), state

    for _ in range(steps):
        p, state = step(p, state)
    return p, state


def _torch_run(make_opt, x, y, params, steps=STEPS, after=None):
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make_opt([tp["w"], tp["b"]])
    if hasattr(opt, "train"):
        opt.train()
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        torch.mean((xt @ tp["w"] + tp["b"] - yt) ** 2).backward()
        opt.step()
    if after:
        after(opt)
    return {k: v.detach().numpy() for k, v in tp.items()}


def _max_rel(a, b):
    """Largest per-tensor relative error max|a - b| / max|b| (float32 runs: elementwise ratios near 0 are noise)."""
    return max(float(np.max(np.abs(np.asarray(a[k]) - b[k])) / np.max(np.abs(b[k]))) for k in b)


@pytest.mark.parametrize("proximal", [True, False])
def test_adan_matches_pytorch_optimizer(proximal):
    from pytorch_optimizer import Adan

    x, y, params = _problem()
    lr, wd = 1e-2, 0.02
    ours, _ = _jax_run(optim.adan(lr, weight_decay=wd, proximal=proximal), x, y, params)
    ref = _torch_run(lambda p: Adan(p, lr=lr, betas=(0.98, 0.92, 0.99), weight_decay=wd, weight_decouple=not proximal, foreach=False),
                     x, y, params)
    moved = _max_rel(params, ref)
    assert moved > 0.1  # the run is long enough to matter
    assert _max_rel(ours, ref) <= 1e-5


def test_optax_adan_differs_in_the_gradient_difference_weight():
    """optax 0.2.8 weighs (g_t - g_{t-1}) by 1-b2 where the official Adan uses b2: documents the bug we avoid.

    If this starts failing, optax fixed it (google-deepmind/optax PR #1715) and our copy may go.
    """
    from pytorch_optimizer import Adan

    x, y, params = _problem()
    lr = 1e-2
    ref = _torch_run(lambda p: Adan(p, lr=lr, betas=(0.98, 0.92, 0.99), weight_decay=0.0, foreach=False), x, y, params)
    theirs, _ = _jax_run(optax.adan(lr, eps_root=0.0), x, y, params)
    ours, _ = _jax_run(optim.adan(lr), x, y, params)
    assert _max_rel(theirs, ref) > 1e-2
    assert _max_rel(ours, ref) <= 1e-5
    # with b2 -> 1 - b2 swapped in the difference term, optax's own formula is what we compute
    ours_swapped, _ = _jax_run(optax.chain(_adan_with_diff_weight(0.08), optax.scale(-lr)), x, y, params)
    assert _max_rel(ours_swapped, {k: np.asarray(v) for k, v in theirs.items()}) <= 1e-5


def _adan_with_diff_weight(w, b1=0.98, b2=0.92, b3=0.99, eps=1e-8):
    """Our Adan direction with the difference weight w in n and in the update (optax's choice: 1 - b2)."""

    def update(g, s, params=None):
        u, s2 = optim.scale_by_adan(b1, b2, b3, eps).update(g, s, params)
        d = jax.tree.map(lambda g, p: jnp.where(s.count == 0, 0.0, g - p), g, s.prev_grad)
        n = jax.tree.map(lambda n, g, d: b3 * n + (1 - b3) * (g + w * d) ** 2, s.n, g, d)
        t = (s.count + 1).astype(jnp.float32)
        u = jax.tree.map(lambda m, v, n: (m / (1 - b1**t) + w * v / (1 - b2**t)) / (jnp.sqrt(n / (1 - b3**t)) + eps), s2.m, s2.v, n)
        return u, s2._replace(n=n)

    return optax.GradientTransformation(optim.scale_by_adan(b1, b2, b3, eps).init, update)


@pytest.mark.parametrize("warmup,wd", [(10, 0.0), (25, 0.01)])
def test_schedule_free_adamw_matches_schedulefree(warmup, wd):
    from schedulefree import AdamWScheduleFree

    x, y, params = _problem(1)
    lr = 2e-2
    cfg = _cfg(name="schedule_free_adamw", lr=lr, warmup_steps=warmup, betas=(0.9, 0.999), weight_decay=wd)
    ours, state = _jax_run(optim.build_optimizer(cfg, STEPS), x, y, params)
    ours_eval = optim.eval_params(state, ours)
    make = lambda p: AdamWScheduleFree(p, lr=lr, betas=(0.9, 0.999), warmup_steps=warmup, weight_decay=wd, foreach=False)  # noqa: E731
    ref_train = _torch_run(make, x, y, params)
    ref_eval = _torch_run(make, x, y, params, after=lambda opt: opt.eval())
    assert _max_rel(params, ref_eval) > 0.1
    assert _max_rel(ours, ref_train) <= 1e-5
    assert _max_rel(ours_eval, ref_eval) <= 1e-5


def test_optax_schedule_free_adamw_warmup_is_off_by_one():
    """optax.contrib.schedule_free_adamw's inner step uses lr(count from 0): its first z-step has lr 0.
    Documents why we assemble schedule-free AdamW ourselves."""
    from schedulefree import AdamWScheduleFree

    x, y, params = _problem(1)
    theirs, _ = _jax_run(optax.contrib.schedule_free_adamw(2e-2, warmup_steps=10, b1=0.9, b2=0.999), x, y, params)
    ref = _torch_run(lambda p: AdamWScheduleFree(p, lr=2e-2, warmup_steps=10, foreach=False), x, y, params)
    assert _max_rel(theirs, ref) > 1e-3


def _sf_adan_reference(lr, warmup, wd, momentum):
    """Schedule-free Adan from two packages: facebookresearch `schedulefree.ScheduleFreeWrapper` (decay at y) around
    `pytorch_optimizer.Adan` (no decay of its own), warm-up lr*(k+1)/warmup on the base (LambdaLR, stepped per update).
    The wrapper creates state['z'] before the base's first step, so Adan's lazy init (on an empty state) is run first."""
    from pytorch_optimizer import Adan
    from schedulefree import ScheduleFreeWrapper

    def make(p):
        base = Adan(p, lr=lr, betas=(0.98, 0.92, 0.99), weight_decay=0.0, foreach=False)
        opt = ScheduleFreeWrapper(base, momentum=momentum, weight_decay_at_y=wd)
        sched = torch.optim.lr_scheduler.LambdaLR(base, lambda k: min(1.0, (k + 1) / warmup) if warmup else 1.0)
        wrapped = opt.step

        def step():
            base.init_group(base.param_groups[0], clip_global_grad_norm=base.get_global_gradient_norm())
            wrapped()
            sched.step()

        opt.step = step
        return opt

    return make


@pytest.mark.parametrize("warmup,wd,momentum", [(0, 0.0, 0.9), (10, 0.02, 0.95)])
def test_adan_schedule_free_matches_schedulefree_wrapper_around_adan(warmup, wd, momentum):
    x, y, params = _problem(1)
    lr, steps = 1e-2, 50
    cfg = _cfg(name="adan_schedule_free", lr=lr, betas=(0.98, 0.92, 0.99), warmup_steps=warmup, weight_decay=wd,
               sf_momentum=momentum)
    ours, state = _jax_run(optim.build_optimizer(cfg, steps), x, y, params, steps=steps)
    make = _sf_adan_reference(lr, warmup, wd, momentum)
    ref_train = _torch_run(make, x, y, params, steps=steps)
    ref_eval = _torch_run(make, x, y, params, steps=steps, after=lambda opt: opt.eval())
    assert _max_rel(params, ref_train) > 0.1 and _max_rel(ref_train, ref_eval) > 1e-2  # moved; y and x differ
    assert _max_rel(ours, ref_train) <= 1e-5
    assert _max_rel(optim.eval_params(state, ours), ref_eval) <= 1e-5
    assert optim.is_schedule_free(cfg)


def test_eval_params_found_under_clipping_and_accumulation():
    x, y, params = _problem(2)
    cfg = _cfg(name="schedule_free_adamw", lr=1e-2, warmup_steps=5, clip_grad_norm=10.0, accumulate=2)
    p, state = _jax_run(optim.build_optimizer(cfg, 40), x, y, params, steps=40)
    ev = optim.eval_params(state, p)
    assert not np.allclose(ev["w"], p["w"])
    # non-schedule-free optimizers validate with their params as they are
    p2, state2 = _jax_run(optim.build_optimizer(_cfg(name="adamw", lr=1e-3), 10), x, y, params, steps=3)
    assert optim.eval_params(state2, p2) is p2


def test_warmup_cosine_steps_once_per_real_update_under_accumulation():
    """k micro-steps with accumulation == one step on their mean gradient, with the schedule at that update."""
    k, updates = 4, 12
    cfg = _cfg(name="adamw", lr=1e-1, schedule="cosine", warmup_steps=3, min_lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(3)
    grads = rng.normal(size=(updates, k, 5)).astype(np.float32)
    p0 = jnp.ones(5)

    acc = optim.build_optimizer(_cfg(**{**cfg.to_dict(), "accumulate": k}), updates)
    p, s = p0, acc.init(p0)
    for g in grads.reshape(-1, 5):
        u, s = acc.update(jnp.asarray(g), s, p)
        p = optax.apply_updates(p, u)

    plain = optim.build_optimizer(cfg, updates)
    q, t = p0, plain.init(p0)
    for g in grads.mean(axis=1):
        u, t = plain.update(jnp.asarray(g), t, q)
        q = optax.apply_updates(q, u)
    np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)
    assert int(s.gradient_step) == updates and int(s.mini_step) == 0

    # and the schedule itself: warmup from 0, peak at the end of warmup, min_lr at total_steps
    sched = optim.learning_rate_schedule(cfg, updates)
    assert float(sched(0)) == 0.0 and abs(float(sched(3)) - 0.1) < 1e-7 and abs(float(sched(updates)) - 1e-3) < 1e-7
    mid = 3 + (updates - 3) / 2
    assert abs(float(sched(mid)) - (1e-3 + 0.5 * (0.1 - 1e-3))) < 1e-6


def test_multistep_and_constant_schedules():
    s = optim.learning_rate_schedule(_cfg(lr=1e-3, schedule="multistep", milestones=(5, 8), gamma=0.5, warmup_steps=2), 10)
    got = [float(s(i)) for i in range(10)]
    want = [0.0, 5e-4, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    c = optim.learning_rate_schedule(_cfg(lr=3e-4), 10)
    assert float(c(7)) == pytest.approx(3e-4)


def test_strings_cast_where_the_config_is_read_and_bad_values_refused():
    """A recipe may write numbers as strings, even through update(); resolve casts them once to the defaults' types."""
    from jaxsr.errors import ConfigError
    from jaxsr.train.config import base_config, resolve

    c = base_config()
    c.optim.update(name="adam", lr="2e-4", betas=("0.9", "0.99"), eps="1e-8", warmup_steps="0")
    c.train.update(batch_size="8")
    r = resolve(c)
    assert (r.optim.lr, r.optim.betas, r.optim.eps, r.optim.warmup_steps, r.train.batch_size) == (2e-4, (0.9, 0.99), 1e-8, 0, 8)
    assert isinstance(r.optim.warmup_steps, int) and isinstance(r.optim.lr, float)
    tx = optim.build_optimizer(r.optim, 100)
    p = {"a": jnp.ones(3)}
    u, _ = tx.update({"a": jnp.ones(3)}, tx.init(p), p)
    np.testing.assert_allclose(u["a"], -2e-4, rtol=1e-4)  # first Adam step has size lr
    c.optim.update(lr="fast")
    with pytest.raises(ConfigError, match="optim.lr must be a number, got 'fast'"):
        resolve(c)
    c.optim.update(lr=1e-3, warmup_steps="2.5")
    with pytest.raises(ConfigError, match="optim.warmup_steps must be a whole number"):
        resolve(c)
    with pytest.raises(ValueError, match="optim.name"):
        optim.build_optimizer(_cfg(name="sgd"), 10)
    with pytest.raises(ValueError, match="schedule-free"):
        optim.build_optimizer(_cfg(name="schedule_free_adamw", schedule="cosine"), 10)
    with pytest.raises(ValueError, match="3 values for adan"):
        optim.build_optimizer(_cfg(name="adan", betas=(0.9, 0.99, 0.9, 0.9)), 10)  # two betas take Adan's
    with pytest.raises(ValueError, match="schedule-free"):
        optim.build_optimizer(_cfg(name="adan_schedule_free", betas=(0.98, 0.92, 0.99), schedule="onecycle"), 10)


def test_ema_update_is_basicsr_model_ema():
    ema = {"w": jnp.zeros(3)}
    new = optim.ema_update(ema, {"w": jnp.ones(3)}, 0.999)
    np.testing.assert_allclose(new["w"], 0.001, rtol=1e-6)
    jitted = jax.jit(optim.ema_update)(ema, {"w": jnp.ones(3)}, 0.9)
    np.testing.assert_allclose(jitted["w"], 0.1, rtol=1e-6)


def _block_of(pattern):
    """A discriminator's block_of as its architecture record gives it, from its naming regex."""
    regex = re.compile(pattern)

    def block_of(name):
        m = regex.fullmatch(name)
        return int(m.group(1)) if m else None

    return block_of


@pytest.mark.parametrize("pattern,names,k,frozen", [
    (r"conv(\d+)", ["conv0", "conv1", "conv2", "conv10", "final"], 2, {"conv0", "conv1"}),
    (r"(?:conv|bn)(\d+)_\d+", ["conv0_0", "conv0_1", "bn0_1", "conv1_0", "bn1_0", "conv2_0", "linear1"], 1,
     {"conv0_0", "conv0_1", "bn0_1"}),
])
def test_freezed_masks_follow_the_architectures_block_of(pattern, names, k, frozen):
    rng = np.random.default_rng(0)
    params = {n: {"w": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32), "b": jnp.ones(3)} for n in names}
    block_of = _block_of(pattern)
    labels = optim.frozen_blocks(block_of, k)(params)
    assert {n for n in names if labels[n]["w"] and labels[n]["b"]} == frozen
    assert optim.block_count(block_of, params) == len({block_of(n) for n in names} - {None})
    tx = optim.build_optimizer(_cfg(clip_grad_norm=1.0, weight_decay=0.01), 10, freeze=optim.frozen_blocks(block_of, k))
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for n in names:
        for leaf in updates[n].values():
            assert (np.abs(np.asarray(leaf)).max() == 0) == (n in frozen), n
    with pytest.raises(ValueError, match="FreezeD"):
        optim.frozen_blocks("unet", 2)  # the architecture's block_of, not its name
