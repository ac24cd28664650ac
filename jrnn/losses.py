"""Sequence losses ``L = Σ_t L_t(y_t, ŷ_t)``, masked.

Per step (``y_t`` the output, ``ŷ_t`` the target; ``o`` runs over the ``O`` outputs):

* squared error: ``L_t = Σ_o (y_{t,o} - ŷ_{t,o})²`` (no ½);
* softmax cross-entropy with integer labels ``c_t``: ``L_t = logsumexp(y_t) - y_{t,c_t}``.

Reductions over the per-step terms (padded steps, ``mask = 0``, contribute nothing):

* ``"sum"`` (default): ``Σ_b Σ_t L_t`` — the seed's sum over time, summed over the batch;
* ``"batch_mean"``: ``(1/B) Σ_b Σ_t L_t`` — sum over time, mean over sequences;
* ``"mean"``: the mean over valid steps, ``Σ L_t`` divided by the number of nonzero mask entries
  (per token; bits per character are this divided by ``ln 2``); 0 when no step is valid;
* ``"none"``: the per-step terms, shape of the mask, zero at padded steps.

A mask is boolean or numeric; any nonzero entry marks a valid step (it is not a weight). Padded
steps may hold anything, NaN included: they touch neither the value nor the gradient.

The axes are those of the outputs without their last axis: ``(T,)``, ``(T, B)`` or ``(B, T)``;
``time_axis`` (for ``"batch_mean"``) says which one is time.
"""

from __future__ import annotations

import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import validation

REDUCTIONS = ("sum", "batch_mean", "mean", "none")
LOSSES = ("squared_error", "cross_entropy")
SCALAR_REDUCTIONS = ("sum", "batch_mean", "mean")


def _array(name: str, x, *, min_rank: int = 0, what: str = ""):
  """``x`` with nested lists made arrays; ``TypeError``/``ValueError`` naming ``name`` for a
  non-array or too few axes (``what`` names the axes wanted, e.g. ``"(..., O)"``)."""
  x = validation.from_nested(x)
  if not (hasattr(x, "shape") and hasattr(x, "dtype")) and not isinstance(x, numbers.Number):
    raise TypeError(f"{name} must be an array, got {type(x).__name__}")
  if jnp.ndim(x) < min_rank:
    raise ValueError(
      f"{name} must have shape {what} (at least {min_rank} axis), got {jnp.shape(x)}"
    )
  return x


def _check_reduction(reduction) -> None:
  if not isinstance(reduction, str) or reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_steps(
  per_step: jax.Array,
  mask: Optional[jax.Array] = None,
  *,
  reduction: str = "sum",
  time_axis: int = 0,
) -> jax.Array:
  """Applies ``mask`` and ``reduction`` to per-step losses (see the module docstring).

  Args:
    per_step: ``L_t`` for every step, e.g. ``(T, B)``.
    mask: the same shape, boolean or numeric (nonzero marks a valid step), or ``None``.
    reduction: ``"sum"``, ``"batch_mean"``, ``"mean"`` or ``"none"``.
    time_axis: which axis of ``per_step`` is time (``"batch_mean"`` divides by the product of the
      others).
  """
  _check_reduction(reduction)
  per_step = _array("per_step", per_step)
  if mask is not None:
    mask = _array("mask", mask)
  ndim = jnp.ndim(per_step)
  if (
    isinstance(time_axis, bool)
    or not isinstance(time_axis, int)
    or not (-max(ndim, 1) <= time_axis < max(ndim, 1))
  ):
    raise ValueError(
      f"time_axis must be an int in [-{max(ndim, 1)}, {max(ndim, 1)}) for "
      f"per-step losses of shape {jnp.shape(per_step)}, got {time_axis!r}"
    )
  if mask is not None:
    validation.check_shape("mask", mask, jnp.shape(per_step), "ys.shape[:-1]")
    validation.check_mask_dtype(mask)
    mask = jnp.asarray(mask).astype(bool)
    # Select rather than multiply, so a NaN or inf at a padded step cannot leak into the sum.
    per_step = jnp.where(mask, per_step, 0)
  if reduction == "none":
    return per_step
  total = jnp.sum(per_step)
  if reduction == "sum":
    return total
  if reduction == "batch_mean":
    n_seq = per_step.size // per_step.shape[time_axis] if ndim > 1 else 1
    return total / max(n_seq, 1)
  count = per_step.size if mask is None else jnp.sum(mask.astype(per_step.dtype))
  return total / jnp.maximum(count, 1)


def squared_error(
  ys: jax.Array,
  targets: jax.Array,
  mask: Optional[jax.Array] = None,
  *,
  reduction: str = "sum",
  time_axis: int = 0,
) -> jax.Array:
  """``Σ_t Σ_o (y_{t,o} - ŷ_{t,o})²``, reduced as the module docstring says.

  Args:
    ys: outputs ``(..., O)``, e.g. ``(T, B, O)``.
    targets: ``ŷ``, the same shape and dtype.
    mask: ``ys.shape[:-1]``, boolean or 0/1, or ``None``.
    reduction: ``"sum"``, ``"batch_mean"``, ``"mean"`` or ``"none"``.
    time_axis: the time axis of ``ys.shape[:-1]`` (for ``"batch_mean"``).
  """
  _check_reduction(reduction)
  ys = _array("ys", ys, min_rank=1, what="(..., O)")
  targets = _array("targets", targets)
  mask = None if mask is None else _array("mask", mask)
  validation.check_float("ys", ys)
  validation.check_float("targets", targets, jnp.result_type(ys))
  validation.check_shape("targets", targets, jnp.shape(ys), "ys.shape")
  ys, targets = _zero_padded(mask, ys, targets)
  per_step = jnp.sum((ys - targets) ** 2, axis=-1)
  return reduce_steps(per_step, mask, reduction=reduction, time_axis=time_axis)


def softmax_cross_entropy(
  logits: jax.Array,
  labels: jax.Array,
  mask: Optional[jax.Array] = None,
  *,
  reduction: str = "sum",
  time_axis: int = 0,
) -> jax.Array:
  """``Σ_t (logsumexp(y_t) - y_{t, c_t})`` with integer labels ``c_t``, reduced.

  Args:
    logits: ``(..., O)``, e.g. ``(T, B, O)``.
    labels: integers in ``[0, O)``, shape ``logits.shape[:-1]``; padded steps may hold any
      value (``-1`` is common). Out-of-range labels at valid steps raise ``ValueError`` when
      concrete; traced ones (under ``jit``) make the loss NaN.
    mask, reduction, time_axis: as :func:`squared_error`.
  """
  _check_reduction(reduction)
  logits = _array("logits", logits, min_rank=1, what="(..., O)")
  labels = _array("labels", labels)
  mask = None if mask is None else _array("mask", mask)
  validation.check_float("logits", logits)
  if jnp.shape(logits)[-1] < 1:
    raise ValueError(
      f"logits must have at least one class, shape (..., O >= 1), got {jnp.shape(logits)}"
    )
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(f"labels must have an integer dtype, got {jnp.result_type(labels)}")
  validation.check_shape("labels", labels, jnp.shape(logits)[:-1], "logits.shape[:-1]")
  n_classes = jnp.shape(logits)[-1]
  _check_label_range(labels, mask, n_classes)
  (logits,) = _zero_padded(mask, logits)
  labels = jnp.asarray(labels)
  in_range = (labels >= 0) & (labels < n_classes)
  picked = jnp.take_along_axis(logits, jnp.clip(labels, 0, n_classes - 1)[..., None], axis=-1)[
    ..., 0
  ]
  # A traced out-of-range label cannot raise; it gives NaN rather than a wrong finite loss.
  per_step = jnp.where(in_range, jax.nn.logsumexp(logits, axis=-1) - picked, jnp.nan)
  return reduce_steps(per_step, mask, reduction=reduction, time_axis=time_axis)


def _zero_padded(mask, *arrays):
  """Zeros ``arrays (..., O)`` at padded steps before any arithmetic.

  ``reduce_steps`` already drops padded terms from the value, but the gradient of a term computed
  from a NaN or inf (``softmax(nan)·0``) is still NaN; selecting finite inputs first keeps the
  gradient at padded steps exactly zero.
  """
  if mask is None:
    return arrays
  validation.check_shape("mask", mask, jnp.shape(arrays[0])[:-1], "ys.shape[:-1]")
  validation.check_mask_dtype(mask)
  keep = jnp.asarray(mask).astype(bool)[..., None]
  return tuple(jnp.where(keep, a, 0) for a in arrays)


def _check_label_range(labels, mask, n_classes: int) -> None:
  """Concrete labels at valid steps must lie in ``[0, O)``; padded steps may hold anything."""
  if isinstance(labels, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
    return
  labels = np.asarray(labels)
  if mask is not None:
    labels = labels[np.asarray(mask).astype(bool)]
  if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
    raise ValueError(
      f"labels must lie in [0, O={n_classes}) at valid steps, got min "
      f"{labels.min()} and max {labels.max()}"
    )


# --------------------------------------------------------------------------------------------
# Plumbing shared by the whole-sequence losses (reference BPTT, truncated, checkpointed).


def check_loss(loss: str, reduction: str) -> None:
  """Raises ``ValueError`` for an unknown ``loss`` or a non-scalar ``reduction``."""
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  if reduction not in SCALAR_REDUCTIONS:
    raise ValueError(
      f"reduction must be one of {SCALAR_REDUCTIONS} (a scalar loss), got {reduction!r}"
    )


def prepare_targets(targets, xs_shape, layout, n_out: int, loss: str, dtype) -> jax.Array:
  """Checks ``targets`` against the caller's ``xs`` and returns them time-major ``(T, B, ...)``.

  Squared error wants ``targets`` of shape ``xs.shape[:-1] + (O,)`` and the parameters' dtype;
  cross-entropy wants integer labels of shape ``xs.shape[:-1]``. ``layout`` is the
  :class:`jrnn.inputs.Layout` of ``xs``.
  """
  lead = tuple(xs_shape[:-1])
  if loss == "squared_error":
    validation.check_float("targets", targets, dtype)
    validation.check_shape("targets", targets, lead + (n_out,), "xs.shape[:-1] + (O,)")
  else:
    if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
      raise TypeError(
        f"targets must be integer labels for cross_entropy, got {jnp.result_type(targets)}"
      )
    validation.check_shape("targets", targets, lead, "xs.shape[:-1]")
  targets = jnp.asarray(targets)
  if not layout.batched:
    return targets[:, None]
  return targets if layout.time_major else jnp.swapaxes(targets, 0, 1)


def loss_value(ys, targets, mask, loss: str, reduction: str) -> jax.Array:
  """``L`` of ``loss`` for time-major ``ys (T, B, O)``, reduced by ``reduction``."""
  fn = squared_error if loss == "squared_error" else softmax_cross_entropy
  return fn(ys, targets, mask, reduction=reduction, time_axis=0)


def reduction_divisor(mask: Optional[jax.Array], n_steps: int, n_batch: int, reduction: str):
  """What a time-major per-step sum is divided by under ``reduction`` (``mask (T, B)``)."""
  if reduction == "sum":
    return 1
  if reduction == "batch_mean":
    return n_batch
  if mask is None:
    return max(n_steps * n_batch, 1)
  return jnp.maximum(jnp.sum(jnp.asarray(mask).astype(jnp.int32)), 1)
