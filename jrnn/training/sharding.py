"""Data parallelism with ``jax.sharding``: the batch split over devices, parameters replicated.

Every device holds the whole ``θ`` and a slice ``B/D`` of the batch; the loss is a sum (or mean)
over the batch, so its gradient is the sum of the per-slice gradients, which XLA computes with
one all-reduce inside the compiled step. The same code runs on one device (a mesh of one) or
many, and gives the same result up to the order of floating-point summation.

Single host::

  mesh = jrnn.training.sharding.data_mesh()                    # all local devices
  step = jrnn.training.make_train_step(loss, opt, mesh=mesh)
  params, opt_state = jrnn.training.sharding.replicate((params, opt_state), mesh)
  params, opt_state, m = step(params, opt_state, jrnn.training.sharding.shard_batch(batch, mesh))

Several hosts: call ``jax.distributed.initialize()`` (coordinator address, number of processes
and process id from arguments or the cluster's environment) in every process before any other
JAX call; then ``jax.devices()`` lists the devices of all hosts, :func:`data_mesh` spans them,
and each process passes :func:`shard_batch` its own slice of the global batch
(``B / jax.process_count()`` sequences), which ``jax.make_array_from_process_local_data``
assembles into one global array; :func:`replicate` takes the same values in every process.
Everything else is unchanged (``jrnn-train --coordinator …`` does all of this; see
:mod:`jrnn.training.distributed`).

On CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before JAX starts) gives
four devices to try it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A one-axis mesh named ``"data"`` over ``devices`` (default: ``jax.devices()``)."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("devices must not be empty")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds a full copy."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: int = 1) -> NamedSharding:
  """Axis ``batch_axis`` split over the mesh (``1`` for time-major ``(T, B, …)`` arrays)."""
  return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _global_replica(x, mesh: Mesh) -> jax.Array:
  """``x`` (the same value in every process) as one array replicated over a mesh that spans
  several processes, where ``device_put`` cannot reach the other processes' devices."""
  if _is_key(x):
    return jax.random.wrap_key_data(
      _global_replica(jax.random.key_data(x), mesh), impl=jax.random.key_impl(x)
    )
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, replicated(mesh), lambda index: host[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
  """A copy of every array of ``tree`` on all devices of ``mesh``.

  Always a copy: a train step donates what it is given, and must not delete the caller's
  original arrays with it (``device_put`` alone may reuse the original buffer as one replica).
  With several processes, each passes the same values (e.g. parameters initialised from the
  same seed, or read from the same checkpoint).
  """
  if not mesh.is_multi_process:
    tree = jax.tree_util.tree_map(lambda x: x.copy() if isinstance(x, jax.Array) else x, tree)
    return jax.device_put(tree, replicated(mesh))
  return jax.tree_util.tree_map(lambda x: _global_replica(x, mesh), tree)


def shard_batch(batch: Any, mesh: Mesh, batch_axis: int = 1) -> Any:
  """Splits every array of ``batch`` along ``batch_axis`` over the mesh.

  Each process passes the part of the global batch it holds (on one host: all of it), and the
  global batch size is that times ``jax.process_count()``. The per-process batch size must be
  divisible by the number of local devices. A PRNG key in the batch (for dropout) is replicated.
  """
  sharding = batch_sharding(mesh, batch_axis)
  n_local = len(mesh.local_devices)

  def put(x):
    if _is_key(x):
      if mesh.is_multi_process:
        return _global_replica(x, mesh)
      return jax.device_put(x, replicated(mesh), may_alias=False)
    x = np.asarray(x)
    if x.ndim <= batch_axis:
      raise ValueError(f"batch arrays need an axis {batch_axis} to split, got shape {x.shape}")
    if x.shape[batch_axis] % n_local:
      raise ValueError(
        f"batch size {x.shape[batch_axis]} (axis {batch_axis} of shape {x.shape}) must be "
        f"divisible by the {n_local} local devices; change the batch size"
      )
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree_util.tree_map(put, batch)
