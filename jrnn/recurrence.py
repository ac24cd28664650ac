"""The recurrence alone, over inputs already projected: the engine's public entry point.

.. math::

   h_t = m_t\\,σ(W_{hh} h_{t-1} + u_t) + (1 - m_t)\\,h_{t-1}, \\qquad u_t = W_{xh} x_t + b_h

``m_t`` is the mask: a padded step (``m_t = 0``) leaves the state unchanged (exactly, by
selection, not by arithmetic). :func:`jrnn.forward` computes ``u`` as one matrix product over
all ``T·B`` rows before the loop; this function takes ``u`` from the caller (e.g. a model that
computes its own input projection).
"""

from __future__ import annotations

from typing import Optional

import jax

from jrnn import engine, validation
from jrnn.activations import ActivationLike, get_activation


def recurrence(
  w_hh: jax.Array,
  u: jax.Array,
  h0: jax.Array,
  mask: Optional[jax.Array] = None,
  *,
  activation: ActivationLike = "tanh",
  reverse: bool = False,
  unroll: int = 1,
  grad: str = "hand",
  kernel: str = "auto",
  solver: str = "sequential",
  bptt: Optional[str] = None,
) -> jax.Array:
  """Runs the recurrence over ``u (T, B, H)`` from ``h0 (B, H)``; returns ``hs (T, B, H)``.

  Args:
    w_hh: ``(H, H)``.
    u: ``(T, B, H)``, the projected inputs ``x_t W_xhᵀ + b_h``.
    h0: ``(B, H)``.
    mask: ``(T, B)`` boolean or numeric (nonzero marks a valid step), or ``None``.
    activation: ``σ``.
    reverse: run from ``t = T-1`` down to ``0`` (outputs stay aligned with ``u``).
    unroll: the loops' ``unroll``.
    grad, kernel, solver: how it is differentiated and run (:mod:`jrnn.engine`).
    bptt: deprecated 0.1 form of ``grad``/``kernel``.

  Raises:
    ValueError, TypeError: at trace time, naming the argument and the expected shape or dtype.
  """
  grad, kernel = engine.choices_from_bptt(bptt, grad, kernel)
  act = get_activation(activation)
  validation.check_bool("reverse", reverse)
  validation.check_recurrence_inputs(w_hh, u, h0, mask)
  return engine.run_recurrence(
    w_hh, u, h0, mask, act, reverse=reverse, unroll=unroll, grad=grad, kernel=kernel, solver=solver
  )
