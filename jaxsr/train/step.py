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


def make_train_step(g_def, objective, tx, *, make_pair, lr, ema_decay, accumulate=1, d_def=None, tx_d=None, lr_d=None,
                    ema_def=None):
    """The (un-jitted) step, called as step(state, batch, feature_params) with `feature_params` = the
    objective's feature-net weights.

    make_pair(key, batch, queue) -> (queue, lq, gt, gt_usm) makes the training pair on the device
    (`jaxsr.degrade.training_pairs`). With a term on the discriminator in `objective` (adversarial, feature
    matching) the step also updates D (`d_def`, `tx_d`); the G-only warm-up uses `objective.without_gan()`.
    `lr(opt_state)` / `lr_d` read the lr an update applies from the optimizer state (`jaxsr.optim.current_lr`);
    `accumulate` is the micro-steps per update (the EMA follows real updates only). An objective with LDL gets the EMA weights'
    output on the same LQ from `ema_def` (the eval-mode model).

    float16 (a loss-scaling `tx`, `jaxsr.optim.dynamic_loss_scale`): G's loss is differentiated scaled; an update
    whose gradients overflow is skipped by `tx` itself, which keeps its smaller scale. That is fp16's range, not
    divergence: it neither counts towards `nonfinite` nor resets it, unless the scale has fallen below 1 (the
    gradients are not finite even unscaled). A non-finite loss is divergence either way.
    """
    gan_active = objective.gan_term is not None

    def step(state, batch, feature_params):
        rng, k_pair = jax.random.split(state.rng)
        queue, lq, gt, gt_usm = make_pair(k_pair, batch, state.queue)
        sr_ema = None
        if objective.needs_ema:
            sr_ema = jax.lax.stop_gradient(merge(ema_def, state.ema, state.buffers)(lq))

        def g_loss(params):
            model = merge(g_def, params, state.buffers)
            sr = model(lq)
            buffers = split(model)[2]
            d_out = {}
            d_buffers = state.d_buffers
            if gan_active:
                disc = merge(d_def, state.d_params, d_buffers)
                if objective.needs_d_features:
                    d_out["fake_logits"], d_out["fake_features"] = disc(sr, features=True)
                    real_logits, d_out["real_features"] = jax.lax.stop_gradient(disc(gt, features=True))
                    if objective.gan is not None and objective.gan.relativistic:
                        d_out["real_logits"] = real_logits
                else:
                    d_out["fake_logits"] = disc(sr)
                    if objective.gan.relativistic:
                        d_out["real_logits"] = jax.lax.stop_gradient(disc(gt))
                d_buffers = split(disc)[2]
            total, logs = objective(sr, gt, gt_usm=gt_usm, step=state.step, feature_params=feature_params, sr_ema=sr_ema,
                                    **d_out)
            return optim.scale_loss(state.opt_state, total), (total, logs, buffers, d_buffers, sr)

        (_, (loss, logs, buffers, d_buffers, sr)), grads = jax.value_and_grad(g_loss, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        scaler = optim.loss_scale_state(opt_state)
        grad_norm = optax.global_norm(grads)
        if scaler is None:
            ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            overflow = jnp.zeros((), bool)
        else:  # tx skipped an overflowed update itself: the state it returns (its smaller scale) is kept
            grad_norm = grad_norm / optim.loss_scale_state(state.opt_state).scale
            ok = jnp.isfinite(loss)
            overflow = scaler.overflowed
        metrics = {"loss": loss, **logs, "grad_norm": grad_norm, "lr": lr(state.opt_state)}

        new = dict(params=params, buffers=buffers, opt_state=opt_state, queue=queue)
        if gan_active:
            d_state, d_metrics = _d_update(state.replace(d_buffers=d_buffers), sr, gt)
            ok = ok & jnp.isfinite(d_metrics["d_loss"])
            new.update(d_state)
            metrics.update(d_metrics, lr_d=lr_d(state.d_opt_state))
        old = {k: getattr(state, k) for k in new}
        new = _select(ok, new, old)
        ema = state.ema
        if ema is not None:
            updated = ok & ~overflow
            if accumulate > 1:
                updated = updated & ((state.step + 1) % accumulate == 0)
            ema = _select(updated, optim.ema_update(ema, new["params"], ema_decay), ema)
        metrics["skipped"] = (~ok | overflow).astype(jnp.float32)
        bad = ~ok
        if scaler is not None:
            metrics.update(overflow=overflow.astype(jnp.float32), loss_scale=scaler.scale)
            bad = bad | (overflow & (scaler.scale < 1))
        nonfinite = jnp.where(bad, state.nonfinite + 1, jnp.where(overflow, state.nonfinite, 0))  # overflow: neither
        state = state.replace(step=state.step + 1, rng=rng, ema=ema, nonfinite=nonfinite, **new)
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
