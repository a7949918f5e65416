"""Learning-rate schedules: the lr each optimizer update applies, as a function of the update count and, for a
plateau schedule, of the validations fed so far.

Kept apart from the optimizers so that a schedule can be read (`learning_rate_schedule`, `current_lr`), tested against
its torch/BasicSR reference and fed (`feed_plateau`) without the optax chain that applies it.

Fields of an optimizer section (`config.optim`, `config.optim_d`) read here:
    schedule:       one of `SCHEDULES`: 'constant' | 'cosine' | 'multistep' | 'cosine_restart' | 'multistep_restart' |
                    'step_restart' | 'onecycle' | 'plateau'
    warmup_steps, warmup:  lr * w(k / warmup_steps) in front of any schedule, w = t ('linear') or (1 - cos(pi t)) / 2
    min_lr:         the value a cosine anneals to: cosine's end value, cosine_restart's eta_min
    milestones, gamma:  multistep(_restart): lr * gamma^(milestones passed); also step_restart's gamma
    periods, period_weights:  cosine_restart (BasicSR CosineAnnealingRestartLR): cycle lengths, and the peak weight
                    of each period, the first included (one per period)
    restarts, restart_weights:  multistep_restart (BasicSR MultiStepRestartLR) and step_restart (victorca25
                    StepLR_Restart): updates where the lr returns to lr * weight (one weight per restart; the
                    segment before the first restart has weight 1)
    step_sizes:     step_restart: decay by gamma every step_size updates (one per segment, or one for all)
    clear_state:    step_restart / multistep_restart: reset the optimizer's moments at each restart (victorca25;
                    applied by `build_optimizer`)
    pct_start, div_factor, final_div_factor, anneal_strategy ('cos'|'linear'), three_phase:  onecycle (torch OneCycleLR)
    plateau_mode ('auto'|'min'|'max'), plateau_factor, plateau_patience, plateau_threshold, plateau_threshold_mode
                    ('rel'|'abs'), plateau_cooldown, plateau_min_lr (the floor of the reductions):  plateau (torch
                    ReduceLROnPlateau on the validation metric)
    linear_steps, linear_decay_steps:  linear (junyanz's pix2pix/CycleGAN 'linear' lr_policy, in updates for epochs):
                    lr for linear_steps updates, then linearly towards 0 over linear_decay_steps

Schedules count real optimizer updates (0-based): under accumulation the trainer's step s is update s // k.
A plateau rule's state (`PlateauState`) lives in the optimizer state, so it is checkpointed with it; after each
validation: `opt_state = feed_plateau(cfg, opt_state, metric)`. The lr to log is `current_lr(cfg, total, opt_state)`.
"""
from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import ScheduleFreeState


def default_fields():
    """The schedule fields of an optimizer section and their defaults, in the section's order."""
    return dict(
        schedule="constant",
        warmup_steps=0,
        warmup="linear",
        min_lr=1e-7,
        milestones=(),
        gamma=0.5,
        periods=(),
        period_weights=(),
        restarts=(),
        restart_weights=(),
        step_sizes=(),
        clear_state=False,
        pct_start=0.3,  # onecycle: torch OneCycleLR's defaults
        div_factor=25.0,
        final_div_factor=1e4,
        anneal_strategy="cos",
        three_phase=False,
        plateau_mode="auto",  # 'min' | 'max'; the trainer makes 'auto' the direction of val.best_metric
        plateau_factor=0.5,
        plateau_patience=10,
        plateau_threshold=1e-4,
        plateau_threshold_mode="rel",
        plateau_cooldown=0,
        plateau_min_lr=1e-7,
        linear_steps=0,  # linear (pix2pix/CycleGAN's 'linear' lr_policy): updates at lr (n_epochs), then
        linear_decay_steps=0,  # updates decaying to 0 (n_epochs_decay); both 0: total_steps halved
    )


# ---------------------------------------------------------------- the shapes


def _floats(values):
    return [float(v) for v in values]


def _weights(cfg, field, n, what):
    w = _floats(cfg[field]) or [1.0] * n
    if len(w) != n:
        raise ValueError(f"optim.{field} needs {n} values ({what}), got {len(w)}")
    return w


def with_warmup(main, steps, shape):
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

    optax.cosine_onecycle_schedule puts the phase ends at pct*T and T instead (tests/test_schedules.py shows the gap)."""
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


# ---------------------------------------------------------------- the table: (cfg, total_steps) -> schedule before warm-up


def _refuse_other_weights(cfg, kind):
    """restart_weights (one per restart) and period_weights (one per period, the first included) are different
    lists: a config that sets the other schedule's one alone meant this one."""
    if kind == "cosine_restart" and len(cfg["restart_weights"]) and not len(cfg["period_weights"]):
        raise ValueError("optim.restart_weights is for multistep_restart/step_restart (one per restart); cosine_restart's "
                         "weights, one per period including the first, are optim.period_weights")
    if kind != "cosine_restart" and len(cfg["period_weights"]) and not len(cfg["restart_weights"]):
        raise ValueError(f"optim.period_weights is for cosine_restart (one per period); {kind}'s weights, one per restart, "
                         "are optim.restart_weights")


def _constant(cfg, total_steps):
    return optax.constant_schedule(float(cfg["lr"]))


def _cosine(cfg, total_steps):
    lr, warmup = float(cfg["lr"]), int(cfg["warmup_steps"])
    if total_steps <= warmup:
        raise ValueError(f"optim.schedule='cosine' needs total_steps ({total_steps}) > optim.warmup_steps ({warmup})")
    decay = optax.cosine_decay_schedule(lr, total_steps - warmup, alpha=float(cfg["min_lr"]) / lr)
    return lambda count: decay(jnp.maximum(count - warmup, 0))


def _multistep(cfg, total_steps):
    counts = Counter(int(m) for m in cfg["milestones"])
    gamma = float(cfg["gamma"])
    return optax.piecewise_constant_schedule(float(cfg["lr"]), {m: gamma**c for m, c in counts.items()})


def _cosine_restarts(cfg, total_steps):
    _refuse_other_weights(cfg, "cosine_restart")
    periods = [int(p) for p in cfg["periods"]] or [total_steps]
    weights = _weights(cfg, "period_weights", len(periods), "one per period, the first included")
    return _cosine_restart(float(cfg["lr"]), periods, weights, float(cfg["min_lr"]))


def _restarts(cfg, kind):
    _refuse_other_weights(cfg, kind)
    restarts = [int(r) for r in cfg["restarts"]]
    return restarts, _weights(cfg, "restart_weights", len(restarts), "one per restart")


def _multistep_restarts(cfg, total_steps):
    restarts, weights = _restarts(cfg, "multistep_restart")
    return _multistep_restart(float(cfg["lr"]), cfg["milestones"], float(cfg["gamma"]), restarts, weights)


def _step_restarts(cfg, total_steps):
    restarts, weights = _restarts(cfg, "step_restart")
    return _step_restart(float(cfg["lr"]), [int(s) for s in cfg["step_sizes"]], float(cfg["gamma"]), restarts, weights)


def _onecycle_from(cfg, total_steps):
    return _onecycle(float(cfg["lr"]), total_steps, float(cfg["pct_start"]), float(cfg["div_factor"]),
                     float(cfg["final_div_factor"]), cfg["anneal_strategy"], bool(cfg["three_phase"]))


SCHEDULES = {
    "constant": _constant,
    "cosine": _cosine,
    "multistep": _multistep,
    "cosine_restart": _cosine_restarts,
    "multistep_restart": _multistep_restarts,
    "step_restart": _step_restarts,
    "onecycle": _onecycle_from,
    "plateau": _constant,  # the reductions are applied by the optimizer from its PlateauState
}
SCHEDULES["linear"] = lambda cfg, total_steps: _linear(float(cfg["lr"]), *linear_lengths(cfg, total_steps))


def linear_lengths(cfg, total_steps):
    """(steps at lr, steps of decay) of the linear schedule: the config's, or total_steps halved where both are 0."""
    n, nd = int(cfg["linear_steps"]), int(cfg["linear_decay_steps"])
    if n < 0 or nd < 0:
        raise ValueError(f"optim.linear_steps and optim.linear_decay_steps must be >= 0, got {n} and {nd}")
    return (n, nd) if n or nd else (total_steps // 2, total_steps - total_steps // 2)


def _linear(lr, n, nd):
    """junyanz's lr_policy='linear' (models/networks.py get_scheduler, LambdaLR with epoch_count 1) with updates for
    epochs: lr * (1 - max(0, k + 1 - n) / (nd + 1)) at update k (0-based): n updates at lr, then nd decaying
    (lr * nd / (nd + 1) down to lr / (nd + 1)), 0 from update n + nd on."""

    def sched(count):
        k = jnp.asarray(count, jnp.float32)
        return lr * jnp.maximum(1.0 - jnp.maximum(0.0, k + 1.0 - n) / (nd + 1.0), 0.0)

    return sched


def learning_rate_schedule(cfg, total_steps):
    """lr as a function of the number of completed optimizer updates (0-based), before any plateau reduction."""
    kind = cfg["schedule"]
    if kind not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {tuple(SCHEDULES)}, got {kind!r}")
    return with_warmup(SCHEDULES[kind](cfg, total_steps), int(cfg["warmup_steps"]), cfg["warmup"])


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
                             float(cfg["plateau_threshold"]), tmode, int(cfg["plateau_cooldown"]), float(cfg["plateau_min_lr"]))


# ---------------------------------------------------------------- reading and feeding the lr in an optimizer state


class DescendState(NamedTuple):
    """The state of the step that applies the lr (`optimizers._descend`): updates applied, and the plateau's."""

    count: jax.Array
    plateau: Any  # PlateauState, or optax.EmptyState() without a plateau schedule


def _is(kind):
    return lambda x: isinstance(x, kind)


def _find(opt_state, kind):
    """The states of type `kind` inside an optimizer state (through chains, MultiSteps, masks, loss scaling)."""
    return [x for x in jax.tree.leaves(opt_state, is_leaf=_is(kind)) if isinstance(x, kind)]


def feed_plateau(cfg, opt_state, metric):
    """The optimizer state after one validation with value `metric` (unchanged without a plateau schedule)."""
    rule = plateau_rule(cfg)
    return jax.tree.map(lambda x: rule.update(x, metric) if isinstance(x, PlateauState) else x, opt_state,
                        is_leaf=_is(PlateauState))


def rescale_plateau(opt_state, factor):
    """The optimizer state with the plateau rule's lr times `factor`: a new optim.lr on resume that keeps the reductions
    made so far (the rule's lr is absolute)."""
    return jax.tree.map(lambda x: x._replace(lr=x.lr * factor) if isinstance(x, PlateauState) else x, opt_state,
                        is_leaf=_is(PlateauState))


def current_lr(cfg, total_steps, opt_state, offset=0):
    """The lr the next update applies, read from the optimizer state: the schedule at the number of updates the state
    has applied (micro-steps and skipped updates, NaN or float16 overflow, do not count), times any plateau reduction.
    `offset` as in `build_optimizer`."""
    sched = learning_rate_schedule(cfg, total_steps)
    schedule_free = _find(opt_state, ScheduleFreeState)
    if schedule_free:
        return sched(schedule_free[0].step_count)  # from 1: optax and schedulefree warm up from k+1
    return sched(_find(opt_state, DescendState)[0].count + offset) * lr_scale(cfg, opt_state)


def lr_scale(cfg, opt_state):
    """The plateau's multiplier on the schedule (1 without one): what to log as lr is schedule(update) * this."""
    found = _find(opt_state, PlateauState)
    return found[0].lr / float(cfg["lr"]) if found else jnp.float32(1.0)
