"""The adding problem: a long-range memory task (Hochreiter & Schmidhuber 1997; here the version
of Le, Jaitly & Hinton 2015).

Each input step has two channels: a value ``v_t ~ U[0, 1]`` and a marker ``m_t ∈ {0, 1}``. The
marker is 1 at exactly two steps, one drawn uniformly from the first half ``[0, ⌊T/2⌋)`` and
one from the second half ``[⌊T/2⌋, T)``; the target, read after the last step, is the sum of the
two marked values,

.. math::

   ŷ = \\sum_t m_t v_t ∈ [0, 2].

The first marked value must be remembered for at least ``T/2`` steps, about ``T`` on average.
Predicting the mean, ``ŷ = 1``, has mean squared error ``Var(v_a + v_b) = 2/12 = 1/6 ≈ 0.167``
(:data:`BASELINE_MSE`); a task counts as solved well below it (Le et al.: MSE < 0.01 is near
perfect).

Everything is a pure function of the key: the same key gives the same batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

BASELINE_MSE = 1.0 / 6.0  # MSE of always predicting the mean target 1


class AddingBatch(NamedTuple):
  xs: jax.Array  # shape=(T, B, 2): [value, marker] per step, time-major
  targets: jax.Array  # shape=(B,): sum of the two marked values


def batch(key: jax.Array, batch_size: int, seq_len: int, *, dtype=jnp.float32) -> AddingBatch:
  """A batch of ``batch_size`` adding-problem sequences of ``seq_len ≥ 2`` steps.

  Args:
    key: PRNG key; the batch is a deterministic function of it.
    batch_size: ``B``.
    seq_len: ``T``.
    dtype: floating dtype of both arrays.

  Returns:
    :class:`AddingBatch` ``(xs (T, B, 2), targets (B,))``.
  """
  for name, value, low in (("batch_size", batch_size, 1), ("seq_len", seq_len, 2)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
  if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
    raise TypeError(f"dtype must be a floating dtype, got {jnp.dtype(dtype)}")
  k_v, k_a, k_b = jax.random.split(key, 3)
  half = seq_len // 2
  values = jax.random.uniform(k_v, (seq_len, batch_size), dtype)
  first = jax.random.randint(k_a, (batch_size,), 0, half)
  second = jax.random.randint(k_b, (batch_size,), half, seq_len)
  steps = jnp.arange(seq_len)[:, None]
  markers = ((steps == first[None]) | (steps == second[None])).astype(dtype)
  targets = jnp.sum(values * markers, axis=0)
  return AddingBatch(jnp.stack([values, markers], axis=-1), targets)
