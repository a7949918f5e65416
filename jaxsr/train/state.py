"""The train state: everything a step reads and writes, as one pytree that orbax saves and restores.

Models are kept split the NNX way: a static graphdef (built once, outside jit) plus `params` (trainable)
and `rest` (buffers, BatchNorm statistics, spectral-norm vectors, RNG counters). The step merges them,
runs, and splits again, so the same code works whatever mutable state an architecture has.
"""
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct


class TrainState(struct.PyTreeNode):
    step: jax.Array  # completed train steps (micro-steps under gradient accumulation)
    params: Any
    rest: Any
    opt_state: Any
    ema: Any  # EMA of params (None when disabled)
    rng: jax.Array
    nonfinite: jax.Array  # consecutive steps whose update was skipped for a NaN/Inf
    d_params: Any = None
    d_rest: Any = None
    d_opt_state: Any = None
    queue: Any = None  # Real-ESRGAN's training-pair queue


def split(model):
    """(graphdef, params, rest) of an NNX model."""
    return nnx.split(model, nnx.Param, ...)


def create(model, tx, *, seed, ema=True, disc=None, tx_d=None, queue=None):
    """A fresh state from built models; `disc` is the discriminator (GAN stage) or None."""
    _, params, rest = split(model)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        ema=jax.tree.map(jnp.copy, params) if ema else None,
        rng=jax.random.PRNGKey(seed),
        nonfinite=jnp.zeros((), jnp.int32),
        queue=queue,
    )
    if disc is not None:
        _, d_params, d_rest = split(disc)
        state = state.replace(d_params=d_params, d_rest=d_rest, d_opt_state=tx_d.init(d_params))
    return state
