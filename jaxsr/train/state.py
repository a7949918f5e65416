"""The train state: everything a step reads and writes, as one pytree that orbax saves and restores.

Models are kept split the NNX way: a static graphdef (built once, outside jit) plus `params` (trainable)
and `buffers` (everything else that changes or travels with the model: torch buffers, BatchNorm statistics,
spectral-norm vectors, RNG counters). The step merges them, runs, and splits again, so the same code works
whatever mutable state an architecture has.
"""
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct


class TrainState(struct.PyTreeNode):
    step: jax.Array  # completed train steps (micro-steps under gradient accumulation)
    params: Any
    buffers: Any
    opt_state: Any
    ema: Any  # EMA of params (None when disabled)
    rng: jax.Array
    nonfinite: jax.Array  # consecutive steps whose update was skipped for a NaN/Inf
    d_params: Any = None
    d_buffers: Any = None
    d_opt_state: Any = None
    queue: Any = None  # Real-ESRGAN's training-pair queue


def split(model):
    """(graphdef, params, buffers) of an NNX model."""
    return nnx.split(model, nnx.Param, ...)


def merge(graphdef, *states):
    """The model, on fresh Variable objects, so that a forward may update its state (BatchNorm statistics,
    spectral-norm vectors) inside whichever transform (grad, cond) is tracing it."""
    return nnx.merge(graphdef, *states, copy=True)


def create(model, tx, *, seed, ema=True, disc=None, tx_d=None, queue=None):
    """A fresh state from built models; `disc` is the discriminator (GAN stage) or None."""
    _, params, buffers = split(model)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        buffers=buffers,
        opt_state=tx.init(params),
        ema=jax.tree.map(jnp.copy, params) if ema else None,
        rng=jax.random.PRNGKey(seed),
        nonfinite=jnp.zeros((), jnp.int32),
        queue=queue,
    )
    if disc is not None:
        _, d_params, d_buffers = split(disc)
        state = state.replace(d_params=d_params, d_buffers=d_buffers, d_opt_state=tx_d.init(d_params))
    return state
