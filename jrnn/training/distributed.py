"""Several cooperating processes (hosts) on ``jax.distributed``: start-up, each process's slice
of the batch, agreement between processes, and fetching global arrays to the host.

One process per host (or per GPU); every process runs the same program on its own slice of the
global batch. :func:`jrnn.training.sharding.data_mesh` spans ``jax.devices()``, the devices of
*all* processes, so the compiled step all-reduces the gradient across hosts (XLA inserts the
collective; on CPU it goes over Gloo, on GPU over NCCL). Only process 0 writes files.

In one process every function here is the identity or a no-op, so the training loop has one
code path.
"""

from __future__ import annotations

import inspect
import math
import socket
import time
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np

DEFAULT_TIMEOUT = 20.0  # seconds: --coordinator-timeout


def _host_port(coordinator: str) -> Tuple[str, int]:
  host, port = coordinator.rsplit(":", 1)
  return host.strip("[]"), int(port)  # [::1]:1234 is an IPv6 host


def wait_for_coordinator(coordinator: str, timeout: float) -> None:
  """Returns once a TCP connection to ``coordinator`` (``HOST:PORT``) succeeds, retrying for
  up to ``timeout`` seconds (process 0 may start a little after the others).

  JAX's own wait cannot be interrupted: it aborts the process from C++ after its
  ``initialization_timeout`` (a stack trace, status 134). A plain socket fails in Python.

  Raises:
    ValueError: naming the host, the port, the last connection error and the flag to raise.
  """
  host, port = _host_port(coordinator)
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host, port), timeout=max(0.1, min(2.0, timeout))):
        return
    except OSError as e:
      reason = " ".join(str(e).split()) or type(e).__name__
    if time.monotonic() >= deadline:
      raise ValueError(
        f"cannot reach the coordinator at host {host} port {port} (--coordinator "
        f"{coordinator}) within {timeout:g} s: {reason}. Start process 0 first, check the "
        "address and that the port is open, or raise --coordinator-timeout"
      )
    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def initialize(
  coordinator: Optional[str] = None,
  num_processes: Optional[int] = None,
  process_id: Optional[int] = None,
  *,
  timeout: float = DEFAULT_TIMEOUT,
) -> None:
  """Joins this process to the others: ``jax.distributed.initialize`` with these arguments.

  Call it before any other JAX call. Arguments left ``None`` are read by JAX from the
  cluster's environment (SLURM, Open MPI, Kubernetes, Cloud TPU, or the variables
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``).

  ``timeout`` (seconds, ``--coordinator-timeout``) bounds the wait: a process other than 0
  first checks that it can reach ``coordinator`` (:func:`wait_for_coordinator`, a clear
  error), then JAX gets it as ``initialization_timeout`` where the installed JAX takes one.
  Past that JAX itself aborts the process (its C++ stack trace, status 134): process 0 when
  the others do not all join, or any process once the coordinator stops answering.

  Raises:
    ValueError: for arguments that cannot describe a group, an unreachable coordinator, or
      when JAX cannot join it (the message names the flags).
  """
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num-processes must be >= 1, got {num_processes}")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(
      f"--process-id must lie in [0, --num-processes={num_processes}), got {process_id}"
    )
  if coordinator is not None and (
    ":" not in coordinator
    or not coordinator.rsplit(":", 1)[1].isdigit()
    or not _host_port(coordinator)[0]
  ):
    raise ValueError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
  if (
    isinstance(timeout, bool)
    or not isinstance(timeout, (int, float))
    or not (math.isfinite(timeout) and timeout > 0)
  ):
    raise ValueError(f"--coordinator-timeout must be a positive number of seconds, got {timeout!r}")
  if coordinator is not None and process_id is not None and process_id != 0:
    wait_for_coordinator(coordinator, timeout)
  kwargs: Dict[str, Any] = {}
  if "initialization_timeout" in inspect.signature(jax.distributed.initialize).parameters:
    kwargs["initialization_timeout"] = max(1, math.ceil(timeout))  # JAX wants whole seconds
  try:
    jax.distributed.initialize(
      coordinator_address=coordinator, num_processes=num_processes, process_id=process_id, **kwargs
    )
  except (RuntimeError, ValueError) as e:  # JAX reports a failed join as either
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(
      f"could not join the process group (--coordinator {coordinator}, "
      f"--num-processes {num_processes}, --process-id {process_id}): {first}"
    ) from e


def is_writer() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def local_columns(tree: Any, batch_axis: int = 1) -> Any:
  """This process's part of a global batch: the columns ``[p·B/P, (p+1)·B/P)`` of axis
  ``batch_axis`` of every array (``P`` processes, this one ``p``); PRNG keys and arrays too
  small to have that axis are kept whole. The identity in one process."""
  n, p = jax.process_count(), jax.process_index()
  if n == 1:
    return tree

  def part(x):
    if x is None or (
      isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    ):
      return x
    if np.ndim(x) <= batch_axis:
      return x
    size = np.shape(x)[batch_axis]
    if size % n:
      raise ValueError(
        f"the global batch of {size} (axis {batch_axis} of shape {np.shape(x)}) "
        f"must be divisible by the {n} processes; change --batch-size"
      )
    k = size // n
    index = (slice(None),) * batch_axis + (slice(p * k, (p + 1) * k),)
    return np.asarray(x)[index]

  return jax.tree_util.tree_map(part, tree)


def agree(flag: bool) -> bool:
  """``True`` on every process when ``flag`` is true on any; all processes must call it at the
  same point of the program. No communication in one process."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  flags = multihost_utils.process_allgather(np.asarray(int(bool(flag)), np.int32))
  return bool(np.max(flags))


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name``; nothing in one process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices(name)


def to_host(tree: Any) -> Any:
  """Every array of ``tree`` as a NumPy array holding its *global* value (PRNG keys and
  non-arrays are left alone). Arrays split across processes are gathered, which every process
  must take part in: call it on all processes at the same point."""

  def fetch(x):
    if not isinstance(x, jax.Array) or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return x
    if x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(x)
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree_util.tree_map(fetch, tree)
