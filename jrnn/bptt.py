"""Hand-derived backpropagation through time, bound by ``jax.custom_vjp``: jrnn's fast path.

Notation (the seed's, batched as rows): ``u_t = x_t W_xhᵀ + b_h``, ``a_t = h_{t-1} W_hhᵀ + u_t``,
``h_t = σ(a_t)``. Given the cotangent ``g_t = ∂L/∂h_t`` of every output state (the direct
dependence of ``L`` on ``h_t``, e.g. through the readout), the total derivative obeys the
reverse recursion

.. math::

   \\frac{dL}{dh_t} = g_t + J_{t+1}^T \\frac{dL}{dh_{t+1}}, \\qquad
   J_{t+1} = \\frac{∂h_{t+1}}{∂h_t} = \\mathrm{diag}(σ'(a_{t+1}))\\, W_{hh}

(column convention: ``J`` maps a change of ``h_t`` to a change of ``h_{t+1}``). With
``δ_t = dL/da_t = σ'(a_t) ⊙ dL/dh_t`` this is ``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)``. Only this
line is sequential (:func:`jrnn.loops.reverse_deltas`); every weight gradient is one large
matrix product over all ``T·B`` rows after the loop:

.. math::

   \\frac{∂L}{∂W_{hh}} = \\sum_t δ_t^T h_{t-1}, \\quad
   \\frac{∂L}{∂W_{xh}} = \\sum_t δ_t^T x_t, \\quad
   \\frac{∂L}{∂b_h} = \\sum_t δ_t, \\quad
   \\frac{∂L}{∂x_t} = δ_t W_{xh}, \\quad \\frac{∂L}{∂h_0} = δ_1 W_{hh}

which is the seed's double sum ``Σ_t Σ_{k≤t} ∂L_t/∂h_t · ∂h_t/∂h_k · ∂h_k/∂W_hh`` regrouped by
``k`` (``δ_k`` collects every ``t ≥ k``). ``σ'(a_t)`` comes from the stored state where a closed
form exists (``1 - h_t²`` for tanh), so the residuals are the hidden states (and the inputs)
only. A masked step copies the state: there ``δ_t = 0`` and ``dL/dh_{t-1}`` receives ``dL/dh_t``
unchanged.
"""

from __future__ import annotations

import contextlib
import functools

import jax

from jrnn import kernels
from jrnn.activations import Activation
from jrnn.cell import add_bias

FORWARD_MODE_HINT = (
  "grad='hand' binds a hand-derived backward pass with jax.custom_vjp, which supports "
  "reverse mode (jax.grad, jax.vjp, jax.jacrev) only; pass grad='autodiff' for forward-mode "
  "autodiff (jax.jvp, jax.jacfwd, jax.hessian)"
)


@contextlib.contextmanager
def explain_forward_mode():
  """Re-raises JAX's forward-mode error on a ``custom_vjp`` with the option that supports it."""
  try:
    yield
  except TypeError as e:
    if "forward-mode" not in str(e):
      raise
    raise TypeError(FORWARD_MODE_HINT) from e


# The recurrence alone over precomputed inputs u (what `jrnn.recurrence` differentiates).


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def hand_recurrence(w_hh, u, h0, mask, act: Activation, unroll: int, kernel: str = "xla"):
  """``hs (T, B, H)`` of :func:`jrnn.recurrence`, with the hand-derived VJP.

  ``kernel`` is a concrete kernel of :mod:`jrnn.kernels` (``"xla"``, ``"pallas"``,
  ``"pallas_interpret"``); it runs both loops.
  """
  return kernels.states(kernel, w_hh, u, h0, mask, act, unroll)


def _recurrence_fwd(w_hh, u, h0, mask, act, unroll, kernel):
  hs = kernels.states(kernel, w_hh, u, h0, mask, act, unroll)
  keep_u = u if act.deriv_from_output is None else None
  return hs, (w_hh, keep_u, h0, mask, hs)


def _recurrence_vjp(act, unroll, kernel, res, g):
  w_hh, u, h0, mask, hs = res
  deltas, dw_hh, dh0 = kernels.states_backward(kernel, act, unroll, w_hh, u, h0, mask, hs, g)
  return dw_hh, deltas, dh0, None


hand_recurrence.defvjp(_recurrence_fwd, _recurrence_vjp)


# A whole layer: input projection hoisted out of the loop, then the recurrence.


def _project(w_xh, xs):
  return xs @ w_xh.T  # one GEMM over T·B rows; the loop adds b_h


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def hand_layer(w_xh, w_hh, b_h, xs, h0, mask, act: Activation, unroll: int, kernel: str = "xla"):
  """One layer, ``xs (T, B, I) -> hs (T, B, H)``, with every gradient derived by hand.

  The forward pass computes ``z = xs W_xhᵀ`` for all steps at once, then runs
  ``h_t = σ(h_{t-1} W_hhᵀ + (z_t + b_h))`` (the bias added inside the loop's step: no
  ``(T, B, H)`` copy of ``z`` with its bias; the same bits as ``u = z + b_h`` first); the CPU
  kernel computes ``z_t`` inside its steps and never stores ``z``. The backward pass is the
  module docstring's recursion; ``kernel`` (concrete, see :mod:`jrnn.kernels`) runs the two
  sequential loops.
  """
  return _layer_states(w_xh, w_hh, b_h, xs, h0, mask, act, unroll, kernel)[0]


def _layer_states(w_xh, w_hh, b_h, xs, h0, mask, act, unroll, kernel):
  """``(hs, z or None)``: the C++ CPU kernel projects the inputs inside its steps and keeps no
  ``z`` (it runs only activations with ``σ'`` in terms of ``h``); the other kernels read
  ``z = xs W_xhᵀ`` made by one GEMM first."""
  if kernel == "cpu":
    return kernels.cpu_ffi.layer_states(w_xh, w_hh, b_h, xs, h0, mask, act), None
  z = _project(w_xh, xs)
  return kernels.states(kernel, w_hh, z, h0, mask, act, unroll, b_h), z


def _layer_fwd(w_xh, w_hh, b_h, xs, h0, mask, act, unroll, kernel):
  hs, z = _layer_states(w_xh, w_hh, b_h, xs, h0, mask, act, unroll, kernel)
  keep_z = z if act.deriv_from_output is None else None
  return hs, (w_xh, w_hh, b_h, keep_z, xs, h0, mask, hs)


def _layer_vjp(act, unroll, kernel, res, g):
  w_xh, w_hh, b_h, z, xs, h0, mask, hs = res
  u = None if z is None else add_bias(z, b_h)  # σ'(a_t) needs a_t, hence u_t = z_t + b_h
  deltas, dw_hh, dh0 = kernels.states_backward(kernel, act, unroll, w_hh, u, h0, mask, hs, g)
  d2 = deltas.reshape(-1, deltas.shape[-1])
  dw_xh = d2.T @ xs.reshape(d2.shape[0], -1)
  db_h = d2.sum(axis=0)
  dxs = deltas @ w_xh  # dead code under XLA when xs is not differentiated
  return dw_xh, dw_hh, db_h, dxs, dh0, None


hand_layer.defvjp(_layer_fwd, _layer_vjp)
