"""Data parallelism over all devices: one model replica per device, the global batch split on axis 0.

This is the semantics of the design card's `pmap` (replicated parameters, per-device shards of the
batch, gradients averaged every step), realised with `jax.jit` over a 1-D ("data",) mesh: parameters
carry `P()`, batches `P("data")`, and XLA inserts the gradient all-reduce. Since JAX 0.8 `jax.pmap`
is itself a wrapper over `jit(shard_map)`, and JAX recommends migrating off it.

Multi-host (TPU pods, several GPU nodes): call `initialize_distributed(True)` first on every host
(`config.distributed.initialize`); `jax.devices()` then lists the devices of all hosts and the same
code runs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gssm_jax.errors import UserError


def initialize_distributed(initialize: bool) -> None:
    """Calls `jax.distributed.initialize()` (cluster auto-detection: Slurm, TPU pods, ...) if asked.

    Must run before any other JAX call on every host of a multi-host job.
    """
    if initialize:
        jax.distributed.initialize()


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of parameters, optimizer state and scalars: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding of a (batch, ...) array: rows split evenly across the "data" axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def check_batch_divisible(batch_size: int, mesh: Mesh, field: str = "config.data.batch_size") -> None:
    """Raises ValueError (one line naming `field` and the device count) if the batch cannot be split evenly."""
    num_devices = mesh.devices.size
    if batch_size % num_devices:
        lower = batch_size - batch_size % num_devices
        suggestion = f"{lower} or {lower + num_devices}" if lower else f"{num_devices}"
        raise UserError(
            f"{field}={batch_size} is not divisible by the number of devices ({num_devices}); "
            f"use a multiple of {num_devices}, e.g. {suggestion}"
        )
