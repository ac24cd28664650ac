"""Truncated backpropagation through time: BPTT(k1, k2), and its chunked form with k1 = k2.

Full BPTT sums every path from a loss term ``L_t`` back to step 1. Truncated BPTT
(Williams & Peng 1990; Sutskever 2013, §2.8.6) cuts those paths: every ``k1`` steps, at
``t_n = n·k1``, it backpropagates the losses of the last ``k1`` steps through the last
``k2 ≥ k1`` steps only, treating the state ``h_{t_n - k2}`` as a constant:

.. math::

   \\widetilde{\\frac{∂L}{∂θ}} = \\sum_{n=1}^{⌈T/k_1⌉} \\frac{∂}{∂θ}
     \\sum_{t = (n-1)k_1 + 1}^{\\min(t_n, T)} L_t\\bigl(θ;\\ \\bar h_{t_n - k_2}\\bigr),
   \\qquad \\bar h = \\mathrm{stop\\_gradient}(h)

where ``L_t(θ; h̄_s)`` runs the recurrence from the frozen state ``h̄_s`` (``h_0`` itself, still
differentiable when learnt, if ``s ≤ 0``). Each loss term is counted once, so the loss value is
the full loss; only the gradient is truncated. ``k1 = k2 = T`` is full BPTT. When ``T`` is not a
multiple of ``k1`` the last window keeps its place on the grid of multiples of ``k1`` (as if the
sequence were padded), so with ``k1 = k2`` the windows are exactly the chunks of
:func:`chunked_bptt`.

:func:`truncated_bptt` computes the general case by running every window of ``k2`` steps as one
extra batch row (one forward pass for the frozen states, one for the windows).
:func:`chunked_bptt` is the common ``k1 = k2 = k``: the windows tile the sequence, so a
``lax.scan`` over chunks carries the state forward without gradient and keeps only one chunk's
residuals alive (memory ``O(k)`` instead of ``O(T)``). :func:`bptt_chunk` is one such chunk for
streaming training, where the caller updates the parameters between chunks.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike
from jrnn.inputs import initial_state, prepare
from jrnn.losses import check_loss, loss_value, prepare_targets, reduction_divisor
from jrnn.params import RNNParams
from jrnn.unroll import forward


class TruncatedResult(NamedTuple):
  """Loss, truncated gradients, and the state to carry on from."""

  loss: jax.Array  # shape=()
  grads: RNNParams  # h0 None unless learnt
  h_last: jax.Array  # shape=(B, H), or (H,) unbatched: the state after the last valid step


def _check_window(name: str, k) -> None:
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"{name} must be a positive int, got {k!r}")


def _setup(
  params,
  xs,
  targets,
  *,
  loss,
  reduction,
  mask,
  lengths,
  h0,
  time_major,
  activation,
  output_activation,
):
  """Validates like :func:`jrnn.forward`; returns time-major arrays and the layout."""
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
  m = jnp.ones(x.shape[:2], bool) if m is None else m
  return x, tg, m, h0_in, layout


def _summed_loss(
  params, x, h_start, run_mask, loss_mask, tg, *, loss, activation, output_activation, grad, kernel
):
  """``Σ L_t`` over ``loss_mask`` of the recurrence run from ``h_start``; also its final state."""
  out = forward(
    params,
    x,
    h0=h_start,
    mask=run_mask,
    activation=activation,
    output_activation=output_activation,
    grad=grad,
    kernel=kernel,
  )
  value = loss_value(out.ys, tg, loss_mask, loss, "sum")
  return value, out.h_last


def truncated_bptt(
  params: RNNParams,
  xs: jax.Array,
  targets: jax.Array,
  *,
  k1: int,
  k2: Optional[int] = None,
  loss: str = "squared_error",
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  h0: Optional[jax.Array] = None,
  reduction: str = "sum",
  time_major: bool = True,
  grad: str = "hand",
  kernel: str = "auto",
) -> TruncatedResult:
  """BPTT(k1, k2): every ``k1`` steps, backpropagate the last ``k1`` losses through ``k2`` steps.

  See the module docstring for the gradient it computes. The window ending at ``t_n = n·k1``
  covers steps ``t_n - k2 + 1 … t_n``; steps before 1 or after ``T`` are padding that leaves
  the state unchanged. All ``⌈T/k1⌉`` windows run as ``⌈T/k1⌉·B`` rows of one batch, so the
  cost is about ``T + T·k2/k1`` recurrent steps.

  Args:
    params: :class:`RNNParams`.
    xs, targets, loss, activation, output_activation, mask, lengths, h0, reduction,
      time_major: as :func:`jrnn.reference.hand_loss_and_grads`.
    k1: steps between backward passes (each loss term is in exactly one window).
    k2: steps each backward pass goes back, ``k2 ≥ k1``; default ``k1``.
    grad, kernel: how each window is differentiated and run (:mod:`jrnn.engine`).

  Returns:
    :class:`TruncatedResult` ``(loss, grads, h_last)``; ``loss`` is the full loss.
  """
  k2 = k1 if k2 is None else k2
  _check_window("k1", k1)
  _check_window("k2", k2)
  if k2 < k1:
    raise ValueError(
      f"k2 must be at least k1 (each loss term is backpropagated through its own "
      f"window), got k1={k1}, k2={k2}"
    )
  cfg = dict(
    loss=loss, activation=activation, output_activation=output_activation, grad=grad, kernel=kernel
  )
  x, tg, m, h0_in, layout = _setup(
    params,
    xs,
    targets,
    loss=loss,
    reduction=reduction,
    mask=mask,
    lengths=lengths,
    h0=h0,
    time_major=time_major,
    activation=activation,
    output_activation=output_activation,
  )
  n_steps, n_batch = m.shape
  n_win = math.ceil(n_steps / k1)
  ends = k1 * (jnp.arange(n_win) + 1)  # t_n: one past each window, 0-based
  idx = ends[:, None] - k2 + jnp.arange(k2)[None, :]  # (N, k2) step indices; outside [0, T): pad
  first_counted = k1 * jnp.arange(n_win)[:, None]
  safe = jnp.clip(idx, 0, n_steps - 1)

  def windows(a):
    """(T, B, ...) -> (k2, N·B, ...) gathered at ``idx``."""
    w = jnp.swapaxes(a[safe], 0, 1)  # (k2, N, B, ...)
    return w.reshape((k2, n_win * n_batch) + a.shape[2:])

  valid = ((idx >= 0) & (idx < n_steps))[:, :, None] & m[safe]  # (N, k2, B)
  run_mask = jnp.swapaxes(valid, 0, 1).reshape(k2, n_win * n_batch)
  counted = valid & (idx >= first_counted)[:, :, None]
  loss_mask = jnp.swapaxes(counted, 0, 1).reshape(k2, n_win * n_batch)
  x_w, tg_w = windows(x), windows(tg)
  starts = ends - k2  # the frozen state is h_{t_n - k2}: after 0-based step starts - 1
  from_h0 = jnp.repeat(starts <= 0, n_batch)[:, None]
  norm = reduction_divisor(m, m.shape[0], m.shape[1], reduction)
  # The states the windows start from, computed once and held constant (no gradient).
  hs = jax.lax.stop_gradient(
    forward(
      params,
      x,
      h0=initial_state(params.layer, n_batch, h0_in),
      mask=m,
      activation=activation,
      grad=grad,
      kernel=kernel,
    ).hs
  )
  frozen = hs[jnp.clip(starts - 1, 0, n_steps - 1)].reshape(n_win * n_batch, -1)

  def total(p):
    h_init = jnp.tile(initial_state(p.layer, n_batch, h0_in), (n_win, 1))
    h_start = jnp.where(from_h0, h_init, frozen)
    value, _ = _summed_loss(p, x_w, h_start, run_mask, loss_mask, tg_w, **cfg)
    return value / norm

  value, grads = jax.value_and_grad(total)(params)
  return TruncatedResult(value, grads, layout.restore(hs[-1], False))


def bptt_chunk(
  params: RNNParams,
  xs: jax.Array,
  targets: jax.Array,
  *,
  h0: Optional[jax.Array] = None,
  loss: str = "squared_error",
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  reduction: str = "sum",
  time_major: bool = True,
  grad: str = "hand",
  kernel: str = "auto",
) -> TruncatedResult:
  """One chunk of streaming truncated BPTT: loss and gradients from a state carried in frozen.

  .. math::

     \\frac{∂}{∂θ} \\sum_{t ∈ \\text{chunk}} L_t\\bigl(θ;\\ \\mathrm{stop\\_gradient}(h)\\bigr)

  Feed ``h_last`` back as ``h0`` for the next chunk; ``h0=None`` starts from the learnt
  ``params.h0`` (which then gets a gradient) or zeros. The reduction applies within the chunk.

  Args:
    params: :class:`RNNParams`.
    xs, targets, loss, activation, output_activation, mask, lengths, reduction, time_major,
      grad, kernel: as :func:`truncated_bptt`, for this chunk.
    h0: the carried state ``(H,)`` or ``(B, H)`` (frozen: no gradient flows into it), or None.

  Returns:
    :class:`TruncatedResult` for the chunk.
  """
  x, tg, m, h_in, layout = _setup(
    params,
    xs,
    targets,
    loss=loss,
    reduction=reduction,
    mask=mask,
    lengths=lengths,
    h0=h0,
    time_major=time_major,
    activation=activation,
    output_activation=output_activation,
  )
  h_in = None if h_in is None else jax.lax.stop_gradient(h_in)
  norm = reduction_divisor(m, m.shape[0], m.shape[1], reduction)

  def total(p):
    h_start = initial_state(p.layer, m.shape[1], h_in)
    value, h_last = _summed_loss(
      p,
      x,
      h_start,
      m,
      m,
      tg,
      loss=loss,
      activation=activation,
      output_activation=output_activation,
      grad=grad,
      kernel=kernel,
    )
    return value / norm, h_last

  (value, h_last), grads = jax.value_and_grad(total, has_aux=True)(params)
  return TruncatedResult(value, grads, layout.restore(h_last, False))


def chunked_bptt(
  params: RNNParams,
  xs: jax.Array,
  targets: jax.Array,
  *,
  chunk_length: int,
  loss: str = "squared_error",
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  h0: Optional[jax.Array] = None,
  reduction: str = "sum",
  time_major: bool = True,
  grad: str = "hand",
  kernel: str = "auto",
) -> TruncatedResult:
  """Truncated BPTT with ``k1 = k2 = chunk_length``, as a ``lax.scan`` over chunks.

  .. math::

     \\widetilde{\\frac{∂L}{∂θ}} = \\sum_{c} \\frac{∂}{∂θ}
       \\sum_{t ∈ \\text{chunk } c}
       L_t\\bigl(θ;\\ \\mathrm{stop\\_gradient}(h_{\\text{end of } c-1})\\bigr)

  The same numbers as ``truncated_bptt(..., k1=chunk_length)``, without recomputing the
  frozen states: the scan carries the state from chunk to chunk (without gradient) and sums the
  chunks' gradients, holding one chunk's residuals at a time. ``T`` need not be a multiple of
  ``chunk_length``: the last chunk is padded with masked steps.

  Args:
    chunk_length: ``k``, the steps per chunk.
    other arguments: as :func:`truncated_bptt`.

  Returns:
    :class:`TruncatedResult` ``(loss, grads, h_last)`` over the whole sequence.
  """
  _check_window("chunk_length", chunk_length)
  x, tg, m, h0_in, layout = _setup(
    params,
    xs,
    targets,
    loss=loss,
    reduction=reduction,
    mask=mask,
    lengths=lengths,
    h0=h0,
    time_major=time_major,
    activation=activation,
    output_activation=output_activation,
  )
  n_steps, n_batch = m.shape
  n_chunks = math.ceil(n_steps / chunk_length)
  pad = n_chunks * chunk_length - n_steps

  def chunks(a):
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))  # padded steps are masked out below
    return a.reshape((n_chunks, chunk_length) + a.shape[1:])

  norm = reduction_divisor(m, m.shape[0], m.shape[1], reduction)
  cfg = dict(
    loss=loss, activation=activation, output_activation=output_activation, grad=grad, kernel=kernel
  )

  def chunk_loss(p, h, first, x_c, tg_c, m_c):
    # Only the first chunk starts from h_0, which a learnt params.h0 differentiates through.
    h_start = jnp.where(first, initial_state(p.layer, n_batch, h0_in), jax.lax.stop_gradient(h))
    value, h_last = _summed_loss(p, x_c, h_start, m_c, m_c, tg_c, **cfg)
    return value / norm, h_last

  def body(carry, inp):
    h, value, grads = carry
    first, x_c, tg_c, m_c = inp
    (v, h_new), g = jax.value_and_grad(chunk_loss, has_aux=True)(params, h, first, x_c, tg_c, m_c)
    return (h_new, value + v, jax.tree_util.tree_map(jnp.add, grads, g)), None

  dtype = jnp.result_type(params.w_hh)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  h_init = jax.lax.stop_gradient(initial_state(params.layer, n_batch, h0_in))
  firsts = jnp.arange(n_chunks) == 0
  (h_last, value, grads), _ = jax.lax.scan(
    body, (h_init, jnp.zeros((), dtype), zeros), (firsts, chunks(x), chunks(tg), chunks(m))
  )
  return TruncatedResult(value, grads, layout.restore(h_last, False))
