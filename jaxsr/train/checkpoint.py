"""Orbax checkpoints of the whole run: train state, data-iterator position and run metadata.

The data-iterator position is the number of global batches consumed, the same on every host (each host
reads its slice of the same global batches), so it is stored once in the run metadata and a checkpoint
resumes with any number of processes. The metadata also holds the generator's spec, so a resume builds the
model without reading `init_weights` again.

Kept: the latest two checkpoints (the one before the latest is the fallback should the latest be damaged), plus
the best `keep_best` by the validation metric (`val.best_metric`: PSNR by default, highest first; LPIPS/DISTS lowest
first). orbax's `max_to_keep` with a
`best_fn` deletes the latest (seen with orbax-checkpoint 0.12.8: max_to_keep=2 over steps 100..400 at PSNR
30/32/31/29 kept only 200 and 300, so a resume would go back in time), so preservation is a policy: LatestN(2) or BestN.
Checkpoints saved between validations carry no metric and live only while they are among the latest two: orbax keeps
them until the next save that has a metric (every one of them in a run without validation), so they are pruned here.

Saves are asynchronous and atomic (orbax writes a temporary folder and renames it when complete), so a
kill during a save leaves the previous checkpoint as the latest complete one. A save that would not fit on
the disk is refused before it starts; one that fails anyway surfaces at the next save or at close. Either way
the run stops with one CheckpointError line, and the last complete checkpoint is left intact.
A checkpoint that does not restore is moved aside into `checkpoints.damaged/` (never deleted), and the
resume falls back to the newest one that does.
"""
import json
import logging
import os
import shutil

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as cm

from jaxsr.errors import JaxsrError

log = logging.getLogger("jaxsr")
MARGIN = 256 * 2**10  # bytes beyond the estimate that a save leaves free (orbax's metadata, the log)
KEEP_LATEST = 2


class Carry(NamedTuple):
    """How a checkpoint's state maps onto a state of another shape (a config changed on resume)."""

    mapping: dict  # path in the new state -> path in the checkpoint
    fresh: list  # paths of the new state the checkpoint has nothing for (they keep their new initial values)
    dropped: list  # paths of the checkpoint the new state has no place for


def _key(k):
    return str(next((getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)), k))


def leaf_paths(tree):
    """{'opt_state/0/mu/conv/kernel/value': leaf}: the tree's leaves by path, as orbax names them on disk."""
    return {"/".join(_key(k) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def typed_nodes(tree):
    """{path prefix: class name} of the tree's NamedTuples (optax's states), which say what a leaf is wherever a
    transformation added to the chain moves it."""
    found = {}

    def walk(node, prefix):
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            found[prefix] = type(node).__name__
        children = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)[0]
        if children and children[0][1] is node:
            return
        for path, child in children:
            walk(child, prefix + "".join(_key(k) + "/" for k in path))

    walk(tree, "")
    return found


def _role(path, types):
    """A leaf's role: its top-level field, the innermost NamedTuple above it and the path below that one."""
    parts = path.split("/")
    for i in range(len(parts) - 1, 0, -1):
        prefix = "/".join(parts[:i]) + "/"
        if prefix in types:
            return parts[0], types[prefix], "/".join(parts[i:])
    return parts[0], "", path


def _is_key(leaf):
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _stored(leaf):
    """The shape and dtype orbax stores a leaf as: a typed PRNG key as its uint32 data, an empty array as (1,)."""
    if _is_key(leaf):
        return jax.eval_shape(jax.random.key_data, leaf)
    return jax.ShapeDtypeStruct(tuple(leaf.shape) if leaf.size else (1,), leaf.dtype)


def _carried(saved, leaf):
    """A checkpoint's array in the new state's place: PRNG key data wrapped back into a key."""
    return jax.random.wrap_key_data(saved, impl=jax.random.key_impl(leaf)) if _is_key(leaf) else saved


def carry_plan(saved, saved_types, state):
    """None when the checkpoint's tree (`saved`: path -> shape/dtype metadata) is the state's; else the `Carry` of its
    leaves onto `state`: by role where the checkpoint recorded its NamedTuples (`saved_types`), by path where not."""
    new = leaf_paths(state)

    def fits(meta, leaf):
        stored = _stored(leaf)
        return tuple(meta.shape) == stored.shape and np.dtype(meta.dtype) == stored.dtype

    if set(saved) == set(new) and all(fits(saved[p], new[p]) for p in new):
        return None
    new_types = typed_nodes(state)
    role = (lambda p, types: p) if saved_types is None else _role
    by_role = {}
    for p in saved:
        by_role.setdefault(role(p, saved_types), []).append(p)
    mapping = {}
    for p, leaf in new.items():
        found = by_role.get(role(p, new_types), [])
        if len(found) == 1 and fits(saved[found[0]], leaf):
            mapping[p] = found[0]
    used = set(mapping.values())
    return Carry(mapping, [p for p in new if p not in mapping], [p for p in saved if p not in used])


class CheckpointError(JaxsrError):
    """A checkpoint that could not be saved; the message says why, what it needs, and what is intact."""


def _mib(n):
    return f"{n / 2**20:.1f} MiB"


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def _reason(e):
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return "no space left on the device" if "No space left" in str(e) else text[:300]


class Checkpoints:
    def __init__(self, directory, keep_best=3, snapshot_every=0, metric="psnr", mode="max"):
        """`metric` names the validation value best-k ranks by; mode 'max' keeps the highest, 'min' the lowest."""
        self.metric = metric
        policies = [
            cm.LatestN(n=KEEP_LATEST),
            cm.BestN(get_metric_fn=lambda m: m[metric], reverse=mode == "min", n=keep_best, keep_checkpoints_without_metrics=False),
        ]
        if snapshot_every:
            policies.append(cm.EveryNSteps(interval_steps=snapshot_every))
        policy = cm.AnyPreservationPolicy(policies)
        self.snapshot_every = snapshot_every
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=lambda m: m[metric], best_mode=mode, enable_async_checkpointing=True,
            cleanup_tmp_directories=True,
        )
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
            "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
        self._last_size = None  # bytes on disk of the last checkpoint this run wrote
        self._trees = {}  # step: orbax's metadata of its state (it opens every array to read it: ~2 ms an array)

    # ------------------------------------------------------------------------------------------- resume

    def latest_meta(self):
        """(step, meta) of the newest checkpoint whose metadata reads, moving unreadable ones aside; None if none."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return step, self.meta(step)
            except CheckpointError as e:
                self.move_aside(step, e.__context__ or e)
        return None

    def saved_tree(self, step):
        """{path: metadata with shape and dtype} of the state a checkpoint holds (CheckpointError if it does not read)."""
        try:
            return leaf_paths(self._tree(step))
        except Exception as e:
            raise CheckpointError(f"the checkpoint at step {step} in {self.directory} does not restore: {_reason(e)}") from None

    def _tree(self, step):
        """The metadata tree of the state at `step`, read once (a resume that carries state over needs it twice)."""
        if step not in self._trees:
            self._trees[step] = self.manager.item_metadata(step)["state"]
        return self._trees[step]

    def restore(self, step, state, data_iter, carry=None):
        """(state, meta); `state` gives the structure, dtypes and shardings (and, with a `Carry`, the values of what the
        checkpoint does not hold); `data_iter` is set in place."""
        if carry is None:
            target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape if x.size else (1,), x.dtype, sharding=x.sharding), state)
        else:  # the checkpoint's own tree, on the state's (replicated) sharding
            sharding = jax.tree.leaves(state)[0].sharding
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding),
                                  self._tree(step))
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        data_iter.set_state(out["meta"]["data_iterator"])
        restored = out["state"]
        if carry is not None:
            saved = leaf_paths(restored)
            leaves, treedef = jax.tree_util.tree_flatten(state)
            restored = treedef.unflatten([_carried(saved[carry.mapping[p]], leaf) if p in carry.mapping else leaf
                                          for p, leaf in zip(leaf_paths(state), leaves)])
        state = jax.tree.map(lambda r, a: jax.device_put(jnp.zeros(a.shape, a.dtype), a.sharding) if a.size == 0 else r,
                             restored, state)
        return state, out["meta"]

    def move_aside(self, step, error):
        """Move a checkpoint that does not restore into checkpoints.damaged/ (never deleted), saying so in one line."""
        src = os.path.join(self.directory, str(step))
        aside = os.path.join(os.path.dirname(self.directory), "checkpoints.damaged")
        dst, n = os.path.join(aside, str(step)), 1
        while os.path.exists(dst):
            n += 1
            dst = os.path.join(aside, f"{step}.{n}")
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            shutil.move(src, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jaxsr: checkpoint {step} moved aside")
        log.warning(f"checkpoint {step} does not restore ({_reason(error)}); moved it to {dst}, trying the one before")
        self._trees.clear()
        self.manager.reload()

    # ------------------------------------------------------------------------------------------- save

    def save(self, step, state, data_iter, meta, value=None):
        """Save asynchronously; `value` is the validation metric of this step (None between validations)."""
        self._settle()
        self._trees.clear()
        # the last checkpoint's size on disk; before the first, the arrays' bytes (orbax writes them uncompressed) and
        # about 1 KiB of metadata each
        leaves = jax.tree.leaves(state)
        need = (self._last_size or sum(x.nbytes for x in leaves) + 1024 * len(leaves)) + MARGIN
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise CheckpointError(self._failed(step, f"it needs about {_mib(need)} and {_mib(free)} are free"))
        meta = {**meta, "data_iterator": json.loads(data_iter.get_state()), "state_types": typed_nodes(state)}
        state = jax.tree.map(lambda x: jnp.zeros((1,), x.dtype) if x.size == 0 else x, state)  # orbax refuses empty arrays
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:
            self.manager.save(step, args=args, metrics=None if value is None else {self.metric: float(value)}, force=True)
        except Exception as e:
            raise CheckpointError(self._failed(step, _reason(e))) from None
        self._pending = step

    def _settle(self):
        """Wait for the save in flight; raise a CheckpointError if it failed; prune checkpoints without a metric."""
        step = getattr(self, "_pending", None)
        self._pending = None
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as e:
            raise CheckpointError(self._failed(step, _reason(e))) from None
        if step is not None and os.path.isdir(os.path.join(self.directory, str(step))):
            self._last_size = _dir_bytes(os.path.join(self.directory, str(step)))
        newest = sorted(self.manager.all_steps())[-KEEP_LATEST:]
        for s in self.manager.all_steps():
            if s not in newest and not self.manager.metrics(s) and not self.is_snapshot(s):
                self.manager.delete(s)  # a collective: every process calls it

    def is_snapshot(self, step):
        return bool(self.snapshot_every) and step % self.snapshot_every == 0

    def meta(self, step):
        """The run metadata of one checkpoint (CheckpointError naming it if it does not read)."""
        try:
            return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:
            raise CheckpointError(f"the checkpoint at step {step} in {self.directory} does not restore: {_reason(e)}") from None

    def move_later(self, step, aside):
        """Move every checkpoint after `step` into `aside` (never deleted): the run branches at `step`."""
        later = [s for s in self.manager.all_steps() if s > step]
        self.manager.wait_until_finished()
        if jax.process_index() == 0 and later:
            os.makedirs(aside, exist_ok=True)
            for s in later:
                shutil.move(os.path.join(self.directory, str(s)), os.path.join(aside, str(s)))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jaxsr: branched at {step}")
        self._trees.clear()
        self.manager.reload()
        return later

    def _failed(self, step, why):
        self.manager.reload()
        last = self.manager.latest_step()
        kept = f"the last complete checkpoint (step {last}) is intact" if last is not None else "no checkpoint was completed"
        return (f"saving the checkpoint at step {step} in {self.directory} failed: {why}; {kept}. "
                "Free some space (or use another --workdir) and rerun the same command to resume")

    def close(self):
        """Finish the save in flight (raising its CheckpointError) and release the manager."""
        try:
            self._settle()
        finally:
            self.manager.close()
