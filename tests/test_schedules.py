"""Learning-rate schedules against PyTorch's schedulers and transcriptions of BasicSR's / victorca25's, with warm-up
and restarts in the run; ReduceLROnPlateau against torch's on scripted metrics, in the optimizer and through a
save/restore; every schedule from the discriminator's section too."""
import math
from collections import Counter, defaultdict

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from jaxsr import optim

T = 60  # updates per run
LR = 1e-2


def _cfg(d=False, **overrides):
    c = optim.default_config(lr=LR, ema_decay=None if d else 0.999)
    c.update(overrides)
    return c


# ------------------------------------------------------------------ reference schedulers (transcriptions, labelled)


class BasicSRMultiStepRestartLR(LRScheduler):
    """Transcribed from BasicSR basicsr/models/lr_scheduler.py, MultiStepRestartLR (chainable form)."""

    def __init__(self, optimizer, milestones, gamma, restarts, restart_weights):
        self.milestones, self.gamma = Counter(milestones), gamma
        self.restarts, self.restart_weights = restarts, restart_weights
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch in self.restarts:
            w = self.restart_weights[self.restarts.index(self.last_epoch)]
            return [g["initial_lr"] * w for g in self.optimizer.param_groups]
        if self.last_epoch not in self.milestones:
            return [g["lr"] for g in self.optimizer.param_groups]
        return [g["lr"] * self.gamma ** self.milestones[self.last_epoch] for g in self.optimizer.param_groups]


class BasicSRCosineAnnealingRestartLR(LRScheduler):
    """Transcribed from BasicSR basicsr/models/lr_scheduler.py, CosineAnnealingRestartLR."""

    def __init__(self, optimizer, periods, restart_weights, eta_min):
        self.periods, self.restart_weights, self.eta_min = periods, restart_weights, eta_min
        self.cumulative_period = [sum(periods[: i + 1]) for i in range(len(periods))]
        super().__init__(optimizer)

    def get_lr(self):
        idx = next(i for i, p in enumerate(self.cumulative_period) if self.last_epoch <= p)
        w, start = self.restart_weights[idx], 0 if idx == 0 else self.cumulative_period[idx - 1]
        return [self.eta_min + w * 0.5 * (b - self.eta_min) * (1 + math.cos(math.pi * (self.last_epoch - start) / self.periods[idx]))
                for b in self.base_lrs]


class Victorca25StepLRRestart(LRScheduler):
    """Transcribed from victorca25/traiNNer codes/models/schedulers.py, StepLR_Restart (clear_state included)."""

    def __init__(self, optimizer, step_sizes, restarts, weights, gamma, clear_state=False):
        self.step_sizes, self.step_size, self.gamma, self.clear_state = step_sizes, step_sizes[0], gamma, clear_state
        self.restarts, self.restart_weights = restarts or [0], weights or [1]
        self.weight, self.epoch_offset = 1.0, 0
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch in self.restarts:
            if self.clear_state:
                self.optimizer.state = defaultdict(dict)
            i = self.restarts.index(self.last_epoch)
            self.weight, self.step_size, self.epoch_offset = self.restart_weights[i], self.step_sizes[i + 1], self.last_epoch
            return [b * self.weight for b in self.base_lrs]
        return [b * self.weight * self.gamma ** ((self.last_epoch - self.epoch_offset) // self.step_size) for b in self.base_lrs]


def _torch_lrs(make_sched, steps=T, lr=LR):
    """lr used by update k = 0..steps-1 in the usual loop (optimizer.step(); scheduler.step())."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def _warm(steps, shape, n=T):
    """Our warm-up: a multiplier w(k / steps) on the schedule, w = t or (1 - cos(pi t)) / 2."""
    t = np.minimum(np.arange(n) / steps, 1.0) if steps else np.ones(n)
    return t if shape == "linear" else 0.5 * (1 - np.cos(np.pi * t))


def _cosine_after_warmup(opt, warmup, eta_min):
    return torch.optim.lr_scheduler.SequentialLR(opt, [torch.optim.lr_scheduler.ConstantLR(opt, 1.0, warmup),
                                                       torch.optim.lr_scheduler.CosineAnnealingLR(opt, T - warmup, eta_min)], [warmup])


CASES = {  # name: (our config, the reference scheduler, what it is)
    "multistep": (dict(schedule="multistep", milestones=(10, 25, 25, 40), gamma=0.5, warmup_steps=5),
                  lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [10, 25, 25, 40], 0.5)),
    "cosine": (dict(schedule="cosine", min_lr=1e-5, warmup_steps=6, warmup="cosine"),
               lambda o: _cosine_after_warmup(o, 6, 1e-5)),
    "cosine_restart": (dict(schedule="cosine_restart", periods=(20, 15, 25), period_weights=(1, 0.5, 0.25), min_lr=1e-6,
                            warmup_steps=5),
                       lambda o: BasicSRCosineAnnealingRestartLR(o, [20, 15, 25], [1, 0.5, 0.25], 1e-6)),
    "multistep_restart": (dict(schedule="multistep_restart", milestones=(8, 15, 30, 30, 45), gamma=0.5, restarts=(20, 40),
                               restart_weights=(0.5, 0.25), warmup_steps=4, warmup="cosine"),
                          lambda o: BasicSRMultiStepRestartLR(o, [8, 15, 30, 30, 45], 0.5, [20, 40], [0.5, 0.25])),
    "step_restart": (dict(schedule="step_restart", step_sizes=(6, 4, 5), gamma=0.5, restarts=(20, 40), restart_weights=(1, 0.5),
                          warmup_steps=3),
                     lambda o: Victorca25StepLRRestart(o, [6, 4, 5], [20, 40], [1, 0.5], 0.5)),
    "onecycle_cos": (dict(schedule="onecycle", pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
                     lambda o: torch.optim.lr_scheduler.OneCycleLR(o, LR, total_steps=T, pct_start=0.25, div_factor=10.0,
                                                                   final_div_factor=100.0, cycle_momentum=False)),
    "onecycle_linear_3phase": (dict(schedule="onecycle", anneal_strategy="linear", three_phase=True),
                               lambda o: torch.optim.lr_scheduler.OneCycleLR(o, LR, total_steps=T, anneal_strategy="linear",
                                                                             three_phase=True, cycle_momentum=False)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_schedule_matches_its_reference_through_warmup_and_restarts(name):
    overrides, make = CASES[name]
    cfg = _cfg(**overrides)
    ours = np.asarray(jax.jit(jax.vmap(optim.learning_rate_schedule(cfg, T)))(jnp.arange(T)))
    ref = _torch_lrs(make) * _warm(cfg.warmup_steps, cfg.warmup)
    assert len(np.unique(np.round(ref / LR, 6))) >= 6  # the run sees the schedule move (warm-up, decays, restarts)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-10)


def test_optax_onecycle_differs_from_torch():
    """optax.cosine_onecycle_schedule ends its phases at pct*T and T, torch's OneCycleLR at pct*T - 1 and T - 1:
    documents why the onecycle schedule is ours."""
    ref = _torch_lrs(CASES["onecycle_cos"][1])
    theirs = np.array([float(optax.cosine_onecycle_schedule(T, LR, 0.25, 10.0, 100.0)(k)) for k in range(T)])
    assert np.abs(theirs - ref).max() > 1e-2 * LR


@pytest.mark.parametrize("section", ["optim", "optim_d"])
@pytest.mark.parametrize("name", list(CASES) + ["constant", "plateau"])
def test_every_schedule_reaches_the_optimizer_from_either_section(name, section):
    """Adam on a constant gradient steps by exactly -lr_k (up to eps): the update is the schedule."""
    overrides = CASES[name][0] if name in CASES else dict(schedule=name, warmup_steps=2, plateau_mode="max")
    cfg = _cfg(d=section == "optim_d", name="adam", **overrides)
    assert ("ema_decay" in cfg) == (section == "optim")
    tx = optim.build_optimizer(cfg, T)
    sched = optim.learning_rate_schedule(cfg, T)
    p = {"w": jnp.ones(3)}
    state = tx.init(p)
    step = jax.jit(tx.update)
    for k in range(8):
        u, state = step({"w": jnp.full(3, 0.3)}, state, p)
        np.testing.assert_allclose(u["w"], -float(sched(k)), rtol=1e-5, atol=1e-10)


def test_unknown_or_inconsistent_schedule_fields_are_refused():
    for bad, match in ((dict(schedule="exponential"), "optim.schedule"), (dict(schedule="constant", warmup="exp", warmup_steps=2), "optim.warmup"),
                       (dict(schedule="cosine_restart", periods=(10, 10), period_weights=(1,)), "period_weights"),
                       (dict(schedule="cosine_restart", periods=(10, 10), restart_weights=(1, 0.5)), "period_weights"),
                       (dict(schedule="multistep_restart", restarts=(10,), period_weights=(0.5,)), "restart_weights"),
                       (dict(schedule="step_restart", step_sizes=(5, 5), restarts=(10, 20)), "step_sizes"),
                       (dict(schedule="cosine", clear_state=True), "clear_state"),
                       (dict(schedule="plateau", plateau_mode="up"), "plateau_mode")):
        with pytest.raises(ValueError, match=match):
            optim.build_optimizer(_cfg(**bad), T)


# ------------------------------------------------------------------ clear_state


def _least_squares(seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(32, 6)).astype(np.float32), rng.normal(size=(32, 3)).astype(np.float32)
    return x, y, rng.normal(size=(6, 3)).astype(np.float32) * 0.5


def _jax_train(tx, x, y, w, steps, feed=None, state=None, start=0):
    """`steps` updates from update `start` (from `state`, or a fresh one); feed(k, state) after update k."""
    loss = lambda w: jnp.mean((x @ w - y) ** 2)  # noqa: E731
    w = jnp.asarray(w)
    state = tx.init(w) if state is None else state

    @jax.jit
    def step(w, state):
        u, state = tx.update(jax.grad(loss)(w), state, w)
        return optax.apply_updates(w, u), state

    for k in range(start, start + steps):
        w, state = step(w, state)
        if feed:
            state = feed(k, state)
    return np.asarray(w), state


def _torch_train(make_opt, make_sched, x, y, w, steps, metric=None):
    tw = torch.tensor(w, requires_grad=True)
    opt = make_opt([tw])
    sched = make_sched(opt)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for k in range(steps):
        opt.zero_grad()
        torch.mean((xt @ tw - yt) ** 2).backward()
        opt.step()
        if metric is None:
            sched.step()
        elif metric(k) is not None:
            sched.step(metric(k))
    return tw.detach().numpy()


@pytest.mark.parametrize("clear", [True, False])
def test_step_restart_clear_state_resets_adam_as_victorca25(clear):
    """torch Adam under victorca25's StepLR_Restart: with clear_state its state (moments, step count) restarts."""
    x, y, w = _least_squares()
    steps = 45
    cfg = _cfg(name="adam", betas=(0.9, 0.99), schedule="step_restart", step_sizes=(8,), gamma=0.5, restarts=(15, 30),
               restart_weights=(1, 0.5), clear_state=clear)
    ours, _ = _jax_train(optim.build_optimizer(cfg, steps), x, y, w, steps)
    make_opt = lambda p: torch.optim.Adam(p, lr=LR, betas=(0.9, 0.99), eps=1e-8)  # noqa: E731
    ref = _torch_train(make_opt, lambda o: Victorca25StepLRRestart(o, [8, 8, 8], [15, 30], [1, 0.5], 0.5, clear), x, y, w, steps)
    other = _torch_train(make_opt, lambda o: Victorca25StepLRRestart(o, [8, 8, 8], [15, 30], [1, 0.5], 0.5, not clear), x, y, w, steps)
    scale = np.abs(ref).max()
    assert np.abs(ours - ref).max() <= 1e-5 * scale
    assert np.abs(other - ref).max() > 1e-3 * scale  # clearing the state matters on this run


# ------------------------------------------------------------------ ReduceLROnPlateau

PLATEAU_CASES = [
    dict(plateau_mode="min", plateau_threshold_mode="rel", plateau_threshold=1e-2, plateau_patience=2, plateau_cooldown=1,
         plateau_factor=0.5, plateau_min_lr=1e-4),
    dict(plateau_mode="max", plateau_threshold_mode="abs", plateau_threshold=0.035, plateau_patience=1, plateau_cooldown=2,
         plateau_factor=0.3, plateau_min_lr=0.0),
    dict(plateau_mode="max", plateau_threshold_mode="rel", plateau_threshold=1e-4, plateau_patience=3, plateau_cooldown=0,
         plateau_factor=0.5, plateau_min_lr=1e-7),
]


def _metrics(mode, n=60):
    """A validation curve that improves, stalls, and improves again (PSNR-like for max, a loss for min)."""
    rng = np.random.default_rng(7)
    trend = np.concatenate([np.linspace(0, 1, 15), np.full(15, 1.0), np.linspace(1, 1.5, 10), np.full(20, 1.5)])[:n]
    v = np.round(30 + trend + rng.normal(0, 0.02, n), 2)
    return v if mode == "max" else np.round(40 - v, 2)


def _torch_plateau(c):
    return lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, mode=c["plateau_mode"], factor=c["plateau_factor"], patience=c["plateau_patience"], threshold=c["plateau_threshold"],
        threshold_mode=c["plateau_threshold_mode"], cooldown=c["plateau_cooldown"], min_lr=c["plateau_min_lr"])


@pytest.mark.parametrize("case", range(len(PLATEAU_CASES)))
def test_plateau_reacts_to_a_scripted_metric_as_torch(case):
    c = PLATEAU_CASES[case]
    rule = optim.plateau_rule(_cfg(schedule="plateau", **c))
    metrics = _metrics(c["plateau_mode"])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR)
    ref_sched = _torch_plateau(c)(opt)
    state, update = rule.init(), jax.jit(rule.update)
    ours, ref = [], []
    for m in metrics:
        state = update(state, m)
        ref_sched.step(float(m))
        ours.append(float(rule.lr(state)))
        ref.append(opt.param_groups[0]["lr"])
    assert len(set(ref)) >= 3  # at least two reductions happen
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


@pytest.mark.parametrize("section", ["optim", "optim_d"])
def test_plateau_drives_adamw_as_torch_and_survives_save_restore(section):
    """AdamW + plateau fed a validation value every 4 updates equals torch's AdamW + ReduceLROnPlateau; the state
    serialised mid-run (flax msgpack, as a checkpoint would) continues identically."""
    c = dict(PLATEAU_CASES[0], plateau_patience=1)
    cfg = _cfg(d=section == "optim_d", name="adamw", betas=(0.9, 0.99), weight_decay=0.01, schedule="plateau", warmup_steps=3,
               **c)
    x, y, w = _least_squares(1)
    steps, every = 48, 4
    metrics = _metrics("min")[::5]  # 12 validations: improving, stalling, improving
    metric = lambda k: float(metrics[k // every]) if (k + 1) % every == 0 else None  # noqa: E731
    feed = lambda k, s: optim.feed_plateau(cfg, s, metric(k)) if metric(k) is not None else s  # noqa: E731
    tx = optim.build_optimizer(cfg, steps)
    ours, state = _jax_train(tx, x, y, w, steps, feed)
    assert float(optim.lr_scale(cfg, state)) < 0.3  # reductions reached the optimizer

    def make_sched(o):  # our linear warm-up k/3 for the first updates (the first validation comes after it)
        plateau, count, step = _torch_plateau(c)(o), [0], o.step

        def warm_step():
            if count[0] <= 3:
                o.param_groups[0]["lr"] = LR * min(count[0] / 3, 1.0)
            step()
            count[0] += 1

        o.step = warm_step
        return plateau

    make_opt = lambda p: torch.optim.AdamW(p, lr=LR, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)  # noqa: E731
    ref = _torch_train(make_opt, make_sched, x, y, w, steps, metric)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()

    # save after 20 updates, restore into a fresh state, continue: identical to the uninterrupted run
    half, saved = _jax_train(tx, x, y, w, 20, feed)
    restored = flax.serialization.from_bytes(tx.init(jnp.asarray(w)), flax.serialization.to_bytes(saved))
    assert isinstance(optim._find(restored, optim.PlateauState)[0], optim.PlateauState)
    resumed, _ = _jax_train(tx, x, y, half, steps - 20, feed, state=restored, start=20)
    np.testing.assert_array_equal(resumed, ours)
