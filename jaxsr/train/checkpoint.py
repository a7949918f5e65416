"""Orbax checkpoints of the whole run: train state, data-iterator position and run metadata.

The data-iterator position is the number of global batches consumed, the same on every host (each host
reads its slice of the same global batches), so it is stored once in the run metadata and a checkpoint
resumes with any number of processes.

Kept: the latest checkpoint, plus the best `keep_best` by validation PSNR. orbax's `max_to_keep` with a
`best_fn` deletes the latest (seen with orbax-checkpoint 0.12.8: max_to_keep=2 over steps 100..400 at PSNR
30/32/31/29 kept only 200 and 300, so a resume would go back in time), so preservation is a policy: LatestN(1) or BestN.
Checkpoints saved between validations carry no metric and live only while they are the latest.
Saves are asynchronous and atomic (orbax writes a temporary folder and renames it when complete), so a
kill during a save leaves the previous checkpoint as the latest complete one.
"""
import os

import json

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


class Checkpoints:
    def __init__(self, directory, keep_best=3):
        policy = cm.AnyPreservationPolicy([
            cm.LatestN(n=1),
            cm.BestN(get_metric_fn=lambda m: m["psnr"], reverse=False, n=keep_best, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=lambda m: m["psnr"], best_mode="max", enable_async_checkpointing=True,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step, state, data_iter, meta, psnr=None):
        meta = {**meta, "data_iterator": json.loads(data_iter.get_state())}
        state = jax.tree.map(lambda x: jnp.zeros((1,), x.dtype) if x.size == 0 else x, state)  # orbax refuses empty arrays
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, metrics=None if psnr is None else {"psnr": float(psnr)}, force=True)

    def restore(self, step, abstract_state, data_iter):
        """(state, meta); `abstract_state` gives the structure, dtypes and shardings, `data_iter` is set in place."""
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape if x.size else (1,), x.dtype, sharding=x.sharding), abstract_state)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        data_iter.set_state(out["meta"]["data_iterator"])
        state = jax.tree.map(lambda r, a: jax.device_put(jnp.zeros(a.shape, a.dtype), a.sharding) if a.size == 0 else r,
                             out["state"], abstract_state)
        return state, out["meta"]

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
