"""Device mesh, shardings and multi-host helpers.

One 1-D mesh axis, `data`: batches are split along it and parameters are replicated. The same
code runs on 1..N local devices and on many hosts (`jax.distributed.initialize`); each process
feeds its own slice of the global batch and `make_array_from_process_local_data` stitches them.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
    """A `data` mesh over `num_devices` devices (0 = all devices of all processes)."""
    devices = jax.devices()
    n = num_devices or len(devices)
    if n > len(devices):
        raise ValueError(f"asked for {n} devices but only {len(devices)} are visible")
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError("multi-process runs use every device: leave train.num_devices at 0")
    # Auto axes: XLA's partitioner propagates the batch sharding through the step (explicit
    # sharding-in-types would demand annotations inside every scan/vmap of the encoder).
    return jax.make_mesh((n,), (DATA_AXIS,), devices=devices[:n],
                         axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_replicated(tree, mesh: Mesh):
    """Host values (numpy or jax arrays; the same in every process) -> arrays replicated over
    `mesh`, also when the mesh spans processes (where `jax.device_put` of host values fails)."""
    where = replicated(mesh)

    def put(v):
        v = np.asarray(v)
        return jax.make_array_from_callback(v.shape, where, lambda index: v[index])

    return jax.tree.map(put, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(f"global batch {global_batch} is not divisible by the {n} devices of the mesh")


def to_global(local_batch, mesh: Mesh):
    """Process-local numpy batch (a dict or a typed batch of pam_jax.batches) -> the same
    structure of global jax.Arrays sharded on the data axis."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), local_batch)


def init_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, *, cpu_collectives: bool = False) -> None:
    """Start multi-host JAX. With no arguments, JAX reads the cluster (SLURM, TPU pods...).

    `cpu_collectives=True` selects gloo so that CPU-only processes can all-reduce over loopback.
    """
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
