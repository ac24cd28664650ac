"""BPTT's reverse recursion as a reverse associative scan: the gradient, parallel in time.

At the solution ``h`` of ``h_t = φ_t(h_{t-1})`` (whichever solver found it) the derivative of
a loss through the states is BPTT's (:mod:`jrnn.bptt`): with ``g_t = ∂L/∂h_t`` the direct
cotangents and ``λ_t = dL/dh_t`` the total ones,

.. math::

   λ_t = g_t + J_{t+1}^T λ_{t+1}, \\quad λ_T = g_T, \\qquad
   J_{t+1}^T λ_{t+1} = W_{hh}^T (σ'(a_{t+1}) ⊙ λ_{t+1})

(``J_{t+1} = I`` at a masked step ``t+1``). This is a linear recurrence run backwards, so
:func:`jrnn.parallel.linear_scan.solve_full` with ``reverse=True`` gives every ``λ_t`` in
``O(log T)`` depth from the full transposed Jacobians (``T·B·H²`` entries). Exact, not an
approximation: no diagonal variant is offered, because dropping the off-diagonal terms would
change the gradient. Then, as in the sequential loop (:func:`jrnn.loops.reverse_deltas`),

.. math::

   δ_t = m_t\\, σ'(a_t) ⊙ λ_t, \\qquad
   \\frac{∂L}{∂W_{hh}} = \\sum_t δ_t^T h_{t-1}, \\qquad
   \\frac{∂L}{∂h_0} = J_1^T λ_1

(rows: ``δ_t W_hh``, or ``λ_1`` itself when step 1 is masked).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn import loops
from jrnn.activations import Activation
from jrnn.parallel import linear_scan


def reverse_cotangents(w_hh, gain, g, mask) -> jax.Array:
  """``λ_t = dL/dh_t`` for all ``t``, ``(T, B, H)``, by a reverse associative scan.

  Args:
    w_hh: ``(H, H)``.
    gain: ``σ'(a_t)``, ``(T, B, H)``.
    g: the direct cotangents ``∂L/∂h_t``, ``(T, B, H)``.
    mask: ``(T, B)`` boolean or ``None``.
  """
  # Element t carries J_{t+1}ᵀ (column convention: [i, j] = W[j, i] σ'(a_{t+1})_j); the last
  # multiplies λ_{T+1} = 0 and may be anything.
  jt = w_hh.T[None, None] * gain[1:, :, None, :]
  if mask is not None:
    eye = jnp.eye(w_hh.shape[0], dtype=jt.dtype)[None, None]
    jt = jnp.where(mask[1:, :, None, None], jt, eye)
  jt = jnp.concatenate([jt, jnp.zeros_like(jt[:1])], axis=0)
  return linear_scan.solve_full(jt, g, reverse=True)


def parallel_states_backward(act: Activation, w_hh, u, h0, mask, hs, g):
  """``(δ, ∂L/∂W_hh, ∂L/∂h_0)`` as :func:`jrnn.loops.states_backward`, with the reverse
  recursion run by :func:`reverse_cotangents` instead of a sequential loop.

  Args:
    act: the activation.
    w_hh: ``(H, H)``.
    u: projected inputs ``(T, B, H)``; read only when ``act`` has no ``deriv_from_output``.
    h0: ``(B, H)``.
    mask: ``(T, B)`` boolean or ``None``.
    hs: the states ``(T, B, H)``.
    g: ``∂L/∂h_t`` from outside the recurrence, ``(T, B, H)``.

  Returns:
    ``(δ (T, B, H), ∂L/∂W_hh (H, H), ∂L/∂h_0 (B, H))``.
  """
  gain = loops.activation_derivative(act, w_hh, u, hs, h0)
  lam = reverse_cotangents(w_hh, gain, g, mask)
  deltas = gain * lam
  dh0 = deltas[0] @ w_hh
  if mask is not None:
    deltas = jnp.where(mask[..., None], deltas, 0)
    dh0 = jnp.where(mask[0][:, None], deltas[0] @ w_hh, lam[0])
  return deltas, loops.recurrent_weight_grad(deltas, hs, h0), dh0
