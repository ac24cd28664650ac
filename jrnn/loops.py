"""The sequential building blocks every evaluation path shares: the lowest layer of jrnn.

Batched as rows (``a_t = h_{t-1} W_hhᵀ + u_t``, ``h_t = σ(a_t)``; a masked step copies the
state). Nothing here is differentiated by a custom rule; :mod:`jrnn.bptt` binds these loops
(or a kernel's) into a ``jax.custom_vjp``, and the autodiff path lets JAX differentiate
:func:`scan_recurrence` directly.

* :func:`scan_recurrence`: the forward recurrence as a ``lax.scan`` stacking its outputs.
* :func:`forward_states`: the same values written over the input buffer in place.
* :func:`reverse_deltas`: ``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)``, the only sequential part of
  the backward pass.
* :func:`previous_states`, :func:`activation_derivative`, :func:`recurrent_weight_grad`,
  :func:`in_time_order`: the small pieces around them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn.activations import Activation

# A loop runs over its own (T, B, H) buffer, updated in place, from this size up (with B > 1).
IN_PLACE_MIN_BYTES = 1 << 20


def in_time_order(seq, mask, reverse: bool):
  """``(seq, mask)`` as the loops consume them: mask boolean, both flipped in time if ``reverse``.

  The loops always run forward in time; a reverse direction flips its inputs and its outputs.
  """
  if mask is not None:
    mask = jnp.asarray(mask).astype(bool)
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


def in_place(buf) -> bool:
  """Whether a loop should run over its own ``(T, B, H)`` buffer, updated in place.

  Measured on CPU (BENCHMARKS.md): in place wins from about 1 MiB of states with ``B > 1``;
  below that ``lax.scan`` is as fast or faster, and with ``B = 1`` XLA copies the whole buffer
  every step (quadratic), so ``lax.scan`` is used there.
  """
  n_batch = buf.shape[1]
  return n_batch > 1 and buf.size * buf.dtype.itemsize >= IN_PLACE_MIN_BYTES


def scan_recurrence(w_hh, u, h0, mask, act: Activation, unroll: int):
  """Plain ``lax.scan`` of the recurrence over ``u (T, B, H)``. Returns ``hs (T, B, H)``."""
  w_t = w_hh.T

  def body(h, inp):
    u_t, m_t = inp
    h_new = act.fn(h @ w_t + u_t)
    if m_t is not None:
      h_new = jnp.where(m_t[:, None], h_new, h)
    return h_new, h_new

  _, hs = jax.lax.scan(body, h0, (u, mask), unroll=unroll)
  return hs


def forward_states(w_hh, u, h0, mask, act: Activation, unroll: int):
  """:func:`scan_recurrence`'s values, each ``h_t`` stored into the slot of ``u_t``.

  ``u_t`` is dead once read, so XLA updates one ``(T, B, H)`` buffer in place instead of
  stacking scan outputs into a second one: less memory, and faster on CPU (BENCHMARKS.md).
  Only for primal computations that JAX does not differentiate (the hand path's forward pass).
  Small buffers and ``B = 1`` use ``lax.scan`` (see :func:`in_place`).
  """
  if not in_place(u):
    return scan_recurrence(w_hh, u, h0, mask, act, unroll)
  w_t = w_hh.T

  def body(t, carry):
    h, buf = carry
    h_new = act.fn(h @ w_t + buf[t])
    if mask is not None:
      h_new = jnp.where(mask[t][:, None], h_new, h)
    return h_new, jax.lax.dynamic_update_index_in_dim(buf, h_new, t, 0)

  return jax.lax.fori_loop(0, u.shape[0], body, (h0, u), unroll=unroll)[1]


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
  if not in_place(g):
    return _scan_deltas(w_hh, s, g, mask, unroll, gain)
  n_steps = g.shape[0]

  def body(i, carry):
    c, buf = carry
    t = n_steps - 1 - i
    total = buf[t] + c  # dL/dh_t
    d = total * (s[t] if gain is None else gain(s[t]))
    if mask is None:
      c = d @ w_hh
    else:
      d = jnp.where(mask[t][:, None], d, 0)
      c = d @ w_hh + jnp.where(mask[t][:, None], 0, total)
    # δ_t goes into g_t's slot, dead once read: one buffer updated in place.
    return c, jax.lax.dynamic_update_index_in_dim(buf, d, t, 0)

  dh0, deltas = jax.lax.fori_loop(0, n_steps, body, (jnp.zeros_like(g[0]), g), unroll=unroll)
  return deltas, dh0


def _scan_deltas(w_hh, s, g, mask, unroll, gain):
  """:func:`reverse_deltas` as a reverse ``lax.scan`` stacking its outputs (small buffers)."""
  def body(c, inp):
    g_t, s_t, m_t = inp
    total = g_t + c
    d = total * (s_t if gain is None else gain(s_t))
    if m_t is None:
      return d @ w_hh, d
    d = jnp.where(m_t[:, None], d, 0)
    return d @ w_hh + jnp.where(m_t[:, None], 0, total), d

  dh0, deltas = jax.lax.scan(body, jnp.zeros_like(g[0]), (g, s, mask), reverse=True,
                             unroll=unroll)
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
