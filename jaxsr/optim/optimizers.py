"""Optimizers from a config section: the optax chain (AdamW/Adam, Adan, schedule-free), and what wraps it for
training: clipping, FreezeD masks, accumulation, float16 loss scaling; plus the generator's EMA.

Adan and schedule-free are assembled here rather than taken from optax because optax's differ from the
references (Adan's gradient-difference weight; schedule-free's first warm-up step): see their docstrings.

Fields of an optimizer section (`config.optim`, `config.optim_d`) read here; the schedule's are in `schedules`:
    name:           'adamw' | 'adam' | 'adan' | 'schedule_free_adamw' | 'adan_schedule_free'
    lr:             peak learning rate
    betas:          (b1, b2) for adam(w) and schedule_free_adamw; (b1, b2, b3) for the two Adans, e.g. (0.98, 0.92, 0.99)
    eps:            added to the denominator
    weight_decay:   decoupled for adamw and both schedule-free optimizers (taken at y); adam adds nothing
    adan_proximal:  True: official Adan's default decay p <- (p - lr*u) / (1 + lr*wd); False: decoupled
    sf_momentum:    adan_schedule_free's interpolation between z and the average x (ScheduleFreeWrapper's momentum)
    clip_grad_norm: 0 = off; else global-norm clipping
    accumulate:     k > 1 averages k micro-batches per update (optax.MultiSteps)
    weight_lr_power: schedule-free's weighting of the averaged iterate
    loss_scale_init, loss_scale_interval, loss_scale_growth, loss_scale_backoff:  float16 dynamic loss scaling
    ema_decay:      (generator only) see `ema_update`; 0 disables

Schedule-free optimizers take only warm-up + constant; validate and export `eval_params(opt_state, params)`.
float16: `build_optimizer(..., loss_scaling=True)`, differentiate `scale_loss(opt_state, loss)` and keep the new
opt_state even on an overflow (`loss_scale_state(opt_state).overflowed`). FreezeD: `freeze=frozen_blocks(block_of, k)`.
Numbers written as strings ("2e-4") are cast where the run's config is read (`jaxsr.train.config.resolve`).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from optax.contrib import ScheduleFreeState, schedule_free, schedule_free_eval_params

from jaxsr.optim.schedules import DescendState, _find, default_fields, learning_rate_schedule, plateau_rule, with_warmup

NAMES = ("adamw", "adam", "adan", "schedule_free_adamw", "adan_schedule_free")
ADAM_BETAS = (0.9, 0.99)  # BasicSR/Real-ESRGAN's Adam betas
ADAN_BETAS = (0.98, 0.92, 0.99)  # the Adan paper's and its official code's
SCHEDULE_FREE = ("schedule_free_adamw", "adan_schedule_free")


def default_config(lr=2e-4, ema_decay=0.999):
    """Every field of an optimizer section; ema_decay=None leaves it out (the discriminator has no EMA)."""
    c = ml_collections.ConfigDict(type_safe=False)  # numbers may be given as strings, cast by train.config.resolve
    c.name = "adamw"
    c.lr = lr
    c.betas = ADAM_BETAS  # an Adan left with these takes ADAN_BETAS (betas_for)
    c.eps = 1e-8
    c.weight_decay = 0.0
    c.adan_proximal = True
    c.sf_momentum = 0.9  # schedulefree.ScheduleFreeWrapper's default
    for field, value in default_fields().items():
        c[field] = value
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


# ---------------------------------------------------------------- the update step and Adan


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
    sched = with_warmup(optax.constant_schedule(float(learning_rate)), int(warmup_steps), warmup)
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


def _top_name(path):
    """A parameter's first path entry: the discriminator's attribute (module) it belongs to."""
    return str(getattr(path[0], "key", getattr(path[0], "name", "")))


def _check_block_of(block_of):
    if not callable(block_of):
        raise ValueError(f"FreezeD needs the discriminator's block_of(name) -> block number or None (its Arch.block_of), "
                         f"got {block_of!r}")


def frozen_blocks(block_of, k):
    """params -> bool tree: True for the first k blocks of a discriminator (FreezeD, Mo et al. 2020, arXiv
    2002.10964). `block_of(name) -> int | None` maps a top-level parameter/module name (e.g. 'conv3', 'bn2_1') to its
    block number, None outside any block; the architecture knows its own naming (`Arch.block_of`)."""
    _check_block_of(block_of)

    def labels(params):
        def frozen(path, _):
            block = block_of(_top_name(path))
            return block is not None and block < k

        return jax.tree_util.tree_map_with_path(frozen, params)

    return labels


def block_count(block_of, params):
    """How many blocks `frozen_blocks` can freeze in these discriminator params."""
    _check_block_of(block_of)
    names = {_top_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
    return len({b for b in map(block_of, names) if b is not None})


def _freeze(tx, frozen):
    """tx on the trainable leaves, exactly zero updates on the frozen ones."""
    labels = lambda params: jax.tree.map(lambda f: "frozen" if f else "train", frozen(params))  # noqa: E731
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# ---------------------------------------------------------------- EMA and the builder


def ema_update(ema_params, params, decay):
    """ema <- decay * ema + (1 - decay) * params (BasicSR's model_ema), pure and jit-able."""
    return optax.incremental_update(params, ema_params, step_size=1.0 - decay)


def betas_for(cfg):
    """The section's betas; Adan's own where an Adan was chosen and the betas left at the (two-value) Adam default."""
    betas = tuple(cfg["betas"])
    return ADAN_BETAS if "adan" in cfg["name"] and betas == ADAM_BETAS else betas


def build_optimizer(cfg, total_steps, *, loss_scaling=False, freeze=None, offset=0) -> optax.GradientTransformation:
    """The optax transformation for an optimizer section (fields in this module's and `schedules`' docstrings); for
    G and D alike.

    loss_scaling: float16 compute (`dynamic_loss_scale`, outermost). freeze: `frozen_blocks(block_of, k)` for FreezeD.
    offset: the update number the first update is read at in the schedule (and restarts): a discriminator that
    joins at gan.start_step follows its schedule by train step, as BasicSR steps every scheduler every iteration.
    Inside out: the optimizer, clipping, FreezeD, accumulation, loss scaling.
    """
    name, lr, betas, eps, wd = cfg["name"], float(cfg["lr"]), betas_for(cfg), cfg["eps"], cfg["weight_decay"]
    if name not in NAMES:
        raise ValueError(f"optim.name must be one of {NAMES}, got {name!r}")
    want = 3 if "adan" in name else 2
    if len(betas) != want:
        example = ADAN_BETAS if want == 3 else ADAM_BETAS
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
