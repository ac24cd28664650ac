"""Sequence classification: one label per sequence, read from the state after its last valid step.

For a sequence ``x_1 … x_{n_b}`` of length ``n_b`` (padded to ``T``) with label ``c_b``,

.. math::

   z_b = W_{hy} h_{n_b} + b_y, \\qquad
   L = \\frac{1}{B} \\sum_b \\big(\\mathrm{logsumexp}(z_b) - z_{b, c_b}\\big),

where ``h_{n_b}`` is the state after step ``n_b``: :func:`jrnn.forward` carries the state
unchanged over padded steps (``lengths`` or ``mask``), so its ``h_last`` is that state and padded
steps touch neither the loss nor its gradient. The readout of the other steps is never formed.

* :func:`last_step_logits` gives ``z (B, O)``;
* :func:`classification_loss` builds ``loss(params, batch)`` for the train steps of
  :mod:`jrnn.training.steps` and :mod:`jrnn.training.seeds`;
* :func:`accuracy` is the fraction of sequences whose largest logit is the label.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike
from jrnn.cell import readout
from jrnn.losses import softmax_cross_entropy
from jrnn.params import RNNParams, StackedParams
from jrnn.unroll import forward, stacked_forward


class LabelledBatch(NamedTuple):
  """Time-major sequences with one integer label each."""

  xs: jax.Array  # shape=(T, B, I), float
  labels: jax.Array  # shape=(B,), int in [0, O)
  lengths: Optional[jax.Array] = None  # shape=(B,), int in [0, T]; None: every step is valid


def last_step_logits(
  params,
  xs: jax.Array,
  *,
  lengths: Optional[jax.Array] = None,
  activation: ActivationLike = "tanh",
  unroll: int = 1,
  grad: str = "hand",
  kernel: str = "auto",
) -> jax.Array:
  """``z = W_hy h_{n_b} + b_y``: the readout of each sequence's state after its last valid step.

  Args:
    params: :class:`jrnn.RNNParams`, or unidirectional :class:`jrnn.StackedParams` with a
      readout (the top layer's state is read).
    xs: time-major inputs ``(T, B, I)``.
    lengths: ``(B,)`` integers in ``[0, T]`` (a sequence of length 0 is read from ``h0``), or
      ``None`` for sequences of the full length ``T``.
    activation, unroll, grad, kernel: passed to :func:`jrnn.forward`.

  Returns:
    Logits ``(B, O)``.
  """
  if jnp.ndim(xs) != 3:
    raise ValueError(f"xs must be time-major with shape (T, B, I), got {jnp.shape(xs)}")
  kwargs: Dict[str, Any] = dict(
    lengths=lengths, activation=activation, unroll=unroll, grad=grad, kernel=kernel
  )
  if isinstance(params, StackedParams):
    if params.w_hy is None or params.num_directions != 1:
      raise ValueError(
        "last_step_logits needs unidirectional StackedParams with a readout "
        "(a reverse direction has no last step to read)"
      )
    h_last = stacked_forward(params, xs, **kwargs).h_last[-1]
  elif isinstance(params, RNNParams):
    h_last = forward(params, xs, **kwargs).h_last
  else:
    raise TypeError(f"params must be RNNParams or StackedParams, got {type(params).__name__}")
  return readout(params.w_hy, params.b_y, h_last)


def classification_loss(
  *, activation: ActivationLike = "tanh", unroll: int = 1, grad: str = "hand", kernel: str = "auto"
) -> Callable[..., jax.Array]:
  """``loss(params, batch: LabelledBatch)``: mean softmax cross-entropy of the last-step logits.

  Arguments are passed to :func:`last_step_logits`. The loss is a scalar (no ``aux``): pass it to
  :func:`jrnn.training.make_train_step` with ``has_aux=False``.
  """

  def loss(params, batch: LabelledBatch) -> jax.Array:
    logits = last_step_logits(
      params,
      batch.xs,
      lengths=batch.lengths,
      activation=activation,
      unroll=unroll,
      grad=grad,
      kernel=kernel,
    )
    return softmax_cross_entropy(logits, batch.labels, reduction="mean")

  return loss


def accuracy(
  params,
  batch: LabelledBatch,
  *,
  activation: ActivationLike = "tanh",
  unroll: int = 1,
  kernel: str = "auto",
) -> jax.Array:
  """Fraction of sequences whose largest last-step logit is the label (a scalar in ``[0, 1]``)."""
  logits = last_step_logits(
    params, batch.xs, lengths=batch.lengths, activation=activation, unroll=unroll, kernel=kernel
  )
  return jnp.mean((jnp.argmax(logits, axis=-1) == batch.labels).astype(logits.dtype))


__all__ = ("LabelledBatch", "accuracy", "classification_loss", "last_step_logits")
