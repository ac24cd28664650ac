"""Hand-derived backpropagation through time for the recurrence, bound by ``jax.custom_vjp``.

Notation (the seed's, batched as rows): ``a_t = h_{t-1} W_hhᵀ + u_t``, ``h_t = σ(a_t)``. Given the
cotangent ``g_t = ∂L/∂h_t`` of every output state (the direct dependence of ``L`` on ``h_t``),
the total derivative obeys the reverse recursion

.. math::

   \\frac{dL}{dh_t} = g_t + J_{t+1}^T \\frac{dL}{dh_{t+1}}, \\qquad
   J_{t+1} = \\frac{∂h_{t+1}}{∂h_t} = \\mathrm{diag}(σ'(a_{t+1}))\\, W_{hh}

so with ``δ_t = dL/da_t = σ'(a_t) ⊙ dL/dh_t`` it is ``dL/dh_t = g_t + δ_{t+1} W_hh``. Only this
line is sequential. Everything else is a large matrix product after the loop:

.. math::

   \\frac{∂L}{∂W_{hh}} = \\sum_t δ_t^T h_{t-1}, \\qquad
   \\frac{∂L}{∂u_t} = δ_t, \\qquad \\frac{∂L}{∂h_0} = δ_1 W_{hh}

(``∂L/∂W_xh`` and ``∂L/∂b_h`` follow from ``∂L/∂u`` through the hoisted input projection.)
``σ'(a_t)`` comes from the stored state where a closed form exists (``1 - h_t²`` for tanh), so the
residuals are the hidden states only. A masked step copies the state, so there ``δ_t = 0`` and
``dL/dh_{t-1}`` receives ``dL/dh_t`` unchanged.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jrnn.activations import Activation
from jrnn.recurrence import scan_recurrence


def _previous_states(hs, h0):
  """``h_{t-1}`` for every ``t``: ``(T, B, H)``."""
  return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def activation_derivative(act: Activation, w_hh, u, hs, h0):
  """``σ'(a_t)`` for all ``t`` at once, ``(T, B, H)``; recomputes ``a`` only if it must."""
  if act.deriv_from_output is not None:
    return act.deriv_from_output(hs)
  a = _previous_states(hs, h0) @ w_hh.T + u  # one GEMM over T·B rows
  return act.deriv(a)


def reverse_deltas(w_hh, dsig, g, mask, unroll):
  """The sequential part: ``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)``, scanned from ``T`` to ``1``.

  Returns ``(δ (T, B, H), ∂L/∂h_0 (B, H))``.
  """
  def body(carry, inp):
    g_t, s_t, m_t = inp
    total = g_t + carry  # dL/dh_t
    d = total * s_t
    if m_t is None:
      return d @ w_hh, d
    d = jnp.where(m_t[:, None], d, 0)
    return d @ w_hh + jnp.where(m_t[:, None], 0, total), d

  dh0, deltas = jax.lax.scan(body, jnp.zeros_like(g[0]), (g, dsig, mask), reverse=True,
                             unroll=unroll)
  return deltas, dh0


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def hand_recurrence(w_hh, u, h0, mask, act: Activation, unroll: int):
  """Forward recurrence (see :func:`jrnn.recurrence.recurrence`) with the hand-derived VJP."""
  return scan_recurrence(w_hh, u, h0, mask, act, unroll)


def _fwd(w_hh, u, h0, mask, act, unroll):
  hs = scan_recurrence(w_hh, u, h0, mask, act, unroll)
  keep_u = u if act.deriv_from_output is None else None
  return hs, (w_hh, keep_u, h0, mask, hs)


def _bwd(act, unroll, res, g):
  w_hh, u, h0, mask, hs = res
  dsig = activation_derivative(act, w_hh, u, hs, h0)
  deltas, dh0 = reverse_deltas(w_hh, dsig, g, mask, unroll)
  h_prev = _previous_states(hs, h0)
  n = w_hh.shape[0]
  dw_hh = deltas.reshape(-1, n).T @ h_prev.reshape(-1, n)  # one GEMM over T·B rows
  return dw_hh, deltas, dh0, None


hand_recurrence.defvjp(_fwd, _bwd)
