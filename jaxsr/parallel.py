"""Data parallelism over a device mesh, one code path for 1 device, 8, or a pod.

The mesh has one 'data' axis with Auto axis types: the batch is sharded along it, the train state is
replicated, and XLA inserts the gradient all-reduce. Multi-process runs (TPU pods, several GPU hosts)
feed each process's share of the global batch with `jax.make_array_from_process_local_data`.
"""
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
