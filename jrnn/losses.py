"""Sequence losses ``L = Σ_t L_t(y_t, ŷ_t)``, masked.

Per step (``y_t`` the output, ``ŷ_t`` the target; ``o`` runs over the ``O`` outputs):

* squared error: ``L_t = Σ_o (y_{t,o} - ŷ_{t,o})²`` (no ½);
* softmax cross-entropy with integer labels ``c_t``: ``L_t = logsumexp(y_t) - y_{t,c_t}``.

Reductions over the per-step terms (padded steps, ``mask = 0``, contribute nothing):

* ``"sum"`` (default): ``Σ_b Σ_t L_t`` — the seed's sum over time, summed over the batch;
* ``"batch_mean"``: ``(1/B) Σ_b Σ_t L_t`` — sum over time, mean over sequences;
* ``"mean"``: the mean over valid steps, ``Σ L_t / Σ m_t`` (per token; bits per character are
  this divided by ``ln 2``);
* ``"none"``: the per-step terms, shape of the mask, zero at padded steps.

The axes are those of the outputs without their last axis: ``(T,)``, ``(T, B)`` or ``(B, T)``;
``time_axis`` (for ``"batch_mean"``) says which one is time.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jrnn import validation

REDUCTIONS = ("sum", "batch_mean", "mean", "none")


def reduce_steps(per_step: jax.Array, mask: Optional[jax.Array] = None, *,
                 reduction: str = "sum", time_axis: int = 0) -> jax.Array:
  """Applies ``mask`` and ``reduction`` to per-step losses (see the module docstring)."""
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
  if mask is not None:
    validation.check_shape("mask", mask, per_step.shape, "the outputs' leading axes")
    per_step = jnp.where(jnp.asarray(mask).astype(bool), per_step, 0)
  if reduction == "none":
    return per_step
  total = jnp.sum(per_step)
  if reduction == "sum":
    return total
  if reduction == "batch_mean":
    n_seq = per_step.size // per_step.shape[time_axis] if per_step.ndim > 1 else 1
    return total / n_seq
  count = per_step.size if mask is None else jnp.sum(jnp.asarray(mask).astype(per_step.dtype))
  return total / jnp.maximum(count, 1)


def squared_error(ys: jax.Array, targets: jax.Array, mask: Optional[jax.Array] = None, *,
                  reduction: str = "sum", time_axis: int = 0) -> jax.Array:
  """``Σ_t Σ_o (y_{t,o} - ŷ_{t,o})²``, reduced as the module docstring says.

  Args:
    ys: outputs ``(..., O)``, e.g. ``(T, B, O)``.
    targets: ``ŷ``, the same shape and dtype.
    mask: ``ys.shape[:-1]``, boolean or 0/1, or ``None``.
    reduction: ``"sum"``, ``"batch_mean"``, ``"mean"`` or ``"none"``.
    time_axis: the time axis of ``ys.shape[:-1]`` (for ``"batch_mean"``).
  """
  validation.check_float("ys", ys)
  validation.check_float("targets", targets, jnp.result_type(ys))
  validation.check_shape("targets", targets, jnp.shape(ys), "ys.shape")
  per_step = jnp.sum((ys - targets) ** 2, axis=-1)
  return reduce_steps(per_step, mask, reduction=reduction, time_axis=time_axis)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array,
                          mask: Optional[jax.Array] = None, *, reduction: str = "sum",
                          time_axis: int = 0) -> jax.Array:
  """``Σ_t (logsumexp(y_t) - y_{t, c_t})`` with integer labels ``c_t``, reduced.

  Args:
    logits: ``(..., O)``, e.g. ``(T, B, O)``.
    labels: integers in ``[0, O)``, shape ``logits.shape[:-1]``.
    mask, reduction, time_axis: as :func:`squared_error`.
  """
  validation.check_float("logits", logits)
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(f"labels must have an integer dtype, got {jnp.result_type(labels)}")
  validation.check_shape("labels", labels, jnp.shape(logits)[:-1], "logits.shape[:-1]")
  picked = jnp.take_along_axis(logits, jnp.asarray(labels)[..., None], axis=-1)[..., 0]
  per_step = jax.nn.logsumexp(logits, axis=-1) - picked
  return reduce_steps(per_step, mask, reduction=reduction, time_axis=time_axis)
