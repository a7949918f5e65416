"""Optimizers from the config: an optax chain plus schedules, EMA, schedule-free, plateau, FreezeD and loss scaling.

Config schema (`config.optim`, and `config.optim_d` for the discriminator; `default_config()` has every field):
    name:           'adamw' | 'adam' | 'adan' | 'schedule_free_adamw' | 'adan_schedule_free'
    lr:             peak learning rate
    betas:          (b1, b2) for adam(w) and schedule_free_adamw; (b1, b2, b3) for the two Adans, e.g. (0.98, 0.92, 0.99)
    eps:            added to the denominator
    weight_decay:   decoupled for adamw and both schedule-free optimizers (taken at y); adam adds nothing
    adan_proximal:  True: official Adan's default decay p <- (p - lr*u) / (1 + lr*wd); False: decoupled
    sf_momentum:    adan_schedule_free's interpolation between z and the average x (ScheduleFreeWrapper's momentum)
    schedule:       'constant' | 'cosine' (to min_lr at total_steps) | 'multistep' | 'cosine_restart' |
                    'multistep_restart' | 'step_restart' | 'onecycle' | 'plateau'
    warmup_steps, warmup:  lr * w(k / warmup_steps) in front of any schedule, w = t ('linear') or (1 - cos(pi t)) / 2
    min_lr:         cosine's end value, cosine_restart's eta_min, plateau's floor
    milestones, gamma:  multistep(_restart): lr * gamma^(milestones passed); also step_restart's gamma
    periods, restart_weights:  cosine_restart (BasicSR CosineAnnealingRestartLR): cycle lengths, peak weight of each
    restarts, restart_weights: multistep_restart (BasicSR MultiStepRestartLR) and step_restart (victorca25
                    StepLR_Restart): updates where the lr returns to lr * weight
    step_sizes:     step_restart: decay by gamma every step_size updates (one per segment, or one for all)
    clear_state:    step_restart / multistep_restart: reset the optimizer's moments at each restart (victorca25)
    pct_start, div_factor, final_div_factor, anneal_strategy ('cos'|'linear'), three_phase:  onecycle (torch OneCycleLR)
    plateau_mode ('auto'|'min'|'max'), plateau_factor, plateau_patience, plateau_threshold, plateau_threshold_mode
                    ('rel'|'abs'), plateau_cooldown:  plateau (torch ReduceLROnPlateau on the validation metric)
    clip_grad_norm: 0 = off; else global-norm clipping
    accumulate:     k > 1 averages k micro-batches per update (optax.MultiSteps)
    weight_lr_power: schedule-free's weighting of the averaged iterate
    loss_scale_init, loss_scale_interval, loss_scale_growth, loss_scale_backoff:  float16 dynamic loss scaling
    ema_decay:      (generator only) see `ema_update`; 0 disables

Schedules count real optimizer updates (0-based): under accumulation the trainer's step s is update s // k. Each
section builds its own schedule, so G (`optim`) and D (`optim_d`) may differ. Schedule-free optimizers take only
warm-up + constant; validation and export use `eval_params`. Numbers written as strings ("2e-4") are cast where
the run's config is read (`jaxsr.train.config.resolve`).

Wiring a trainer needs, besides `build_optimizer(cfg, total_steps, loss_scaling=..., freeze=...)`:
- plateau: the rule's state (`PlateauState`) lives in the optimizer state, so it is checkpointed with it. After
  each validation: `opt_state = feed_plateau(cfg, opt_state, metric)`. The lr actually used (and to log) is
  `learning_rate_schedule(cfg, total)(update) * lr_scale(cfg, opt_state)`.
- float16: `build_optimizer(..., loss_scaling=True)`; differentiate `scale_loss(opt_state, loss)`; the transform
  unscales, skips a non-finite update and adapts the scale by itself. Keep the new opt_state even on an overflow
  (that is where the smaller scale is): `loss_scale_state(opt_state).overflowed` tells an overflow apart from a
  diverging loss, `consecutive_overflows` counts them.
- FreezeD: `build_optimizer(cfg_d, total, freeze=frozen_blocks(arch, k))`.
- schedule-free: `is_schedule_free(cfg)`; validate and export `eval_params(opt_state, params)`.
"""
import re
from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from optax.contrib import ScheduleFreeState, schedule_free, schedule_free_eval_params

NAMES = ("adamw", "adam", "adan", "schedule_free_adamw", "adan_schedule_free")
SCHEDULE_FREE = ("schedule_free_adamw", "adan_schedule_free")
SCHEDULES = ("constant", "cosine", "multistep", "cosine_restart", "multistep_restart", "step_restart", "onecycle", "plateau")


def default_config(lr=2e-4, ema_decay=0.999):
    """Every field of an optimizer section; ema_decay=None leaves it out (the discriminator has no EMA)."""
    c = ml_collections.ConfigDict(type_safe=False)  # numbers may be given as strings, cast by train.config.resolve
    c.name = "adamw"
    c.lr = lr
    c.betas = (0.9, 0.99)  # BasicSR/Real-ESRGAN's Adam betas
    c.eps = 1e-8
    c.weight_decay = 0.0
    c.adan_proximal = True
    c.sf_momentum = 0.9  # schedulefree.ScheduleFreeWrapper's default
    c.schedule = "constant"
    c.warmup_steps = 0
    c.warmup = "linear"
    c.min_lr = 1e-7
    c.milestones = ()
    c.gamma = 0.5
    c.periods = ()
    c.restarts = ()
    c.restart_weights = ()
    c.step_sizes = ()
    c.clear_state = False
    c.pct_start = 0.3  # onecycle: torch OneCycleLR's defaults
    c.div_factor = 25.0
    c.final_div_factor = 1e4
    c.anneal_strategy = "cos"
    c.three_phase = False
    c.plateau_mode = "auto"  # 'min' | 'max'; the trainer makes 'auto' the direction of val.best_metric
    c.plateau_factor = 0.5
    c.plateau_patience = 10
    c.plateau_threshold = 1e-4
    c.plateau_threshold_mode = "rel"
    c.plateau_cooldown = 0
    c.clip_grad_norm = 0.0
    c.accumulate = 1
    c.weight_lr_power = 2.0
    c.loss_scale_init = 2.0**16  # torch.amp.GradScaler's defaults
    c.loss_scale_interval = 2000
    c.loss_scale_growth = 2.0
    c.loss_scale_backoff = 0.5
    if ema_decay is not None:
        c.ema_decay = ema_decay
    return c


def is_schedule_free(cfg):
    """Whether validation/export must use `eval_params` (and the EMA is redundant)."""
    return cfg["name"] in SCHEDULE_FREE


# ---------------------------------------------------------------- schedules


def _floats(values):
    return [float(v) for v in values]


def _weights(cfg, n):
    w = _floats(cfg["restart_weights"]) or [1.0] * n
    if len(w) != n:
        raise ValueError(f"optim.restart_weights needs {n} values (one per restart/period), got {len(w)}")
    return w


def _warmup(main, steps, shape):
    """main(k) * w(k / steps) for k < steps; w = t (linear) or (1 - cos(pi t)) / 2 (cosine)."""
    if shape not in ("linear", "cosine"):
        raise ValueError(f"optim.warmup must be 'linear' or 'cosine', got {shape!r}")
    if not steps:
        return main

    def sched(count):
        t = jnp.minimum(jnp.asarray(count, jnp.float32) / steps, 1.0)
        w = t if shape == "linear" else 0.5 * (1.0 - jnp.cos(jnp.pi * t))
        return main(count) * jnp.where(count >= steps, 1.0, w)

    return sched


def _cosine_restart(lr, periods, weights, eta_min):
    """BasicSR CosineAnnealingRestartLR: in cycle i, k in (c_{i-1}, c_i] (c = cumulative periods),
    eta_min + w_i (lr - eta_min) (1 + cos(pi (k - c_{i-1}) / p_i)) / 2; held at the last value after the end."""
    cum = np.cumsum(periods)
    starts = jnp.asarray(np.concatenate([[0], cum[:-1]]), jnp.float32)
    cum_j, p, w = jnp.asarray(cum), jnp.asarray(periods, jnp.float32), jnp.asarray(weights, jnp.float32)

    def sched(count):
        k = jnp.minimum(count, int(cum[-1]))
        i = jnp.searchsorted(cum_j, k, side="left")
        return eta_min + w[i] * 0.5 * (lr - eta_min) * (1 + jnp.cos(jnp.pi * (k - starts[i]) / p[i]))

    return sched


def _multistep_restart(lr, milestones, gamma, restarts, weights):
    """BasicSR MultiStepRestartLR: lr * w_r * gamma^(milestones m, counted with multiplicity, with r < m <= k),
    r the latest restart <= k (weight 1 and milestones from 0 on before the first)."""
    ms = jnp.asarray(sorted(int(m) for m in milestones) or [-1], jnp.int32)
    rs = jnp.asarray([-1] + [int(r) for r in restarts], jnp.int32)
    ws = jnp.asarray([1.0] + weights, jnp.float32)

    def sched(count):
        i = jnp.sum(rs <= count) - 1  # the latest restart (index 0: none yet)
        passed = jnp.sum((ms > rs[i]) & (ms <= count))
        return lr * ws[i] * gamma ** passed.astype(jnp.float32)

    return sched


def _step_restart(lr, step_sizes, gamma, restarts, weights):
    """victorca25 StepLR_Restart: from restart j at r_j, lr * w_j * gamma^((k - r_j) // step_sizes[j + 1]);
    before the first restart, weight 1 and step_sizes[0]."""
    n = len(restarts) + 1
    sizes = step_sizes * n if len(step_sizes) == 1 else step_sizes
    if len(sizes) != n or min(sizes, default=0) <= 0:
        raise ValueError(f"optim.step_sizes needs 1 or {n} positive values (one per segment), got {step_sizes}")
    rs = jnp.asarray([0] + [int(r) for r in restarts], jnp.int32)
    ws = jnp.asarray([1.0] + weights, jnp.float32)
    ss = jnp.asarray(sizes, jnp.int32)

    def sched(count):
        j = jnp.sum(rs <= count) - 1
        return lr * ws[j] * gamma ** ((count - rs[j]) // ss[j]).astype(jnp.float32)

    return sched


def _onecycle(lr, total, pct_start, div_factor, final_div_factor, anneal, three_phase):
    """torch OneCycleLR (without momentum cycling): phases end at pct*T - 1 (and 2 pct*T - 2), then T - 1.

    optax.cosine_onecycle_schedule puts the phase ends at pct*T and T instead (tests/test_optim.py shows the gap)."""
    if anneal not in ("cos", "linear"):
        raise ValueError(f"optim.anneal_strategy must be 'cos' or 'linear', got {anneal!r}")
    initial = lr / div_factor
    final = initial / final_div_factor
    if three_phase:
        phases = [(pct_start * total - 1, initial, lr), (2 * pct_start * total - 2, lr, initial), (total - 1, initial, final)]
    else:
        phases = [(pct_start * total - 1, initial, lr), (total - 1, lr, final)]

    def interp(start, end, pct):
        if anneal == "cos":
            return end + (start - end) / 2 * (1 + jnp.cos(jnp.pi * pct))
        return (end - start) * pct + start

    def sched(count):
        k = jnp.minimum(jnp.asarray(count, jnp.float32), total - 1)
        begins = [0.0] + [end for end, _, _ in phases[:-1]]
        out = None
        for (end, a, b), begin in reversed(list(zip(phases, begins))):  # the first phase with k <= end, else the last
            value = interp(a, b, (k - begin) / (end - begin))
            out = value if out is None else jnp.where(k <= end, value, out)
        return out

    return sched


def learning_rate_schedule(cfg, total_steps):
    """lr as a function of the number of completed optimizer updates (0-based), before any plateau reduction."""
    lr, warmup, kind = float(cfg["lr"]), int(cfg["warmup_steps"]), cfg["schedule"]
    gamma = float(cfg["gamma"])
    if kind == "constant" or kind == "plateau":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        if total_steps <= warmup:
            raise ValueError(f"optim.schedule='cosine' needs total_steps ({total_steps}) > optim.warmup_steps ({warmup})")
        decay = optax.cosine_decay_schedule(lr, total_steps - warmup, alpha=float(cfg["min_lr"]) / lr)
        main = lambda count: decay(jnp.maximum(count - warmup, 0))  # noqa: E731
    elif kind == "multistep":
        counts = Counter(int(m) for m in cfg["milestones"])
        main = optax.piecewise_constant_schedule(lr, {m: gamma**c for m, c in counts.items()})
    elif kind == "cosine_restart":
        periods = [int(p) for p in cfg["periods"]] or [total_steps]
        main = _cosine_restart(lr, periods, _weights(cfg, len(periods)), float(cfg["min_lr"]))
    elif kind == "multistep_restart":
        restarts = [int(r) for r in cfg["restarts"]]
        main = _multistep_restart(lr, cfg["milestones"], gamma, restarts, _weights(cfg, len(restarts)))
    elif kind == "step_restart":
        restarts = [int(r) for r in cfg["restarts"]]
        main = _step_restart(lr, [int(s) for s in cfg["step_sizes"]], gamma, restarts, _weights(cfg, len(restarts)))
    elif kind == "onecycle":
        main = _onecycle(lr, total_steps, float(cfg["pct_start"]), float(cfg["div_factor"]), float(cfg["final_div_factor"]),
                         cfg["anneal_strategy"], bool(cfg["three_phase"]))
    else:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {kind!r}")
    return _warmup(main, warmup, cfg["warmup"])


# ---------------------------------------------------------------- ReduceLROnPlateau


class PlateauState(NamedTuple):
    lr: jax.Array  # the lr the rule has reached (optim.lr until the first reduction)
    best: jax.Array
    num_bad: jax.Array  # validations without improvement
    cooldown: jax.Array  # validations left before bad ones count again


class ReduceLROnPlateau(NamedTuple):
    """torch.optim.lr_scheduler.ReduceLROnPlateau as a pure rule on `PlateauState` (one `update` per validation)."""

    lr0: float
    mode: str = "min"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0
    eps: float = 1e-8

    def init(self):
        best = jnp.inf if self.mode == "min" else -jnp.inf
        return PlateauState(jnp.float32(self.lr0), jnp.float32(best), jnp.int32(0), jnp.int32(0))

    def _better(self, a, best):
        if self.mode == "min":
            return a < (best * (1 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (1 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def update(self, state, metric):
        a = jnp.asarray(metric, jnp.float32)
        better = self._better(a, state.best)
        best = jnp.where(better, a, state.best)
        num_bad = jnp.where(better, 0, state.num_bad + 1)
        cooling = state.cooldown > 0
        cooldown = jnp.where(cooling, state.cooldown - 1, state.cooldown)
        num_bad = jnp.where(cooling, 0, num_bad)
        reduce = num_bad > self.patience
        new_lr = jnp.maximum(state.lr * self.factor, self.min_lr)
        lr = jnp.where(reduce & (state.lr - new_lr > self.eps), new_lr, state.lr)
        return PlateauState(lr, best, jnp.where(reduce, 0, num_bad), jnp.where(reduce, self.cooldown, cooldown).astype(jnp.int32))

    def lr(self, state):
        return state.lr


def plateau_rule(cfg):
    """The section's ReduceLROnPlateau (its `init/update/lr`)."""
    mode, tmode = cfg["plateau_mode"], cfg["plateau_threshold_mode"]
    if mode == "auto":
        raise ValueError("optim.plateau_mode='auto' takes the direction of val.best_metric, which only a training run "
                         "knows (jaxsr.train.config.resolve sets it): give 'min' or 'max' here")
    if mode not in ("min", "max") or tmode not in ("rel", "abs"):
        raise ValueError(f"optim.plateau_mode must be 'min'|'max' and plateau_threshold_mode 'rel'|'abs', got {mode!r}, {tmode!r}")
    return ReduceLROnPlateau(float(cfg["lr"]), mode, float(cfg["plateau_factor"]), int(cfg["plateau_patience"]),
                             float(cfg["plateau_threshold"]), tmode, int(cfg["plateau_cooldown"]), float(cfg["min_lr"]))


def _is(kind):
    return lambda x: isinstance(x, kind)


def _find(opt_state, kind):
    return [x for x in jax.tree.leaves(opt_state, is_leaf=_is(kind)) if isinstance(x, kind)]


def feed_plateau(cfg, opt_state, metric):
    """The optimizer state after one validation with value `metric` (unchanged without a plateau schedule)."""
    rule = plateau_rule(cfg)
    return jax.tree.map(lambda x: rule.update(x, metric) if isinstance(x, PlateauState) else x, opt_state,
                        is_leaf=_is(PlateauState))


def current_lr(cfg, total_steps, opt_state, offset=0):
    """The lr the next update applies, read from the optimizer state: the schedule at the number of updates the state
    has applied (micro-steps and skipped updates, NaN or float16 overflow, do not count), times any plateau reduction.
    `offset` as in `build_optimizer`."""
    sched = learning_rate_schedule(cfg, total_steps)
    if is_schedule_free(cfg):
        return sched(_find(opt_state, ScheduleFreeState)[0].step_count)  # from 1: optax and schedulefree warm up from k+1
    return sched(_find(opt_state, DescendState)[0].count + offset) * lr_scale(cfg, opt_state)


def lr_scale(cfg, opt_state):
    """The plateau's multiplier on the schedule (1 without one): what to log as lr is schedule(update) * this."""
    found = _find(opt_state, PlateauState)
    return found[0].lr / float(cfg["lr"]) if found else jnp.float32(1.0)


# ---------------------------------------------------------------- the update step and Adan


class DescendState(NamedTuple):
    count: jax.Array
    plateau: Any  # PlateauState, or optax.EmptyState() without a plateau schedule


def _descend(learning_rate, weight_decay=0.0, proximal=False, plateau=None):
    """-lr * (u + wd * p), divided by (1 + lr * wd) for Adan's proximal (official default) form; lr is the schedule
    at this update times the plateau rule's lr / lr0 (the rule's state is fed from outside, `feed_plateau`)."""

    def init(params):
        del params
        return DescendState(jnp.zeros([], jnp.int32), plateau.init() if plateau is not None else optax.EmptyState())

    def update(updates, state, params=None):
        lr = learning_rate(state.count)
        if plateau is not None:
            lr = lr * state.plateau.lr / plateau.lr0
        scale = 1.0 + lr * weight_decay if proximal else 1.0
        if weight_decay:
            out = jax.tree.map(lambda u, p: -lr * (u + weight_decay * p) / scale, updates, params)
        else:
            out = jax.tree.map(lambda u: -lr * u, updates)
        return out, DescendState(optax.safe_increment(state.count), state.plateau)

    return optax.GradientTransformation(init, update)


class ScaleByAdanState(NamedTuple):
    count: jax.Array
    m: optax.Updates  # EMA of gradients
    v: optax.Updates  # EMA of gradient differences
    n: optax.Updates  # EMA of squared corrected gradients
    prev_grad: optax.Updates


def scale_by_adan(b1=0.98, b2=0.92, b3=0.99, eps=1e-8):
    """Adan's direction as in the official code (sail-sg/Adan, betas as weights on the old value).

    optax 0.2.8's `scale_by_adan` weighs the gradient difference by (1 - b2) both in n and in the
    update; the official algorithm weighs it by b2:
        d = g - g_prev (0 at the first step)
        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) d;  n = b3 n + (1-b3) (g + b2 d)^2
        u = (m / (1-b1^t) + b2 v / (1-b2^t)) / (sqrt(n / (1-b3^t)) + eps)
    """

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return ScaleByAdanState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros(), zeros())

    def update(grads, state, params=None):
        del params
        first = state.count == 0
        d = jax.tree.map(lambda g, p: jnp.where(first, 0.0, g - p), grads, state.prev_grad)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.m, grads)
        v = jax.tree.map(lambda v, d: b2 * v + (1 - b2) * d, state.v, d)
        n = jax.tree.map(lambda n, g, d: b3 * n + (1 - b3) * (g + b2 * d) ** 2, state.n, grads, d)
        t = optax.safe_increment(state.count)
        mh, vh, nh = (optax.tree.bias_correction(x, b, t) for x, b in ((m, b1), (v, b2), (n, b3)))
        u = jax.tree.map(lambda m, v, n: (m + b2 * v) / (jnp.sqrt(n) + eps), mh, vh, nh)
        return u, ScaleByAdanState(t, m, v, n, grads)

    return optax.GradientTransformation(init, update)


def adan(learning_rate, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, weight_decay=0.0, proximal=True):
    """Adan as published (sail-sg/Adan), correcting optax 0.2.8's gradient-difference weight."""
    lr = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
    return optax.chain(scale_by_adan(b1, b2, b3, eps), _descend(lr, weight_decay, proximal))


class ResetState(NamedTuple):
    count: jax.Array
    inner_state: Any


def reset_at(inner, steps):
    """`inner` with its state re-initialised before the updates numbered `steps` (victorca25's clear_state:
    torch's `optimizer.state = defaultdict(dict)` at a restart: moments, bias correction and Adan's previous
    gradient start over; the lr schedule does not, it lives outside `inner`)."""
    at = jnp.asarray(sorted(int(s) for s in steps if int(s) > 0) or [-1], jnp.int32)

    def init(params):
        return ResetState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        fresh = jnp.any(state.count == at)
        inner_state = jax.tree.map(lambda a, b: jnp.where(fresh, a, b), inner.init(updates), state.inner_state)
        out, inner_state = inner.update(updates, inner_state, params)
        return out, ResetState(optax.safe_increment(state.count), inner_state)

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------- schedule-free


def _schedule_free(direction, learning_rate, warmup_steps, warmup, weight_decay, b1, weight_lr_power):
    """optax.contrib.schedule_free around `direction`, decay at y, and one 1-based warm-up for both the z-step and
    the averaging weights, as facebookresearch `schedulefree` uses (optax's own shortcut runs its first z-step at lr 0)."""
    sched = _warmup(optax.constant_schedule(float(learning_rate)), int(warmup_steps), warmup)
    base = optax.chain(
        direction,
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(lambda count: sched(count + 1)),
    )
    return schedule_free(base, sched, b1=b1, weight_lr_power=weight_lr_power)


def schedule_free_adamw(learning_rate, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, weight_lr_power=2.0,
                        warmup="linear"):
    """Schedule-free AdamW matching facebookresearch `schedulefree.AdamWScheduleFree` step for step.

    optax.contrib.schedule_free_adamw evaluates the warmup at step_count (from 1) for the averaging
    weights but at count (from 0) in its inner scale_by_learning_rate, so its first z-step has lr 0;
    the reference uses lr*(k+1)/warmup for both. We feed both the same, 1-based schedule.
    """
    direction = optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True)
    return _schedule_free(direction, learning_rate, warmup_steps, warmup, weight_decay, b1, weight_lr_power)


def adan_schedule_free(learning_rate, warmup_steps=0, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, weight_decay=0.0, momentum=0.9,
                       weight_lr_power=2.0, warmup="linear"):
    """Adan's three moments as the base step of schedule-free averaging (Defazio et al. 2024, arXiv 2405.15682, on
    Xie et al. 2022, arXiv 2208.06677): z <- z - lr (u_adan(grad at y) + wd y); x <- average of z; y = lerp(z, x,
    momentum). Equals `schedulefree.ScheduleFreeWrapper(pytorch_optimizer.Adan, momentum, weight_decay_at_y)`.

    Not traiNNer-redux's `AdanScheduleFree` (nor neosr's `adan_sf`): their y-step does not keep
    y = b1 x + (1 - b1) z, so their eval point is not the schedule-free average.
    """
    return _schedule_free(scale_by_adan(b1, b2, b3, eps), learning_rate, warmup_steps, warmup, weight_decay, momentum,
                          weight_lr_power)


def eval_params(opt_state, params):
    """The parameters to validate and export: schedule-free's x sequence; other optimizers: params as is.

    Finds the schedule-free state through chains and MultiSteps. For NNX, pass plain arrays (nnx.state(model,
    nnx.Param) with Variables stripped) and the matching optimizer state.
    """
    found = _find(opt_state, ScheduleFreeState)
    return schedule_free_eval_params(found[0], params) if found else params


# ---------------------------------------------------------------- float16 loss scaling


class LossScaleState(NamedTuple):
    scale: jax.Array  # the loss is multiplied by this before differentiation
    growth_tracker: jax.Array  # finite updates since the scale last changed
    inner: optax.ApplyIfFiniteState  # skips non-finite updates; counts them

    @property
    def overflowed(self):
        """The last update's gradients overflowed: it was skipped and the scale backed off."""
        return ~self.inner.last_finite

    @property
    def consecutive_overflows(self):
        return self.inner.notfinite_count


def dynamic_loss_scale(inner, init_scale=2.0**16, growth_interval=2000, growth_factor=2.0, backoff_factor=0.5):
    """Dynamic loss scaling for float16 as torch.amp.GradScaler does it: gradients arrive scaled (differentiate
    `scale_loss(opt_state, loss)`), are unscaled, and a non-finite update is skipped (optax.apply_if_finite) while
    the scale is multiplied by `backoff_factor`; after `growth_interval` finite updates in a row it grows by
    `growth_factor` (if that stays finite)."""
    guarded = optax.apply_if_finite(inner, max_consecutive_errors=np.iinfo(np.int32).max)

    def init(params):
        return LossScaleState(jnp.float32(init_scale), jnp.int32(0), guarded.init(params))

    def update(grads, state, params=None):
        unscaled = jax.tree.map(lambda g: g / state.scale.astype(g.dtype), grads)
        out, inner_state = guarded.update(unscaled, state.inner, params)
        finite = inner_state.last_finite
        tracker = state.growth_tracker + 1
        grown = state.scale * growth_factor
        grow = finite & (tracker >= growth_interval)
        scale = jnp.where(finite, jnp.where(grow & jnp.isfinite(grown), grown, state.scale), state.scale * backoff_factor)
        tracker = jnp.where(finite & ~grow, tracker, 0).astype(jnp.int32)
        return out, LossScaleState(scale, tracker, inner_state)

    return optax.GradientTransformation(init, update)


def loss_scale_state(opt_state):
    """The LossScaleState inside an optimizer state, or None without loss scaling."""
    found = _find(opt_state, LossScaleState)
    return found[0] if found else None


def scale_loss(opt_state, loss):
    """The loss to differentiate: times the current loss scale (as is without loss scaling)."""
    s = loss_scale_state(opt_state)
    return loss if s is None else loss * s.scale


# ---------------------------------------------------------------- FreezeD


_BLOCK = {"unet": re.compile(r"conv(\d+)"), "vgg": re.compile(r"(?:conv|bn)(\d+)_\d+")}


def frozen_blocks(arch, k):
    """params -> bool tree: True for the first k blocks of a discriminator (FreezeD, Mo et al. 2020, arXiv
    2002.10964), named as the modules name them: U-Net conv0..conv{k-1}; VGG conv{i}_*, bn{i}_* for i < k."""
    if arch not in _BLOCK:
        raise ValueError(f"FreezeD knows the discriminators {sorted(_BLOCK)}, got {arch!r}")
    pattern = _BLOCK[arch]

    def labels(params):
        def frozen(path, _):
            m = pattern.fullmatch(str(getattr(path[0], "key", getattr(path[0], "name", ""))))
            return bool(m) and int(m.group(1)) < k

        return jax.tree_util.tree_map_with_path(frozen, params)

    return labels


def block_count(arch, params):
    """How many blocks `frozen_blocks` can freeze in these discriminator params."""
    pattern = _BLOCK[arch]
    keys = (str(getattr(p[0], "key", getattr(p[0], "name", ""))) for p, _ in jax.tree_util.tree_leaves_with_path(params))
    return len({m.group(1) for m in map(pattern.fullmatch, keys) if m})


def _freeze(tx, frozen):
    """tx on the trainable leaves, exactly zero updates on the frozen ones."""
    labels = lambda params: jax.tree.map(lambda f: "frozen" if f else "train", frozen(params))  # noqa: E731
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# ---------------------------------------------------------------- EMA and the builder


def ema_update(ema_params, params, decay):
    """ema <- decay * ema + (1 - decay) * params (BasicSR's model_ema), pure and jit-able."""
    return optax.incremental_update(params, ema_params, step_size=1.0 - decay)


def build_optimizer(cfg, total_steps, *, loss_scaling=False, freeze=None, offset=0) -> optax.GradientTransformation:
    """The optax transformation for an optimizer section (schema in the module docstring); for G and D alike.

    loss_scaling: float16 compute (`dynamic_loss_scale`, outermost). freeze: `frozen_blocks(arch, k)` for FreezeD.
    offset: the update number the first update is read at in the schedule (and restarts): a discriminator that
    joins at gan.start_step follows its schedule by train step, as BasicSR steps every scheduler every iteration.
    Inside out: the optimizer, clipping, FreezeD, accumulation, loss scaling.
    """
    name, lr, betas, eps, wd = cfg["name"], float(cfg["lr"]), tuple(cfg["betas"]), cfg["eps"], cfg["weight_decay"]
    if name not in NAMES:
        raise ValueError(f"optim.name must be one of {NAMES}, got {name!r}")
    want = 3 if "adan" in name else 2
    if len(betas) != want:
        example = "(0.98, 0.92, 0.99)" if want == 3 else "(0.9, 0.99)"
        raise ValueError(f"optim.betas must have {want} values for {name}, e.g. {example}; got {betas}")
    if name in SCHEDULE_FREE:
        if cfg["schedule"] != "constant":
            raise ValueError(f"{name} is schedule-free: set optim.schedule='constant' (warmup_steps still applies)")
        common = dict(warmup_steps=int(cfg["warmup_steps"]), eps=eps, weight_decay=wd, weight_lr_power=cfg["weight_lr_power"],
                      warmup=cfg["warmup"])
        if name == "schedule_free_adamw":
            tx = schedule_free_adamw(lr, b1=betas[0], b2=betas[1], **common)
        else:
            tx = adan_schedule_free(lr, b1=betas[0], b2=betas[1], b3=betas[2], momentum=cfg["sf_momentum"], **common)
    else:
        base = learning_rate_schedule(cfg, total_steps)
        sched = (lambda count: base(count + offset)) if offset else base
        plateau = plateau_rule(cfg) if cfg["schedule"] == "plateau" else None
        if name == "adan":
            direction, step = scale_by_adan(*betas, eps), _descend(sched, wd, bool(cfg["adan_proximal"]), plateau)
        else:
            direction = optax.scale_by_adam(*betas, eps)
            step = _descend(sched, wd if name == "adamw" else 0.0, False, plateau)
        if cfg["clear_state"]:
            if cfg["schedule"] not in ("step_restart", "multistep_restart"):
                raise ValueError("optim.clear_state applies to the restarts of schedule='step_restart' or 'multistep_restart'")
            direction = reset_at(direction, [int(r) - offset for r in cfg["restarts"]])
        tx = optax.chain(direction, step)
    if cfg["clip_grad_norm"] > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg["clip_grad_norm"]), tx)
    if freeze is not None:
        tx = _freeze(tx, freeze)
    if int(cfg["accumulate"]) > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(cfg["accumulate"])).gradient_transformation()
    if loss_scaling:
        tx = dynamic_loss_scale(tx, float(cfg["loss_scale_init"]), int(cfg["loss_scale_interval"]),
                                float(cfg["loss_scale_growth"]), float(cfg["loss_scale_backoff"]))
    return tx
