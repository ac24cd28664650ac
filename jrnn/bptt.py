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
line is sequential; every weight gradient is one large matrix product over all ``T·B`` rows
after the loop:

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
import jax.numpy as jnp

from jrnn.activations import Activation
from jrnn.cell import add_bias
from jrnn.recurrence import scan_recurrence

FORWARD_MODE_HINT = (
    "bptt='hand' binds a hand-derived backward pass with jax.custom_vjp, which supports "
    "reverse mode (jax.grad, jax.vjp, jax.jacrev) only; pass bptt='autodiff' for forward-mode "
    "autodiff (jax.jvp, jax.jacfwd, jax.hessian)")


@contextlib.contextmanager
def explain_forward_mode():
  """Re-raises JAX's forward-mode error on a ``custom_vjp`` with the option that supports it."""
  try:
    yield
  except TypeError as e:
    if "forward-mode" not in str(e):
      raise
    raise TypeError(FORWARD_MODE_HINT) from e


def previous_states(hs, h0):
  """``h_{t-1}`` for every ``t``: ``(T, B, H)``."""
  return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def activation_derivative(act: Activation, w_hh, u, hs, h0):
  """``σ'(a_t)`` for all ``t`` at once, ``(T, B, H)``; recomputes ``a`` only if it must."""
  if act.deriv_from_output is not None:
    return act.deriv_from_output(hs)
  a = previous_states(hs, h0) @ w_hh.T + u  # one GEMM over T·B rows
  return act.deriv(a)


IN_PLACE_MIN_BYTES = 1 << 20


def _in_place(buf) -> bool:
  """Whether to run a loop over its own ``(T, B, H)`` buffer, updated in place.

  Measured on CPU (BENCHMARKS.md): in place wins from about 1 MiB of states with ``B > 1``;
  below that ``lax.scan`` is as fast or faster, and with ``B = 1`` XLA copies the whole buffer
  every step (quadratic), so ``lax.scan`` is used there.
  """
  n_steps, n_batch = buf.shape[:2]
  return n_batch > 1 and buf.size * buf.dtype.itemsize >= IN_PLACE_MIN_BYTES


def forward_states(w_hh, u, h0, mask, act: Activation, unroll: int):
  """The forward recurrence written over its own input buffer: ``hs`` replaces ``u`` step by step.

  Same values as :func:`jrnn.recurrence.scan_recurrence`, but each ``h_t`` is stored into the
  slot of ``u_t`` (dead once read), so XLA updates one ``(T, B, H)`` buffer in place instead of
  stacking scan outputs into a second one: less memory, and measurably faster on CPU (see
  BENCHMARKS.md). Used only where it is not differentiated by JAX (the hand path's primal).
  Small buffers and ``B = 1`` use ``lax.scan`` (see :func:`_in_place`).
  """
  if not _in_place(u):
    return scan_recurrence(w_hh, u, h0, mask, act, unroll)
  w_t = w_hh.T
  n_steps = u.shape[0]

  def body(t, carry):
    h, buf = carry
    h_new = act.fn(h @ w_t + buf[t])
    if mask is not None:
      h_new = jnp.where(mask[t][:, None], h_new, h)
    return h_new, jax.lax.dynamic_update_index_in_dim(buf, h_new, t, 0)

  return jax.lax.fori_loop(0, n_steps, body, (h0, u), unroll=unroll)[1]


def reverse_deltas(w_hh, s, g, mask, unroll, gain=None):
  """The sequential part: ``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)``, scanned from ``T`` to ``1``.

  Args:
    w_hh: ``(H, H)``.
    s: ``(T, B, H)``: ``σ'(a_t)`` itself, or what ``gain`` maps to it (the states ``h_t``, so
      that ``σ'`` is computed inside the loop and never stored as a ``(T, B, H)`` array).
    g: ``∂L/∂h_t`` from outside the recurrence, ``(T, B, H)``.
    mask: ``(T, B)`` boolean or ``None``.
    unroll: ``lax.scan``'s ``unroll``.
    gain: ``s_t ↦ σ'(a_t)``; ``None`` means ``s`` is ``σ'(a_t)`` already.

  Returns:
    ``(δ (T, B, H), ∂L/∂h_0 (B, H))``.
  """
  if not _in_place(g):
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


def _recurrence_bwd(act, unroll, w_hh, u, h0, mask, hs, g):
  """``(δ, ∂L/∂W_hh, ∂L/∂h_0)`` given the output cotangent ``g (T, B, H)``."""
  if act.deriv_from_output is not None:
    deltas, dh0 = reverse_deltas(w_hh, hs, g, mask, unroll, act.deriv_from_output)
  else:
    dsig = activation_derivative(act, w_hh, u, hs, h0)
    deltas, dh0 = reverse_deltas(w_hh, dsig, g, mask, unroll)
  return deltas, recurrent_weight_grad(deltas, hs, h0), dh0


# The sequential kernels: XLA's lax.scan, or the persistent Pallas kernels of jrnn.pallas_rnn
# ("pallas" compiles them with Triton on a GPU; "pallas_interpret" runs them anywhere, slowly).
KERNELS = ("xla", "pallas", "pallas_interpret")


def _kernel_unroll(unroll: int):
  """``lax.scan``'s ``unroll=1`` (no preference) lets the Pallas kernel use its tuned default."""
  return None if unroll == 1 else unroll


def _states(kernel, w_hh, u, h0, mask, act, unroll):
  if kernel == "xla":
    return forward_states(w_hh, u, h0, mask, act, unroll)
  from jrnn import pallas_rnn  # imported lazily: Pallas is only needed on this path
  return pallas_rnn.pallas_recurrence(w_hh, u, h0, mask, act, _kernel_unroll(unroll),
                                      interpret=kernel == "pallas_interpret")


def _states_bwd(kernel, act, unroll, w_hh, u, h0, mask, hs, g):
  if kernel == "xla":
    return _recurrence_bwd(act, unroll, w_hh, u, h0, mask, hs, g)
  from jrnn import pallas_rnn
  return pallas_rnn.pallas_recurrence_bwd(w_hh, u, h0, mask, hs, g, act,
                                          _kernel_unroll(unroll),
                                          interpret=kernel == "pallas_interpret")


# The recurrence alone over precomputed inputs u (what `jrnn.recurrence` differentiates).

@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def hand_recurrence(w_hh, u, h0, mask, act: Activation, unroll: int):
  """``hs (T, B, H)`` of :func:`jrnn.recurrence.recurrence`, with the hand-derived VJP."""
  return forward_states(w_hh, u, h0, mask, act, unroll)


def _recurrence_fwd(w_hh, u, h0, mask, act, unroll):
  hs = forward_states(w_hh, u, h0, mask, act, unroll)
  keep_u = u if act.deriv_from_output is None else None
  return hs, (w_hh, keep_u, h0, mask, hs)


def _recurrence_vjp(act, unroll, res, g):
  w_hh, u, h0, mask, hs = res
  deltas, dw_hh, dh0 = _recurrence_bwd(act, unroll, w_hh, u, h0, mask, hs, g)
  return dw_hh, deltas, dh0, None


hand_recurrence.defvjp(_recurrence_fwd, _recurrence_vjp)


# A whole layer: input projection hoisted out of the scan, then the recurrence.

def _project(w_xh, b_h, xs):
  return add_bias(xs @ w_xh.T, b_h)  # one GEMM over T·B rows


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def hand_layer(w_xh, w_hh, b_h, xs, h0, mask, act: Activation, unroll: int,
               kernel: str = "xla"):
  """One layer, ``xs (T, B, I) -> hs (T, B, H)``, with every gradient derived by hand.

  The forward pass computes ``u = xs W_xhᵀ + b_h`` for all steps at once, then scans
  ``h_t = σ(h_{t-1} W_hhᵀ + u_t)``. The backward pass is the module docstring's recursion.
  ``kernel`` (one of :data:`KERNELS`) runs the two sequential loops.
  """
  return _states(kernel, w_hh, _project(w_xh, b_h, xs), h0, mask, act, unroll)


def _layer_fwd(w_xh, w_hh, b_h, xs, h0, mask, act, unroll, kernel):
  u = _project(w_xh, b_h, xs)
  hs = _states(kernel, w_hh, u, h0, mask, act, unroll)
  keep_u = u if act.deriv_from_output is None else None
  return hs, (w_xh, w_hh, keep_u, xs, h0, mask, hs)


def _layer_vjp(act, unroll, kernel, res, g):
  w_xh, w_hh, u, xs, h0, mask, hs = res
  deltas, dw_hh, dh0 = _states_bwd(kernel, act, unroll, w_hh, u, h0, mask, hs, g)
  d2 = deltas.reshape(-1, deltas.shape[-1])
  dw_xh = d2.T @ xs.reshape(d2.shape[0], -1)
  db_h = jnp.sum(d2, axis=0)
  dxs = deltas @ w_xh  # dead code under XLA when xs is not differentiated
  return dw_xh, dw_hh, db_h, dxs, dh0, None


hand_layer.defvjp(_layer_fwd, _layer_vjp)


def pallas_recurrence(w_hh, u, h0, mask, act: Activation, unroll: int, kernel: str):
  """:func:`hand_recurrence` with the Pallas kernels (``kernel`` ``"pallas"`` or interpreted)."""
  from jrnn import pallas_rnn
  return pallas_rnn.pallas_recurrence(w_hh, u, h0, mask, act, _kernel_unroll(unroll),
                                      interpret=kernel == "pallas_interpret")
