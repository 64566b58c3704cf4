"""Device meshes and shardings for data-parallel training.

The batch is sharded along the mesh's single `data` axis; the train state is
replicated. Library functions never decide parallelism: the training code
compiles per-batch functions with `jax.jit` and these shardings.
"""

import numpy as np
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D `data` mesh over the first `num_devices` global devices (all by default)."""
    devices = jax.devices()
    if num_devices is None or num_devices <= 0:
        num_devices = len(devices)
    if num_devices > len(devices):
        raise ValueError(
            f"Asked for a mesh of {num_devices} devices but only {len(devices)} are visible "
            f"({devices[0].platform}). On CPU, simulate more with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={num_devices}."
        )
    if jax.process_count() > 1 and num_devices != len(devices):
        raise ValueError("In a multi-process run the mesh must span every device; leave num_devices unset (0).")
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh, *, leading_axes: int = 0) -> NamedSharding:
    """Shards an array's batch axis over `data` (after `leading_axes` unsharded axes,
    e.g. 1 for a [steps, batch, ...] stack)."""
    return NamedSharding(mesh, P(*([None] * leading_axes), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(
            f"The global batch size {global_batch_size} is not divisible by the {n} devices of "
            f"the mesh; set --config.train.batch_size to a multiple of {n}."
        )
