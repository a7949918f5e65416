"""The sr kind's train step: one jit-compiled function from (state, clean batch) to (state, metrics).

On the device, in one program: degrade (the training pair: the clean GT degraded into the LQ input, or the paired LQ,
and the training-pair queue) -> forward -> objective -> D update (GAN stage) -> apply updates (with the NaN/Inf
guard) -> EMA. Only the logged scalars leave the device. Each piece below is a pure function of the step's `Parts`.
A second compiled variant (`Parts.inspect`), used only on the steps that log them, also returns per-layer norms.
"""
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsr import archs, optim
from jaxsr.train.state import merge, split


class Parts(NamedTuple):
    """What a step is made of. `make_pair(key, batch, queue) -> (queue, lq, gt, gt_usm)` (`jaxsr.degrade.training_pairs`);
    `lr(opt_state)` / `lr_d` read the lr an update applies (`jaxsr.optim.current_lr`); `accumulate` micro-steps per update
    (the EMA follows real updates only); `ema_def` is the eval-mode model (LDL's EMA output); with a term on the
    discriminator in `objective`, `d_def` and `tx_d` train D. `inspect`: the step also returns per-layer statistics
    (`layer_stats`; with `histograms` each layer's values too), a separate compiled variant so other steps do no more."""

    g_def: Any
    objective: Any
    tx: optax.GradientTransformation
    make_pair: Callable
    lr: Callable
    ema_decay: float
    accumulate: int = 1
    ema_def: Any = None
    d_def: Any = None
    tx_d: Any = None
    lr_d: Callable | None = None
    inspect: bool = False
    histograms: bool = False

    @property
    def gan(self):
        return any(t.on_discriminator for t in self.objective.terms)


def _select(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def discriminator_outputs(p, disc, sr, gt):
    """What the objective takes from D: its logits on SR (and, without gradient, on HR where relativistic), and its
    features on both for feature matching. The calls are the ones BasicSR makes (spectral norm steps once per call)."""
    wanted, out = p.objective.inputs, {}
    if "fake_features" in wanted:
        out["fake_logits"], out["fake_features"] = disc(sr, features=True)
        real_logits, out["real_features"] = jax.lax.stop_gradient(disc(gt, features=True))
        if "real_logits" in wanted:
            out["real_logits"] = real_logits
    else:
        out["fake_logits"] = disc(sr)
        if "real_logits" in wanted:
            out["real_logits"] = jax.lax.stop_gradient(disc(gt))
    return out


def forward_and_objective(p, params, state, lq, inputs):
    """G's loss to differentiate (scaled under float16) and (loss, logs, buffers, d_buffers, sr)."""
    model = merge(p.g_def, params, state.buffers)
    sr = archs.forward(model, lq)  # a multi-output model's (PPON's) `branch`
    d_buffers = state.d_buffers
    if p.gan:
        disc = merge(p.d_def, state.d_params, d_buffers)
        inputs = {**inputs, **discriminator_outputs(p, disc, sr, inputs["gt"])}
        d_buffers = split(disc)[2]
    total, logs = p.objective(sr, step=state.step, **inputs)
    return optim.scale_loss(state.opt_state, total), (total, logs, split(model)[2], d_buffers, sr)


def d_update(p, state, sr, gt):
    """One discriminator update on the detached SR and the HR (with lazy R1 where configured)."""
    gan, sr = p.objective.gan, jax.lax.stop_gradient(sr)

    def d_loss(d_params):
        disc = merge(p.d_def, d_params, state.d_buffers)
        total, logs = gan.discriminator_loss(disc(gt), disc(sr))
        d_buffers = split(disc)[2]
        if gan.r1_weight > 0:
            logits = lambda x: merge(p.d_def, d_params, d_buffers)(x)  # noqa: E731
            r1 = jax.lax.cond(gan.r1_due(state.step), lambda: gan.r1_penalty(logits, gt), lambda: jnp.zeros(()))
            total, logs = total + r1, {**logs, "r1": r1}
        return total, (logs, d_buffers)

    (loss, (logs, d_buffers)), grads = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)
    updates, d_opt_state = p.tx_d.update(grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, updates)
    return dict(d_params=d_params, d_buffers=d_buffers, d_opt_state=d_opt_state), {"d_loss": loss, **logs}, grads


def apply_updates(p, state, grads, loss):
    """G's optimizer update, and whether it counts: (params, opt_state, ok, overflow, grad_norm).

    float16 (a loss-scaling `tx`): an update whose gradients overflow is skipped by `tx` itself, which keeps its smaller
    scale. That is fp16's range, not divergence (`overflow`); a non-finite loss is divergence either way."""
    updates, opt_state = p.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    scaler, grad_norm = optim.loss_scale_state(opt_state), optax.global_norm(grads)
    if scaler is None:
        return params, opt_state, jnp.isfinite(loss) & jnp.isfinite(grad_norm), jnp.zeros((), bool), grad_norm
    grad_norm = grad_norm / optim.loss_scale_state(state.opt_state).scale
    return params, opt_state, jnp.isfinite(loss), scaler.overflowed, grad_norm


def ema(p, state, params, updated):
    """The EMA of G after a real update (not a skipped one, not a micro-step of an accumulation)."""
    if state.ema is None:
        return None
    if p.accumulate > 1:
        updated = updated & ((state.step + 1) % p.accumulate == 0)
    return _select(updated, optim.ema_update(state.ema, params, p.ema_decay), state.ema)


def nonfinite_count(state, ok, overflow, scaler):
    """Consecutive steps with NaN/Inf (the loop stops at train.max_nonfinite). An fp16 overflow neither counts nor
    resets, unless the scale has fallen below 1 (the gradients are not finite even unscaled)."""
    bad = ~ok if scaler is None else ~ok | (overflow & (scaler.scale < 1))
    return jnp.where(bad, state.nonfinite + 1, jnp.where(overflow, state.nonfinite, 0))


def train_step(p, state, batch, feature_params):
    """degrade -> forward -> objective -> D update -> apply updates -> EMA; `feature_params`: the losses' own weights."""
    rng, key = jax.random.split(state.rng)
    queue, lq, gt, gt_usm = p.make_pair(key, batch, state.queue)
    inputs = dict(gt=gt, gt_usm=gt_usm, feature_params=feature_params)
    if "sr_ema" in p.objective.inputs:
        inputs["sr_ema"] = jax.lax.stop_gradient(archs.forward(merge(p.ema_def, state.ema, state.buffers), lq))
    grad_fn = jax.value_and_grad(functools.partial(forward_and_objective, p), has_aux=True)
    (_, (loss, logs, buffers, d_buffers, sr)), grads = grad_fn(state.params, state, lq, inputs)
    params, opt_state, ok, overflow, grad_norm = apply_updates(p, state, grads, loss)
    metrics = {"loss": loss, **logs, "grad_norm": grad_norm, "lr": p.lr(state.opt_state)}
    new = dict(params=params, buffers=buffers, opt_state=opt_state, queue=queue)
    if p.gan:
        d_new, d_metrics, d_grads = d_update(p, state.replace(d_buffers=d_buffers), sr, gt)
        ok = ok & jnp.isfinite(d_metrics["d_loss"])
        new.update(d_new)
        metrics.update(d_metrics, lr_d=p.lr_d(state.d_opt_state))
    new = _select(ok, new, {k: getattr(state, k) for k in new})
    scaler = optim.loss_scale_state(opt_state)
    metrics["skipped"] = (~ok | overflow).astype(jnp.float32)
    if scaler is not None:
        metrics.update(overflow=overflow.astype(jnp.float32), loss_scale=scaler.scale)
    before = state
    state = state.replace(step=state.step + 1, rng=rng, ema=ema(p, state, new["params"], ok & ~overflow),
                          nonfinite=nonfinite_count(state, ok, overflow, scaler), **new)
    if not p.inspect:
        return state, metrics
    unscale = 1.0 if scaler is None else optim.loss_scale_state(before.opt_state).scale
    layers = layer_stats("G", jax.tree.map(lambda g: g / unscale, grads), before.params, state.params, p.histograms)
    if p.gan:
        layers.update(layer_stats("D", d_grads, before.d_params, state.d_params, p.histograms))
    return state, metrics, layers


def layer_names(tree):
    """The module path of each leaf of a parameter tree ('body.0.rdb1.conv1' for its kernel and bias), in leaf order."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
        names.append(".".join(keys[:-1]) or keys[-1])
    return names


def _norm(xs):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in xs))


def layer_stats(tag, grads, before, after, histograms=False):
    """Per layer (module path) of one model (`tag`: G or D): the gradient's and the updated parameters' L2 norms, and the
    update/weight ratio |after - before| / |before| (0 for a zero layer); with `histograms`, each layer's gradient and
    parameter values (flattened) as well."""
    groups = {}
    for name, g, b, a in zip(layer_names(before), *(jax.tree.leaves(t) for t in (grads, before, after))):
        groups.setdefault(name, []).append((g, b, a))
    out = {}
    for name, leaves in groups.items():
        g, b, a = zip(*leaves)
        weight = _norm(b)
        out[f"grad_norm/{tag}/{name}"] = _norm(g)
        out[f"param_norm/{tag}/{name}"] = _norm(a)
        out[f"update_ratio/{tag}/{name}"] = jnp.where(weight > 0, _norm([x - y for x, y in zip(a, b)]) / weight, 0.0)
        if histograms:
            out[f"grad_hist/{tag}/{name}"] = jnp.concatenate([x.ravel() for x in g])
            out[f"param_hist/{tag}/{name}"] = jnp.concatenate([x.ravel() for x in a])
    return out


def make_train_step(parts):
    """The (un-jitted) step, called as step(state, batch, feature_params)."""
    return functools.partial(train_step, parts)


def make_preview(eval_def, make_pair, n=4, d_def=None):
    """preview(state, batch, params) -> dict(lq, sr, gt) of the first n samples: the training pair this batch makes
    (from the state's key, as the step would) and what the eval-mode model with `params` makes of its LQ; with a
    discriminator also its logits on those SR and HR images (d_fake, d_real). Nothing in the state changes."""

    def preview(state, batch, params):
        _, lq, gt, _ = make_pair(jax.random.split(state.rng)[1], batch, state.queue)
        out = dict(lq=lq[:n], sr=archs.forward(merge(eval_def, params, state.buffers), lq[:n]), gt=gt[:n])
        if d_def is not None:
            disc = merge(d_def, state.d_params, state.d_buffers)
            out.update(d_fake=disc(out["sr"]), d_real=disc(out["gt"]))
        return out

    return preview
