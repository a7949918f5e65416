"""Optimizers from the config: an optax chain plus EMA and schedule-free helpers.

Config schema (`config.optim`, and `config.optim_d` for the discriminator; `default_config()` has every field):
    name:           'adamw' | 'adam' | 'adan' | 'schedule_free_adamw'
    lr:             peak learning rate
    betas:          (b1, b2) for adam(w) and schedule-free; (b1, b2, b3) for adan, e.g. Adan's (0.98, 0.92, 0.99)
    eps:            added to the denominator
    weight_decay:   decoupled for adamw/schedule-free; adam adds nothing
    adan_proximal:  True: official Adan's default decay p <- (p - lr*u) / (1 + lr*wd); False: decoupled
    schedule:       'cosine' (warmup, then cosine to min_lr at total_steps) | 'constant' | 'multistep'
    warmup_steps:   linear from 0
    min_lr:         cosine end value
    milestones, gamma: multistep: lr * gamma^(number of milestones <= update count)
    clip_grad_norm: 0 = off; else global-norm clipping
    accumulate:     k > 1 averages k micro-batches per update (optax.MultiSteps)
    weight_lr_power: schedule-free's weighting of the averaged iterate
    ema_decay:      (generator only) see `ema_update`; 0 disables

Schedules count real optimizer updates: under accumulation the trainer's step s is update s // k.
Schedule-free AdamW allows only warmup + constant; validation and export use `eval_params`.
Numbers written as strings ("2e-4") are cast where the run's config is read (`jaxsr.train.config.resolve`).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from optax.contrib import ScheduleFreeState, schedule_free, schedule_free_eval_params

NAMES = ("adamw", "adam", "adan", "schedule_free_adamw")


def default_config(lr=2e-4, ema_decay=0.999):
    """Every field of an optimizer section; ema_decay=None leaves it out (the discriminator has no EMA)."""
    c = ml_collections.ConfigDict(type_safe=False)  # numbers may be given as strings, cast by train.config.resolve
    c.name = "adamw"
    c.lr = lr
    c.betas = (0.9, 0.99)  # BasicSR/Real-ESRGAN's Adam betas
    c.eps = 1e-8
    c.weight_decay = 0.0
    c.adan_proximal = True
    c.schedule = "constant"
    c.warmup_steps = 0
    c.min_lr = 1e-7
    c.milestones = ()
    c.gamma = 0.5
    c.clip_grad_norm = 0.0
    c.accumulate = 1
    c.weight_lr_power = 2.0
    if ema_decay is not None:
        c.ema_decay = ema_decay
    return c


def learning_rate_schedule(cfg, total_steps):
    """lr as a function of the number of completed optimizer updates (0-based)."""
    lr, warmup, kind = cfg["lr"], int(cfg["warmup_steps"]), cfg["schedule"]
    if kind == "cosine":
        if total_steps <= warmup:
            raise ValueError(f"optim.schedule='cosine' needs total_steps ({total_steps}) > optim.warmup_steps ({warmup})")
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps, cfg["min_lr"])
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "multistep":
        main = optax.piecewise_constant_schedule(lr, {int(m) - warmup: cfg["gamma"] for m in cfg["milestones"]})
    else:
        raise ValueError(f"optim.schedule must be 'cosine', 'constant' or 'multistep', got {kind!r}")
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
    return main


# ---------------------------------------------------------------- Adan


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


def _descend_with_decay(learning_rate, weight_decay, proximal):
    """-lr * (u + wd * p), divided by (1 + lr * wd) for Adan's proximal (official default) form."""

    def init(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        lr = learning_rate(state.count)
        scale = 1.0 + lr * weight_decay if proximal else 1.0
        out = jax.tree.map(lambda u, p: -lr * (u + weight_decay * p) / scale, updates, params)
        return out, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def adan(learning_rate, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, weight_decay=0.0, proximal=True):
    """Adan as published (sail-sg/Adan), correcting optax 0.2.8's gradient-difference weight."""
    lr = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
    return optax.chain(scale_by_adan(b1, b2, b3, eps), _descend_with_decay(lr, weight_decay, proximal))


# ---------------------------------------------------------------- schedule-free


def schedule_free_adamw(learning_rate, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, weight_lr_power=2.0):
    """Schedule-free AdamW matching facebookresearch `schedulefree.AdamWScheduleFree` step for step.

    optax.contrib.schedule_free_adamw evaluates the warmup at step_count (from 1) for the averaging
    weights but at count (from 0) in its inner scale_by_learning_rate, so its first z-step has lr 0;
    the reference uses lr*(k+1)/warmup for both. We feed both the same, 1-based schedule.
    """
    lr = float(learning_rate)
    if warmup_steps:
        sched = optax.warmup_constant_schedule(0.0, lr, int(warmup_steps))
    else:
        sched = optax.constant_schedule(lr)
    base = optax.chain(
        optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(lambda count: sched(count + 1)),
    )
    return schedule_free(base, sched, b1=b1, weight_lr_power=weight_lr_power)


def eval_params(opt_state, params):
    """The parameters to validate and export: schedule-free's x sequence; other optimizers: params as is.

    Finds the schedule-free state through chains and MultiSteps. For NNX, pass plain arrays (nnx.state(model,
    nnx.Param) with Variables stripped) and the matching optimizer state.
    """
    is_sf = lambda x: isinstance(x, ScheduleFreeState)  # noqa: E731
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_sf) if is_sf(x)]
    return schedule_free_eval_params(found[0], params) if found else params


# ---------------------------------------------------------------- EMA and the builder


def ema_update(ema_params, params, decay):
    """ema <- decay * ema + (1 - decay) * params (BasicSR's model_ema), pure and jit-able."""
    return optax.incremental_update(params, ema_params, step_size=1.0 - decay)


def build_optimizer(cfg, total_steps) -> optax.GradientTransformation:
    """The optax transformation for an optimizer section (schema in the module docstring); for G and D alike."""
    name, lr, betas, eps, wd = cfg["name"], cfg["lr"], tuple(cfg["betas"]), cfg["eps"], cfg["weight_decay"]
    if name not in NAMES:
        raise ValueError(f"optim.name must be one of {NAMES}, got {name!r}")
    want = 3 if name == "adan" else 2
    if len(betas) != want:
        example = "(0.98, 0.92, 0.99)" if name == "adan" else "(0.9, 0.99)"
        raise ValueError(f"optim.betas must have {want} values for {name}, e.g. {example}; got {betas}")
    if name == "schedule_free_adamw":
        if cfg["schedule"] != "constant":
            raise ValueError("schedule-free AdamW replaces the schedule: set optim.schedule='constant' (warmup_steps still applies)")
        tx = schedule_free_adamw(lr, int(cfg["warmup_steps"]), *betas, eps, wd, cfg["weight_lr_power"])
    else:
        sched = learning_rate_schedule(cfg, total_steps)
        if name == "adan":
            tx = adan(sched, *betas, eps, wd, bool(cfg["adan_proximal"]))
        elif name == "adamw":
            tx = optax.adamw(sched, *betas, eps, weight_decay=wd)
        else:
            tx = optax.adam(sched, *betas, eps)
    if cfg["clip_grad_norm"] > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg["clip_grad_norm"]), tx)
    if int(cfg["accumulate"]) > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(cfg["accumulate"])).gradient_transformation()
    return tx
