"""The copy (memory) task: read ``L`` symbols, wait ``D`` steps, then write them back.

Each sequence has ``T = 2L + D + 1`` steps over ``K + 2`` input symbols (``K`` data symbols, then
``blank = K`` and ``go = K + 1``), one-hot encoded:

=====================  ===============================  ===============================
steps                  input                            target (scored where ``mask``)
=====================  ===============================  ===============================
``0 … L-1``            data ``s_0 … s_{L-1}`` ∈ [0, K)   (unscored)
``L … L+D-1``          blank                            (unscored)
``L+D``                go                               (unscored)
``L+D+1 … 2L+D``       blank                            ``s_0 … s_{L-1}``
=====================  ===============================  ===============================

To answer, the state must hold ``L log₂ K`` bits across ``D + 1`` steps; guessing scores
``ln K`` nats per answer step. The symbols are drawn uniformly from a PRNG key: batch ``k`` of
training uses ``fold_in(train_key, k)`` and validation uses ``val_key``, with
``train_key, val_key = split(key)`` (:func:`split_keys`), so the two streams never share a key.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp


class CopyBatch(NamedTuple):
  xs: jax.Array  # shape=(T, B, K+2), one-hot inputs
  targets: jax.Array  # shape=(T, B), int32 symbols (0 where unscored)
  mask: jax.Array  # shape=(T, B), bool: the answer steps


def _check(name, value, low):
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def num_steps(length: int, delay: int) -> int:
  """``T = 2L + D + 1``."""
  return 2 * length + delay + 1


def split_keys(key: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """``(train_key, val_key)``: independent streams for training and validation."""
  train_key, val_key = jax.random.split(key)
  return train_key, val_key


def batch(
  key: jax.Array,
  batch_size: int,
  *,
  n_symbols: int = 8,
  length: int = 10,
  delay: int = 10,
  dtype=jnp.float32,
) -> CopyBatch:
  """A batch of the copy task (see the module docstring), time-major."""
  _check("batch_size", batch_size, 1)
  _check("n_symbols", n_symbols, 2)
  _check("length", length, 1)
  _check("delay", delay, 0)
  symbols = jax.random.randint(key, (length, batch_size), 0, n_symbols, dtype=jnp.int32)
  blank, go = n_symbols, n_symbols + 1
  wait = jnp.full((delay, batch_size), blank, jnp.int32)
  inputs = jnp.concatenate(
    [
      symbols,
      wait,
      jnp.full((1, batch_size), go, jnp.int32),
      jnp.full((length, batch_size), blank, jnp.int32),
    ]
  )
  targets = jnp.concatenate([jnp.zeros((length + delay + 1, batch_size), jnp.int32), symbols])
  mask = jnp.arange(num_steps(length, delay))[:, None] > length + delay
  mask = jnp.broadcast_to(mask, targets.shape)
  return CopyBatch(jax.nn.one_hot(inputs, n_symbols + 2, dtype=dtype), targets, mask)
