"""Jacobians of the hidden-state map along one trajectory: per step, their products, and
matrix-free products with vectors.

Convention (column vectors, as the seed's equations and ``jrnn.params``): with
``a_t = W_hh h_{t-1} + W_xh x_t + b_h`` and ``h_t = σ(a_t)``,

.. math::

   J_t = \\frac{∂h_t}{∂h_{t-1}} = \\mathrm{diag}(σ'(a_t))\\, W_{hh}, \\qquad
   \\frac{∂h_t}{∂h_k} = J_t J_{t-1} \\cdots J_{k+1} = \\prod_{i=k+1}^{t} J_i
   \\quad (\\text{left-multiplied, } t ≥ k),

so ``(∂h_t/∂h_k)[i, j] = ∂h_{t,i}/∂h_{k,j}`` (numerator layout, what ``jax.jacrev`` returns) and
``∂h_t/∂h_t = I``. The seed writes the product as ``Π W_hhᵀ diag(σ')``: that is the transpose,
the layout in which gradients are row vectors; the two have the same singular values. A masked
(padded) step copies the state, so there ``J_t = I``.

Time indices: ``t, k ∈ {0, …, T}`` with ``h_0`` the initial state; ``xs[t-1]`` is ``x_t``.
Everything here works on one sequence; for a batch, ``jax.vmap`` over it, e.g.
``jax.vmap(lambda x: jacobian_products(trajectory(params, x)), in_axes=1)(xs)`` for
time-major ``xs (T, B, I)``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import validation
from jrnn.activations import ActivationLike, get_activation
from jrnn.cell import add_bias
from jrnn.params import LayerParams, RNNParams
from jrnn.recurrence import recurrence


class Trajectory(NamedTuple):
  """What the Jacobians of one sequence depend on: ``W_hh``, the states and ``σ'(a_t)``."""

  w_hh: jax.Array  # shape=(H, H)
  hs: jax.Array  # shape=(T+1, H): h_0, h_1, ..., h_T
  gains: jax.Array  # shape=(T, H): gains[t-1] = σ'(a_t), t = 1..T
  mask: jax.Array  # shape=(T,), bool: mask[t-1] says step t is valid (else J_t = I)

  @property
  def num_steps(self) -> int:
    """``T``."""
    return self.gains.shape[0]


def trajectory(
  params: Union[RNNParams, LayerParams],
  xs: jax.Array,
  *,
  h0: Optional[jax.Array] = None,
  mask: Optional[jax.Array] = None,
  activation: ActivationLike = "tanh",
) -> Trajectory:
  """Runs one sequence and keeps what its Jacobians need.

  Args:
    params: :class:`jrnn.RNNParams` or :class:`jrnn.LayerParams` (the readout is not used).
    xs: inputs ``(T, I)``.
    h0: initial state ``(H,)``; default ``params.h0`` if learnt, else zeros.
    mask: valid steps ``(T,)``, boolean or 0/1; ``None`` for all valid.
    activation: ``σ``, a name in :data:`jrnn.ACTIVATIONS` or a callable.

  Returns:
    :class:`Trajectory` with ``hs (T+1, H)`` (``h_0`` first) and ``gains (T, H)``, the
    derivative ``σ'(a_t)`` at each step (from ``h_t`` where a closed form exists, as in
    :mod:`jrnn.bptt`).
  """
  if not isinstance(params, (RNNParams, LayerParams)):
    raise TypeError(f"params must be RNNParams or LayerParams, got {type(params).__name__}")
  validation.check_params_consistent(params.w_xh, params.w_hh, params.b_h, params.h0)
  act = get_activation(activation)
  dtype = jnp.result_type(params.w_hh)
  n_hidden, n_in = params.w_xh.shape
  validation.check_float("xs", xs, dtype)
  validation.check_shape("xs", xs, (None, n_in), "(T, I)")
  n_steps = np.shape(xs)[0]
  if mask is None:
    mask = jnp.ones((n_steps,), bool)
  else:
    validation.check_shape("mask", mask, (n_steps,), "(T,)")
    mask = jnp.asarray(mask).astype(bool)
  if h0 is None:
    h0 = params.h0 if params.h0 is not None else jnp.zeros((n_hidden,), dtype)
  validation.check_float("h0", h0, dtype)
  validation.check_shape("h0", h0, (n_hidden,), "(H,)")
  u = add_bias(jnp.asarray(xs) @ params.w_xh.T, params.b_h)
  # The library's own recurrence, so these states are exactly those of jrnn.forward;
  # autodiff mode keeps forward-mode AD (jax.jacfwd) of this function available.
  hs = recurrence(
    params.w_hh, u[:, None], jnp.asarray(h0)[None], mask[:, None], activation=act, grad="autodiff"
  )[:, 0]
  hs = jnp.concatenate([jnp.asarray(h0)[None], hs])
  a = hs[:-1] @ params.w_hh.T + u
  return Trajectory(params.w_hh, hs, act.deriv(a, hs[1:]), mask)


def check_trajectory(traj) -> None:
  if not isinstance(traj, Trajectory):
    raise TypeError(f"traj must be a Trajectory (from jrnn.trajectory), got {type(traj).__name__}")


def _check_time(name: str, t, n_steps: int) -> None:
  """Checks a concrete time index; a traced one cannot be checked at trace time."""
  if isinstance(t, jax.core.Tracer):
    return
  if np.ndim(t) != 0 or not np.issubdtype(np.asarray(t).dtype, np.integer):
    raise TypeError(f"{name} must be an integer scalar, got {t!r}")
  if not 0 <= int(t) <= n_steps:
    raise ValueError(f"{name} must lie in [0, T={n_steps}], got {int(t)}")


def _apply_j(traj, gain, valid, v):
  """``J_t v = σ'(a_t) ⊙ (W_hh v)``, or ``v`` on a masked step."""
  return jnp.where(valid, gain * (traj.w_hh @ v), v)


def _apply_jt(traj, gain, valid, u):
  """``J_tᵀ u = W_hhᵀ (σ'(a_t) ⊙ u)``, or ``u`` on a masked step."""
  return jnp.where(valid, traj.w_hh.T @ (gain * u), u)


def step_jacobians(traj: Trajectory) -> jax.Array:
  """Every ``J_t = ∂h_t/∂h_{t-1} = diag(σ'(a_t)) W_hh`` (``I`` on masked steps).

  Returns:
    ``(T, H, H)``; entry ``[t-1]`` is ``J_t`` for ``t = 1..T``.
  """
  check_trajectory(traj)
  eye = jnp.eye(traj.w_hh.shape[0], dtype=traj.w_hh.dtype)
  js = traj.gains[:, :, None] * traj.w_hh[None]
  return jnp.where(traj.mask[:, None, None], js, eye[None])


def jacobian_products(traj: Trajectory) -> jax.Array:
  """All products ``∂h_t/∂h_k = J_t ⋯ J_{k+1}`` as explicit matrices, for small ``H``.

  One forward scan over ``t`` carries the row ``[∂h_{t-1}/∂h_k]_k`` and multiplies it by
  ``J_t``: ``O(T² H³)`` time and ``O(T² H²)`` memory.

  Returns:
    ``P (T+1, T+1, H, H)`` with ``P[t, k] = ∂h_t/∂h_k`` for ``t ≥ k`` (``P[t, t] = I``) and
    zeros for ``t < k``.
  """
  check_trajectory(traj)
  n_steps, n_hidden = traj.gains.shape
  eye = jnp.eye(n_hidden, dtype=traj.w_hh.dtype)
  first = jnp.zeros((n_steps + 1, n_hidden, n_hidden), traj.w_hh.dtype).at[0].set(eye)

  def body(row, inp):
    t, j_t = inp
    # row[k] = ∂h_{t-1}/∂h_k is zero for k ≥ t, so J_t row leaves slot t free for I.
    new = jnp.einsum("ij,kjl->kil", j_t, row).at[t].add(eye)
    return new, new

  _, rows = jax.lax.scan(body, first, (jnp.arange(1, n_steps + 1), step_jacobians(traj)))
  return jnp.concatenate([first[None], rows])


def jacobian_jvp(traj: Trajectory, k, v: jax.Array) -> jax.Array:
  """Matrix-free ``v ↦ (∂h_t/∂h_k) v`` for every ``t``: one forward scan of matrix-vector
  products ``J_t w = σ'(a_t) ⊙ (W_hh w)``; no ``H×H`` product is formed. ``O(T H²)``.

  Args:
    traj: a :class:`Trajectory`.
    k: the source step, an integer in ``[0, T]`` (may be traced).
    v: a perturbation of ``h_k``, ``(H,)``.

  Returns:
    ``(T+1, H)``: row ``t`` is ``(∂h_t/∂h_k) v`` for ``t ≥ k``, zero for ``t < k``.
  """
  check_trajectory(traj)
  n_steps, n_hidden = traj.gains.shape
  _check_time("k", k, n_steps)
  validation.check_float("v", v, traj.w_hh.dtype)
  validation.check_shape("v", v, (n_hidden,), "(H,)")
  v = jnp.asarray(v)
  zero = jnp.zeros_like(v)

  def body(w, inp):
    t, gain, valid = inp
    w = jnp.where(t > k, _apply_j(traj, gain, valid, w), jnp.where(t == k, v, zero))
    return w, w

  w0 = jnp.where(k == 0, v, zero)
  _, ws = jax.lax.scan(body, w0, (jnp.arange(1, n_steps + 1), traj.gains, traj.mask))
  return jnp.concatenate([w0[None], ws])


def jacobian_vjp(traj: Trajectory, t, u: jax.Array) -> jax.Array:
  """Matrix-free ``u ↦ uᵀ (∂h_t/∂h_k)`` for every ``k``: one reverse scan of
  ``J_iᵀ g = W_hhᵀ (σ'(a_i) ⊙ g)``, the BPTT recursion for a cotangent at step ``t`` only.
  No ``H×H`` product is formed. ``O(T H²)``.

  Args:
    traj: a :class:`Trajectory`.
    t: the target step, an integer in ``[0, T]`` (may be traced).
    u: a cotangent of ``h_t``, ``(H,)``.

  Returns:
    ``(T+1, H)``: row ``k`` is ``(∂h_t/∂h_k)ᵀ u`` for ``k ≤ t``, zero for ``k > t``.
  """
  check_trajectory(traj)
  n_steps, n_hidden = traj.gains.shape
  _check_time("t", t, n_steps)
  validation.check_float("u", u, traj.w_hh.dtype)
  validation.check_shape("u", u, (n_hidden,), "(H,)")
  u = jnp.asarray(u)
  zero = jnp.zeros_like(u)

  def body(g, inp):
    i, gain, valid = inp  # g is the cotangent at step i; produce the one at step i - 1
    g = jnp.where(i - 1 < t, _apply_jt(traj, gain, valid, g), jnp.where(i - 1 == t, u, zero))
    return g, g

  g_last = jnp.where(t == n_steps, u, zero)
  _, gs = jax.lax.scan(
    body, g_last, (jnp.arange(1, n_steps + 1), traj.gains, traj.mask), reverse=True
  )
  return jnp.concatenate([gs, g_last[None]])
