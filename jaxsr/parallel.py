"""Data parallelism over a device mesh, one code path for 1 device, 8, or a pod.

The mesh has one 'data' axis with Auto axis types: the batch is sharded along it, the train state is
replicated, and XLA inserts the gradient all-reduce. Multi-process runs (TPU pods, several GPU hosts)
feed each process's share of the global batch with `jax.make_array_from_process_local_data`.
"""
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def make_mesh():
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh):
    return NamedSharding(mesh, P())


def batch_sharding(mesh):
    return NamedSharding(mesh, P("data"))


def global_batch(mesh, host_batch):
    """This process's slice of the batch (numpy, leading axis) -> one global array sharded on 'data'."""
    sh = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sh, np.asarray(x)), host_batch)


def replicate(mesh, tree):
    return jax.device_put(tree, replicated(mesh))


def is_main_process():
    return jax.process_index() == 0


def to_host(tree):
    """Numpy copies of (replicated) arrays; works in multi-process runs, where no process sees every shard."""
    def get(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(get(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(get, tree)


def _cluster_detected():
    """True under a multi-process launcher that jax.distributed.initialize() auto-detects."""
    env = os.environ
    if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True  # a multi-host TPU slice
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(env.get(var, "1") or 1) > 1:
            return True
    return False


def initialize(coordinator_address=None, num_processes=None, process_id=None):
    """Start JAX's multi-controller runtime when this is one process of several; a no-op otherwise.

    Explicit settings (e.g. two GPU hosts without a cluster manager) come from the arguments; TPU pod
    slices, SLURM and Open MPI are detected and left to jax.distributed.initialize()'s own discovery.
    """
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    elif _cluster_detected():
        jax.distributed.initialize()
