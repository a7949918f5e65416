"""The train step: one jit-compiled function from (state, clean batch) to (state, metrics).

On the device, in one program: degradation of the clean GT into the LQ input (or the paired LQ), the
training-pair queue, the generator forward, every loss, the optax update, the NaN/Inf guard, the EMA,
and in the GAN stage the discriminator update. Only the logged scalars leave the device.
"""
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxsr import optim
from jaxsr.degrade import degrade, queue_apply, usm_sharp
from jaxsr.losses import LossSet
from jaxsr.train.state import split


def _merge(graphdef, *states):
    """nnx.merge on fresh Variable objects, so that a forward may update its state (BatchNorm statistics,
    spectral-norm vectors) inside whichever transform (grad, cond) is tracing it."""
    return nnx.merge(graphdef, *jax.tree.map(lambda x: x, states))


def _select(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def make_train_step(cfg, g_def, losses, tx, *, d_def=None, tx_d=None, gan_active=False):
    """The (un-jitted) step for this config. `gan_active` selects the GAN-stage program (G-only warm-up
    steps use the program without it). Call as step(state, batch, frozen) with `frozen` = losses.frozen."""
    scale, dcfg = cfg.scale, cfg.degrade
    objective = losses if gan_active else LossSet(losses.terms)  # G-only warm-up: no adversarial term
    accumulate = int(float(cfg.optim.get("accumulate", 1) or 1))
    decay = optim.ema_decay(cfg.optim)
    schedule = optim.learning_rate_schedule(cfg.optim, cfg.train.total_steps)
    usm = lambda x: usm_sharp(x, dcfg.usm_weight, dcfg.usm_threshold, dcfg.usm_radius)  # noqa: E731

    def make_pair(state, batch, key):
        k_deg, k_queue = jax.random.split(key)
        if "lq" in batch:  # paired data: the LQ comes from disk
            return state.queue, batch["lq"], batch["gt"], usm(batch["gt"])
        out = degrade(k_deg, batch["gt"], dcfg, scale)
        queue, lq, gt, gt_usm = state.queue, out["lq"], out["gt"], out["gt_usm"]
        if queue is not None:
            queue, lq, gt = queue_apply(k_queue, queue, lq, gt)
            gt_usm = usm(gt)
        return queue, lq, gt, gt_usm

    def step(state, batch, frozen):
        rng, k_pair = jax.random.split(state.rng)
        queue, lq, gt, gt_usm = make_pair(state, batch, k_pair)

        def g_loss(params):
            model = _merge(g_def, params, state.rest)
            sr = model(lq)
            rest = split(model)[2]
            fake_logits = real_logits = None
            d_rest = state.d_rest
            if gan_active:
                disc = _merge(d_def, state.d_params, d_rest)
                fake_logits = disc(sr)
                if losses.gan.relativistic:
                    real_logits = jax.lax.stop_gradient(disc(gt))
                d_rest = split(disc)[2]
            total, logs = objective(sr, gt, gt_usm, state.step, fake_logits, real_logits, frozen)
            return total, (logs, rest, d_rest, sr)

        (loss, (logs, rest, d_rest, sr)), grads = jax.value_and_grad(g_loss, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        metrics = {"loss": loss, **logs, "grad_norm": grad_norm, "lr": schedule(state.step // accumulate)}

        new = dict(params=params, rest=rest, opt_state=opt_state, queue=queue)
        if gan_active:
            d_state, d_metrics = _d_update(state.replace(d_rest=d_rest), sr, gt)
            ok = ok & jnp.isfinite(d_metrics["d_loss"])
            new.update(d_state)
            metrics.update(d_metrics)
        old = {k: getattr(state, k) for k in new}
        new = _select(ok, new, old)
        ema = state.ema
        if ema is not None:
            updated = ok if accumulate == 1 else ok & ((state.step + 1) % accumulate == 0)
            ema = _select(updated, optim.ema_update(ema, new["params"], decay), ema)
        metrics["skipped"] = (~ok).astype(jnp.float32)
        state = state.replace(
            step=state.step + 1, rng=rng, ema=ema, nonfinite=jnp.where(ok, 0, state.nonfinite + 1), **new
        )
        return state, metrics

    def _d_update(state, sr, gt):
        gan = losses.gan
        sr = jax.lax.stop_gradient(sr)

        def d_loss(d_params):
            disc = _merge(d_def, d_params, state.d_rest)
            real, fake = disc(gt), disc(sr)
            total, logs = gan.discriminator_loss(real, fake)
            d_rest = split(disc)[2]
            if gan.r1_weight > 0:
                logits = lambda x: _merge(d_def, d_params, d_rest)(x)  # noqa: E731
                r1 = jax.lax.cond(gan.r1_due(state.step), lambda: gan.r1_penalty(logits, gt), lambda: jnp.zeros(()))
                total, logs = total + r1, {**logs, "r1": r1}
            return total, (logs, d_rest)

        (loss, (logs, d_rest)), grads = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)
        updates, d_opt_state = tx_d.update(grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, updates)
        return dict(d_params=d_params, d_rest=d_rest, d_opt_state=d_opt_state), {"d_loss": loss, **logs}

    return step
