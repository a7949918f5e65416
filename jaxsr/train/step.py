"""The train step: one jit-compiled function from (state, clean batch) to (state, metrics).

On the device, in one program: the training pair (degradation of the clean GT into the LQ input, or the
paired LQ, and the training-pair queue), the generator forward, every loss, the optax update, the NaN/Inf
guard, the EMA, and in the GAN stage the discriminator update. Only the logged scalars leave the device.
"""
import jax
import jax.numpy as jnp
import optax

from jaxsr import optim
from jaxsr.train.state import merge, split


def _select(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def make_train_step(g_def, objective, tx, *, make_pair, schedule, ema_decay, accumulate=1, d_def=None, tx_d=None):
    """The (un-jitted) step, called as step(state, batch, feature_params) with `feature_params` = the
    objective's feature-net weights.

    make_pair(key, batch, queue) -> (queue, lq, gt, gt_usm) makes the training pair on the device
    (`jaxsr.degrade.training_pairs`). With an adversarial term in `objective` the step also updates D
    (`d_def`, `tx_d`); the G-only warm-up uses `objective.without_gan()`. `schedule` is the lr logged per
    update, `accumulate` the micro-steps per update (the EMA follows real updates only).
    """
    gan_active = objective.gan_term is not None

    def step(state, batch, feature_params):
        rng, k_pair = jax.random.split(state.rng)
        queue, lq, gt, gt_usm = make_pair(k_pair, batch, state.queue)

        def g_loss(params):
            model = merge(g_def, params, state.buffers)
            sr = model(lq)
            buffers = split(model)[2]
            fake_logits = real_logits = None
            d_buffers = state.d_buffers
            if gan_active:
                disc = merge(d_def, state.d_params, d_buffers)
                fake_logits = disc(sr)
                if objective.gan.relativistic:
                    real_logits = jax.lax.stop_gradient(disc(gt))
                d_buffers = split(disc)[2]
            total, logs = objective(sr, gt, gt_usm=gt_usm, step=state.step, fake_logits=fake_logits,
                                    real_logits=real_logits, feature_params=feature_params)
            return total, (logs, buffers, d_buffers, sr)

        (loss, (logs, buffers, d_buffers, sr)), grads = jax.value_and_grad(g_loss, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        metrics = {"loss": loss, **logs, "grad_norm": grad_norm, "lr": schedule(state.step // accumulate)}

        new = dict(params=params, buffers=buffers, opt_state=opt_state, queue=queue)
        if gan_active:
            d_state, d_metrics = _d_update(state.replace(d_buffers=d_buffers), sr, gt)
            ok = ok & jnp.isfinite(d_metrics["d_loss"])
            new.update(d_state)
            metrics.update(d_metrics)
        old = {k: getattr(state, k) for k in new}
        new = _select(ok, new, old)
        ema = state.ema
        if ema is not None:
            updated = ok if accumulate == 1 else ok & ((state.step + 1) % accumulate == 0)
            ema = _select(updated, optim.ema_update(ema, new["params"], ema_decay), ema)
        metrics["skipped"] = (~ok).astype(jnp.float32)
        state = state.replace(
            step=state.step + 1, rng=rng, ema=ema, nonfinite=jnp.where(ok, 0, state.nonfinite + 1), **new
        )
        return state, metrics

    def _d_update(state, sr, gt):
        gan = objective.gan
        sr = jax.lax.stop_gradient(sr)

        def d_loss(d_params):
            disc = merge(d_def, d_params, state.d_buffers)
            real, fake = disc(gt), disc(sr)
            total, logs = gan.discriminator_loss(real, fake)
            d_buffers = split(disc)[2]
            if gan.r1_weight > 0:
                logits = lambda x: merge(d_def, d_params, d_buffers)(x)  # noqa: E731
                r1 = jax.lax.cond(gan.r1_due(state.step), lambda: gan.r1_penalty(logits, gt), lambda: jnp.zeros(()))
                total, logs = total + r1, {**logs, "r1": r1}
            return total, (logs, d_buffers)

        (loss, (logs, d_buffers)), grads = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)
        updates, d_opt_state = tx_d.update(grads, state.d_opt_state, state.d_params)
        d_params = optax.apply_updates(state.d_params, updates)
        return dict(d_params=d_params, d_buffers=d_buffers, d_opt_state=d_opt_state), {"d_loss": loss, **logs}

    return step


def make_preview(eval_def, make_pair, n=4, d_def=None):
    """preview(state, batch, params) -> dict(lq, sr, gt) of the first n samples: the training pair this batch makes
    (from the state's key, as the step would) and what the eval-mode model with `params` makes of its LQ; with a
    discriminator also its logits on those SR and HR images (d_fake, d_real). Nothing in the state changes."""

    def preview(state, batch, params):
        _, lq, gt, _ = make_pair(jax.random.split(state.rng)[1], batch, state.queue)
        out = dict(lq=lq[:n], sr=merge(eval_def, params, state.buffers)(lq[:n]), gt=gt[:n])
        if d_def is not None:
            disc = merge(d_def, state.d_params, state.d_buffers)
            out.update(d_fake=disc(out["sr"]), d_real=disc(out["gt"]))
        return out

    return preview
