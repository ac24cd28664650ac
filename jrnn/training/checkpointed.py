"""Gradient checkpointing for long sequences: keep the state every ``k`` steps, recompute the rest.

Full BPTT keeps every hidden state ``h_1 … h_T`` (and autodiff keeps more: every intermediate of
every step) until the backward pass, so memory grows as ``T·B·H``. Checkpointing splits the
sequence into ``S = ⌈T/k⌉`` segments of ``k`` steps and keeps only the states at segment
boundaries, ``h_0, h_k, h_{2k}, …``. The backward pass visits the segments in reverse; for each
it recomputes the segment's ``k`` states from the stored boundary state and runs the segment's
BPTT, handing ``∂L/∂h_{sk}`` on to the segment before:

.. math::

   \\frac{∂L}{∂h_{(s-1)k}} = \\frac{∂L_{\\text{segment } s}}{∂h_{(s-1)k}}
     + \\frac{∂L}{∂h_{sk}} \\frac{∂h_{sk}}{∂h_{(s-1)k}}

The result is the same gradient as full BPTT (not an approximation, unlike
:mod:`jrnn.training.truncated`), for memory ``O((T/k + k)·B·H)`` instead of ``O(T·B·H)`` and one
extra forward pass. ``k = √T`` (the default) balances the two terms (Chen et al. 2016, "Training
deep nets with sublinear memory cost").

The readout and the loss are fused into each segment, so neither the outputs ``y_t`` nor the
input projection of the whole sequence is ever held at once: a segment reads its slice of
``xs`` and returns only its boundary state and its loss. Implemented as a ``lax.scan`` over
segments of a ``jax.checkpoint``-ed segment function; inside a segment the recurrence is
differentiated by ``grad`` (the hand-derived VJP by default).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike
from jrnn.cell import readout
from jrnn.inputs import initial_state, prepare
from jrnn.losses import check_loss, loss_value, prepare_targets, reduction_divisor
from jrnn.params import RNNParams
from jrnn.unroll import forward, layer_forward


def default_segment_length(n_steps: int) -> int:
  """``⌈√T⌉``: about as many segments as steps per segment."""
  return max(1, math.isqrt(max(n_steps - 1, 0)) + 1)


def checkpointed_loss(
  params: RNNParams,
  xs: jax.Array,
  targets: jax.Array,
  *,
  segment_length: Optional[int] = None,
  loss: str = "squared_error",
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  h0: Optional[jax.Array] = None,
  reduction: str = "sum",
  time_major: bool = True,
  unroll: int = 1,
  grad: str = "hand",
  kernel: str = "auto",
) -> jax.Array:
  """The loss of :func:`jrnn.forward` plus a readout loss, with a checkpointed backward pass.

  .. math::

     L = \\sum_{s=1}^{S} \\sum_{t ∈ \\text{segment } s} L_t(y_t, ŷ_t), \\qquad
     h_{sk} = \\mathrm{segment}_s(h_{(s-1)k})

  Its value equals ``squared_error(forward(params, xs).ys, targets)`` (or cross-entropy), and
  ``jax.grad`` of it equals full BPTT; only the memory differs (see the module docstring).
  Differentiable with respect to ``params``, ``xs`` and ``h0``.

  Args:
    params: :class:`RNNParams`.
    xs, targets, loss, activation, output_activation, mask, lengths, h0, reduction,
      time_major: as :func:`jrnn.reference.hand_loss_and_grads`.
    segment_length: ``k``, steps per segment; default ``⌈√T⌉``. ``T`` need not be a multiple:
      the last segment is padded with masked steps.
    unroll: ``lax.scan``'s ``unroll`` inside a segment.
    grad, kernel: how each segment is differentiated and run (:mod:`jrnn.engine`).

  Returns:
    The scalar loss.
  """
  check_loss(loss, reduction)
  jax.eval_shape(
    functools.partial(
      forward,
      h0=h0,
      mask=mask,
      lengths=lengths,
      activation=activation,
      output_activation=output_activation,
      time_major=time_major,
      grad=grad,
      kernel=kernel,
    ),
    params,
    xs,
  )
  n_in, n_hidden, n_out = params.sizes
  dtype = jnp.result_type(params.w_hh)
  x, m, h0_in, layout = prepare(
    xs, mask, lengths, h0, n_in=n_in, n_hidden=n_hidden, dtype=dtype, time_major=time_major
  )
  tg = prepare_targets(targets, jnp.shape(xs), layout, n_out, loss, dtype)
  n_steps, n_batch = x.shape[:2]
  k = default_segment_length(n_steps) if segment_length is None else segment_length
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"segment_length must be a positive int or None, got {segment_length!r}")
  k = min(k, n_steps)
  n_seg = math.ceil(n_steps / k)
  pad = n_seg * k - n_steps
  if pad and m is None:
    m = jnp.ones((n_steps, n_batch), bool)

  def segments(a):
    if a is None:
      return None
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))  # padded steps: mask False, no loss
    return a.reshape((n_seg, k) + a.shape[1:])

  if h0_in is None:
    h0_in = initial_state(params.layer, n_batch)

  # Without prevent_cse XLA may merge the recomputation with the forward pass and keep its
  # intermediates after all; inside a scan it is safe to turn off (the jax.checkpoint docs).
  @functools.partial(jax.checkpoint, prevent_cse=False)
  def segment(p, h, x_s, tg_s, m_s):
    hs = layer_forward(
      p.layer, x_s, h0=h, mask=m_s, activation=activation, unroll=unroll, grad=grad, kernel=kernel
    )
    ys = readout(p.w_hy, p.b_y, hs, output_activation)
    return hs[-1], loss_value(ys, tg_s, m_s, loss, "sum")

  def body(carry, inp):
    h, total = carry
    h, value = segment(params, h, *inp)
    return (h, total + value), None

  (_, total), _ = jax.lax.scan(
    body, (h0_in, jnp.zeros((), dtype)), (segments(x), segments(tg), segments(m))
  )
  return total / reduction_divisor(m, n_steps, n_batch, reduction)
