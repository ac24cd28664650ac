"""The sequential building blocks every evaluation path shares: the lowest layer of jrnn.

Batched as rows (``a_t = h_{t-1} W_hhᵀ + u_t``, ``h_t = σ(a_t)``; a masked step copies the
state). Nothing here is differentiated by a custom rule; :mod:`jrnn.bptt` binds these loops
(or a kernel's) into a ``jax.custom_vjp``, and the autodiff path lets JAX differentiate
:func:`scan_recurrence` directly.

* :func:`scan_recurrence`: the forward recurrence as a ``lax.scan`` stacking its outputs.
* :func:`forward_states`: the hand path's forward pass (today :func:`scan_recurrence` itself).
* :func:`reverse_deltas`: ``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)``, the only sequential part of
  the backward pass.
* :func:`previous_states`, :func:`activation_derivative`, :func:`recurrent_weight_grad`,
  :func:`in_time_order`, :func:`zero_masked`: the small pieces around them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn.activations import Activation
from jrnn.cell import add_bias


def zero_masked(seq, mask):
  """``seq (T, B, …)`` with its masked steps set to zero (``mask (T, B)`` boolean or ``None``).

  A masked step never reads its input, but ``where(m, σ(h W_hhᵀ + u), h)`` still
  differentiates ``σ`` at a NaN or Inf ``u`` (``0 · NaN = NaN``), and ``∂L/∂W_xh = Σ δᵀx``
  multiplies the zero ``δ`` of a masked step by its ``x``. Selecting zeros first makes a
  padded step inert: whatever it holds changes neither the loss nor any gradient.
  """
  if mask is None:
    return seq
  return jnp.where(
    mask.reshape(mask.shape + (1,) * (jnp.ndim(seq) - 2)), seq, jnp.zeros((), jnp.result_type(seq))
  )


def in_time_order(seq, mask, reverse: bool):
  """``(seq, mask)`` as the loops consume them: mask boolean, masked steps of ``seq`` zeroed
  (:func:`zero_masked`), both flipped in time if ``reverse``.

  The loops always run forward in time; a reverse direction flips its inputs and its outputs.
  """
  if mask is not None:
    mask = jnp.asarray(mask).astype(bool)
    seq = zero_masked(seq, mask)
  if reverse:
    seq = jnp.flip(seq, 0)
    mask = None if mask is None else jnp.flip(mask, 0)
  return seq, mask


def previous_states(hs, h0):
  """``h_{t-1}`` for every ``t``: ``(T, B, H)``."""
  return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def activation_derivative(act: Activation, w_hh, u, hs, h0):
  """``σ'(a_t)`` for all ``t`` at once, ``(T, B, H)``; recomputes ``a`` only if it must."""
  if act.deriv_from_output is not None:
    return act.deriv_from_output(hs)
  a = previous_states(hs, h0) @ w_hh.T + u  # one GEMM over T·B rows
  return act.deriv(a)


def scan_recurrence(w_hh, u, h0, mask, act: Activation, unroll: int, b=None):
  """Plain ``lax.scan`` of the recurrence over ``u (T, B, H)``. Returns ``hs (T, B, H)``.

  With a bias ``b (H,)`` the step reads ``u_t + b`` (added inside the loop's fused step, so no
  ``(T, B, H)`` copy of ``u`` with its bias is made; the same sums in the same order as passing
  ``u + b``, so the same bits).
  """
  w_t = w_hh.T

  def body(h, inp):
    u_t, m_t = inp
    if b is not None:
      u_t = add_bias(u_t, b)
    h_new = act.fn(h @ w_t + u_t)
    if m_t is not None:
      h_new = jnp.where(m_t[:, None], h_new, h)
    return h_new, h_new

  _, hs = jax.lax.scan(body, h0, (u, mask), unroll=unroll)
  return hs


def forward_states(w_hh, u, h0, mask, act: Activation, unroll: int, b=None):
  """The hand path's forward pass: :func:`scan_recurrence`'s values ``hs (T, B, H)`` (over
  ``u_t + b`` when a bias ``b (H,)`` is given).

  0.1 wrote each ``h_t`` over ``u_t`` in one buffer (a ``fori_loop`` with
  ``dynamic_update_slice``) from 1 MiB of states up: 3-8% faster for a plain ``jit`` of a tanh
  network on CPU. 0.2 dropped it: XLA:CPU keeps that update in place only when nothing else
  reads the buffer in the step, and a cheap activation (ReLU's ``max`` is duplicated into both
  of its consumers) or a ``vmap`` over the whole step (several seeds) breaks that, so XLA copied
  the whole buffer twice a step: 7-10x slower training steps (BENCHMARKS.md). A stacked scan has
  no such cliff.
  """
  return scan_recurrence(w_hh, u, h0, mask, act, unroll, b)


def reverse_deltas(w_hh, s, g, mask, unroll: int, gain=None):
  """The sequential part of BPTT: ``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)`` from ``T`` to ``1``.

  Args:
    w_hh: ``(H, H)``.
    s: ``(T, B, H)``: ``σ'(a_t)`` itself, or what ``gain`` maps to it (the states ``h_t``, so
      that ``σ'`` is computed inside the loop and never stored as a ``(T, B, H)`` array).
    g: ``∂L/∂h_t`` from outside the recurrence, ``(T, B, H)``.
    mask: ``(T, B)`` boolean or ``None``. At a masked step ``δ_t = 0`` and ``dL/dh_t`` passes
      to ``h_{t-1}`` unchanged.
    unroll: the loop's ``unroll``.
    gain: ``s_t ↦ σ'(a_t)``; ``None`` means ``s`` is ``σ'(a_t)`` already.

  Returns:
    ``(δ (T, B, H), ∂L/∂h_0 (B, H))``.
  """

  def body(c, inp):
    g_t, s_t, m_t = inp
    total = g_t + c
    d = total * (s_t if gain is None else gain(s_t))
    if m_t is None:
      return d @ w_hh, d
    d = jnp.where(m_t[:, None], d, 0)
    return d @ w_hh + jnp.where(m_t[:, None], 0, total), d

  dh0, deltas = jax.lax.scan(body, jnp.zeros_like(g[0]), (g, s, mask), reverse=True, unroll=unroll)
  return deltas, dh0


def recurrent_weight_grad(deltas, hs, h0):
  """``∂L/∂W_hh = Σ_t δ_tᵀ h_{t-1}`` as one GEMM over ``(T-1)·B`` rows plus the ``t = 1`` term.

  Splitting off ``t = 1`` avoids materialising the shifted states ``[h_0, …, h_{T-1}]``.
  """
  n = hs.shape[-1]
  return deltas[1:].reshape(-1, n).T @ hs[:-1].reshape(-1, n) + deltas[0].T @ h0


def states_backward(act: Activation, unroll: int, w_hh, u, h0, mask, hs, g):
  """``(δ, ∂L/∂W_hh, ∂L/∂h_0)`` of the recurrence given the output cotangent ``g (T, B, H)``.

  ``u`` is read only for activations without ``deriv_from_output`` (else it may be ``None``).
  """
  if act.deriv_from_output is not None:
    deltas, dh0 = reverse_deltas(w_hh, hs, g, mask, unroll, act.deriv_from_output)
  else:
    dsig = activation_derivative(act, w_hh, u, hs, h0)
    deltas, dh0 = reverse_deltas(w_hh, dsig, g, mask, unroll)
  return deltas, recurrent_weight_grad(deltas, hs, h0), dh0
