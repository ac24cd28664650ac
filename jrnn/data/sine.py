"""Sine-wave next-step prediction, a smooth time series.

A sequence is ``x_t = A sin(2π f t + φ)`` for ``t = 0 … T``, with frequency ``f`` (cycles per
step), amplitude ``A`` and phase ``φ`` drawn per sequence uniformly from ``freq_range``,
``amp_range`` and ``[0, 2π)``. Inputs are ``x_0 … x_{T-1}``, targets ``x_1 … x_T``: the network
must infer ``f``, ``A`` and ``φ`` from what it has seen. Predicting ``ŷ_t = x_t`` (no model) has
mean squared error ``A² (1 - cos 2πf)`` per step, the baseline to beat.

Keys as in :mod:`jrnn.data.copy_task`: training batch ``k`` uses ``fold_in(train_key, k)``,
validation ``val_key``, ``train_key, val_key = split(key)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp


class SineBatch(NamedTuple):
  xs: jax.Array  # shape=(T, B, 1)
  targets: jax.Array  # shape=(T, B, 1)


def split_keys(key: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """``(train_key, val_key)``."""
  train_key, val_key = jax.random.split(key)
  return train_key, val_key


def batch(
  key: jax.Array,
  batch_size: int,
  seq_len: int,
  *,
  freq_range: Tuple[float, float] = (0.01, 0.1),
  amp_range: Tuple[float, float] = (0.5, 1.0),
  dtype=jnp.float32,
) -> SineBatch:
  """A batch of ``batch_size`` waves of ``seq_len`` steps, time-major."""
  for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  for name, (lo, hi) in (("freq_range", freq_range), ("amp_range", amp_range)):
    if not 0 < lo <= hi:
      raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
  k_f, k_a, k_p = jax.random.split(key, 3)
  freq = jax.random.uniform(k_f, (batch_size,), dtype, *freq_range)
  amp = jax.random.uniform(k_a, (batch_size,), dtype, *amp_range)
  phase = jax.random.uniform(k_p, (batch_size,), dtype, 0.0, 2 * math.pi)
  t = jnp.arange(seq_len + 1, dtype=dtype)[:, None]
  wave = (amp[None] * jnp.sin(2 * math.pi * freq[None] * t + phase[None]))[..., None]
  return SineBatch(wave[:-1], wave[1:])
