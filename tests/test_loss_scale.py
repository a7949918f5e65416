"""float16 dynamic loss scaling: the scale follows torch.amp.GradScaler's rule, an overflowed update is skipped
exactly (parameters and optimizer moments untouched), the state tells an overflow from a diverging loss, and a
float16 forward that overflows at the initial scale recovers and trains."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxsr import optim

BAD = [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]  # injected overflows


def _cfg(**o):
    c = optim.default_config(lr=1e-2)
    c.update({"name": "adam", "loss_scale_init": 16.0, "loss_scale_interval": 3, **o})
    return c


def _torch_scales(bad, init=16.0, interval=3):
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=init, growth_interval=interval)
    out = []
    for b in bad:
        opt.zero_grad()
        scaler.scale((p * p).sum()).backward()
        if b:
            p.grad[0] = float("inf")
        scaler.step(opt)
        scaler.update()
        out.append(scaler.get_scale())
    return out


def test_scale_follows_gradscaler_and_overflowed_updates_are_skipped():
    cfg = _cfg()
    tx = optim.build_optimizer(cfg, 100, loss_scaling=True)
    plain = optim.build_optimizer(cfg, 100)
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(len(BAD), 4)).astype(np.float32)
    p = q = jnp.zeros(4)
    state, ref_state = tx.init(p), plain.init(q)
    step, plain_step = jax.jit(tx.update), jax.jit(plain.update)
    scales, consecutive = [], []
    for g, bad in zip(grads, BAD):
        s = optim.loss_scale_state(state)
        scaled = jnp.asarray(g) * s.scale  # what differentiating scale_loss(opt_state, loss) delivers
        if bad:
            scaled = scaled.at[1].set(jnp.inf)
        before = state
        u, state = step(scaled, state, p)
        p = optax.apply_updates(p, u)
        ls = optim.loss_scale_state(state)
        assert bool(ls.overflowed) == bool(bad)
        if bad:  # skipped: no movement, the optimizer's moments as they were
            np.testing.assert_array_equal(np.asarray(u), 0.0)
            jax.tree.map(np.testing.assert_array_equal, ls.inner.inner_state, before.inner.inner_state)
        else:  # the same step as without loss scaling on the unscaled gradient
            v, ref_state = plain_step(jnp.asarray(g), ref_state, q)
            q = optax.apply_updates(q, v)
            np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-6)  # two programs: XLA may fuse differently
        scales.append(float(ls.scale))
        consecutive.append(int(ls.consecutive_overflows))
    assert scales == _torch_scales(BAD)  # halves on each overflow, doubles after 3 finite updates in a row
    assert consecutive == [0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert int(optim.loss_scale_state(state).inner.total_notfinite) == 3
    assert float(optim.scale_loss(state, jnp.float32(2.0))) == 2.0 * scales[-1]
    assert optim.loss_scale_state(plain.init(q)) is None and float(optim.scale_loss(ref_state, 2.0)) == 2.0


def test_float16_forward_recovers_from_overflow_and_grows_the_scale():
    """A float16 model whose backward overflows at scale 2^24: the first updates are skipped while the scale
    halves (the loss stays finite, so it is an overflow, not divergence), then it trains and the scale grows."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(16, 2)) * 0.5, jnp.float32)
    params = {"w": jnp.asarray(rng.normal(size=(8, 2)) * 0.3, jnp.float32)}
    cfg = _cfg(loss_scale_init=2.0**24, loss_scale_interval=5)
    tx = optim.build_optimizer(cfg, 100, loss_scaling=True)

    def loss_fn(p):
        y = jnp.tanh(x.astype(jnp.float16) @ p["w"].astype(jnp.float16))
        return jnp.mean((y.astype(jnp.float32) - t) ** 2)

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(lambda p: optim.scale_loss(s, loss_fn(p)))(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss / optim.loss_scale_state(s).scale

    p, s = params, tx.init(params)
    first = float(loss_fn(p))
    log = []
    for _ in range(30):
        p, s, _ = step(p, s)
        ls = optim.loss_scale_state(s)
        log.append((bool(ls.overflowed), float(ls.scale)))
        assert np.isfinite(float(loss_fn(p)))
    skipped = [o for o, _ in log]
    k = skipped.index(False)
    assert k >= 3 and all(skipped[:k])
    assert log[k][1] == 2.0**24 / 2**k  # one halving per overflow
    assert max(sc for _, sc in log[k:]) > log[k][1]  # grew again after 5 finite updates (and may overflow again)
    assert float(loss_fn(p)) < 0.8 * first
