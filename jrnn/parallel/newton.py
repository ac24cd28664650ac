"""DEER and quasi-DEER: Newton's method on the whole trajectory, one linear scan per iteration.

The trajectory ``h = (h_1, …, h_T)`` of ``h_t = φ_t(h_{t-1})``, with
``φ_t(h) = σ(W_hh h + u_t)`` at a valid step and ``φ_t(h) = h`` at a masked one, is the root of
``r(h)_t = h_t − φ_t(h_{t-1})``. Newton's method (DEER: Lim et al., ICLR 2024) linearises every
step about the current iterate ``h⁽ⁱ⁾``,

.. math::

   h_t^{(i+1)} = J_t\\, h_{t-1}^{(i+1)} + \\bigl(φ_t(h_{t-1}^{(i)}) − J_t\\, h_{t-1}^{(i)}\\bigr),
   \\qquad J_t = \\frac{∂φ_t}{∂h}\\Big|_{h_{t-1}^{(i)}} = \\mathrm{diag}(σ'(a_t))\\, W_{hh}

(a masked step is exactly linear: ``J_t = I`` and the offset is ``0``), and solves that linear
recurrence from ``h_0`` by an associative scan (:mod:`jrnn.parallel.linear_scan`), in
``O(log T)`` depth. Quasi-DEER (Gonzalez et al., NeurIPS 2024) keeps only ``diag(J_t) =
σ'(a_t) ⊙ diag(W_hh)``: ``T·B·H`` numbers instead of ``T·B·H²``, elementwise combines, more
iterations. Both have the sequential trajectory as their only fixed point (at a fixed point
the offset cancels the linear term and ``h_t = φ_t(h_{t-1})``), and both make at least ``h_1 …
h_i`` exact after ``i`` iterations (``h_0`` is known), so ``T`` iterations always suffice in exact
arithmetic. For a contracting RNN (largest Lyapunov exponent ``< 0``) they need far fewer:
Gonzalez et al. 2025 show ``O(log T)`` iterations for DEER.

States are batched as rows, ``(T, B, H)``; ``J_t`` is stored per row as an ``(H, H)`` matrix
acting on column vectors.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.activations import Activation
from jrnn.loops import previous_states
from jrnn.parallel import linear_scan
from jrnn.parallel.config import SolveInfo


class Linearisation(NamedTuple):
  """Each step's map about an iterate ``hs``: ``φ_t(h_{t-1})`` and ``σ'(a_t)``."""

  prev: jax.Array  # shape=(T, B, H): h_{t-1} of the iterate (h_0 first)
  phi: jax.Array  # shape=(T, B, H): φ_t(h_{t-1}); h_{t-1} itself at a masked step
  gain: jax.Array  # shape=(T, B, H): σ'(a_t) (at a masked step: unused)


def linearise(w_hh, u, h0, mask, act: Activation, hs) -> Linearisation:
  """:class:`Linearisation` of the recurrence about ``hs (T, B, H)``: one GEMM over ``T·B`` rows."""
  prev = previous_states(hs, h0)
  a = prev @ w_hh.T + u
  phi = act.fn(a)
  gain = act.deriv(a, phi)
  if mask is not None:
    phi = jnp.where(mask[..., None], phi, prev)
  return Linearisation(prev, phi, gain)


def relative_residual(hs, lin: Linearisation) -> jax.Array:
  """``max|h_t − φ_t(h_{t-1})| / max(1, max|φ_t(h_{t-1})|)`` (:class:`SolveInfo`), a scalar."""
  return jnp.max(jnp.abs(hs - lin.phi)) / jnp.maximum(1.0, jnp.max(jnp.abs(lin.phi)))


def full_jacobians(w_hh, gain, mask) -> jax.Array:
  """``J_t = diag(σ'(a_t)) W_hh`` per step and row, ``(T, B, H, H)``; ``I`` at masked steps."""
  jac = gain[..., :, None] * w_hh[None, None]
  if mask is None:
    return jac
  eye = jnp.eye(w_hh.shape[0], dtype=jac.dtype)[None, None]
  return jnp.where(mask[..., None, None], jac, eye)


def diagonal_jacobians(w_hh, gain, mask) -> jax.Array:
  """``diag(J_t) = σ'(a_t) ⊙ diag(W_hh)``, ``(T, B, H)``; ``1`` at masked steps."""
  diag = gain * jnp.diagonal(w_hh)[None, None]
  if mask is None:
    return diag
  return jnp.where(mask[..., None], diag, jnp.ones_like(diag))


def offsets(jac, lin: Linearisation) -> jax.Array:
  """``b_t = φ_t(h⁽ⁱ⁾_{t-1}) − J_t h⁽ⁱ⁾_{t-1}``, with ``h_0`` folded into ``b_1 = φ_1(h_0)``.

  ``jac`` is full ``(T, B, H, H)`` or diagonal ``(T, B, H)``. Folding ``h_0`` in lets the linear
  scan start from zero: ``h_1 = J_1 h_0 + φ_1(h_0) − J_1 h_0`` is ``φ_1(h_0)`` exactly.
  """
  if jac.ndim == lin.phi.ndim:
    lin_term = jac * lin.prev
  else:
    lin_term = jnp.einsum("tbij,tbj->tbi", jac, lin.prev)
  return (lin.phi - lin_term).at[0].set(lin.phi[0])


def deer_step(w_hh, mask, hs, lin: Linearisation, damping=None) -> jax.Array:
  """One DEER iteration: the next iterate ``(T, B, H)`` from full Jacobians."""
  jac = full_jacobians(w_hh, lin.gain, mask)
  return linear_scan.solve_full(jac, offsets(jac, lin))


def quasi_deer_step(w_hh, mask, hs, lin: Linearisation, damping=None) -> jax.Array:
  """One quasi-DEER iteration: the next iterate ``(T, B, H)`` from diagonal Jacobians."""
  jac = diagonal_jacobians(w_hh, lin.gain, mask)
  return linear_scan.solve_diagonal(jac, offsets(jac, lin))


Step = Callable[..., jax.Array]  # (w_hh, mask, hs, lin, damping) -> next hs

# Levenberg–Marquardt's schedule for an adaptive damping λ: shrink after a step that lowers
# ½‖r‖², grow (and retry from the same iterate) after one that does not; give up past MAX.
DAMPING_DOWN, DAMPING_UP, DAMPING_MIN, DAMPING_MAX = 0.3, 10.0, 1e-9, 1e12


class _Carry(NamedTuple):
  iteration: jax.Array  # shape=(), int32
  hs: jax.Array  # shape=(T, B, H)
  lin: Linearisation
  residual: jax.Array  # shape=(): relative_residual(hs, lin)
  merit: jax.Array  # shape=(): ½‖hs − φ(hs)‖²
  damping: jax.Array  # shape=()
  diverged: jax.Array  # shape=(), bool: stopped on a non-finite residual, or λ past its cap
  stop: jax.Array  # shape=(), bool
  resets: jax.Array  # shape=(), int32: iterations whose linear solve overflowed


def _merit(hs, lin: Linearisation):
  return 0.5 * jnp.sum((hs - lin.phi) ** 2)


def iterate(
  step: Step,
  w_hh,
  u,
  h0,
  mask,
  act: Activation,
  *,
  tol: float,
  max_iter: int,
  init: Optional[jax.Array] = None,
  damping: Optional[float] = None,
  adaptive: bool = True,
):
  """Runs ``step`` from ``init`` until the relative residual is ``<= tol``, for at most
  ``max_iter`` steps, or until the residual itself is NaN/Inf.

  Args:
    step: ``(w_hh, mask, hs, lin, damping) -> hs'``, e.g. :func:`deer_step`.
    w_hh: ``(H, H)``.
    u: projected inputs ``(T, B, H)`` (time order).
    h0: ``(B, H)``.
    mask: ``(T, B)`` boolean or ``None``.
    act: the activation.
    tol: threshold on :func:`relative_residual`.
    max_iter: the most steps (rejected damped steps count).
    init: the initial guess ``(T, B, H)``; ``None`` is zeros.
    damping: ``None`` for undamped Newton (every step is taken; entries of a step that
      overflow restart from the previous iterate, counted in ``info.resets``; a residual that
      is still NaN/Inf, e.g. from NaN inputs, stops the loop). A number ``λ > 0`` for a damped
      step (ELK): with ``adaptive``, Levenberg–Marquardt's rule (a step that does not lower
      ``½‖r‖²``, or is not finite, is rejected and ``λ`` grows ×10; an accepted one shrinks
      ``λ`` ×0.3; past ``λ = 1e12`` the solve gives up); without, ``λ`` stays fixed and every
      step is taken as in undamped Newton.
    adaptive: see ``damping``.

  Returns:
    ``(hs (T, B, H), SolveInfo)``: ``hs`` is ``φ`` applied once more to the last iterate ``h``
    (every ``h_t = φ_t(h_{t-1})`` exactly, up to rounding; ``info.residual`` is ``h``'s). A
    non-finite iterate is never returned: the states come from the last finite one.
  """
  hs = jnp.zeros_like(u) if init is None else init
  lin = linearise(w_hh, u, h0, mask, act, hs)
  res = relative_residual(hs, lin)
  bad = ~jnp.isfinite(res)
  dtype = res.dtype
  lam = jnp.asarray(1.0 if damping is None else damping, dtype)
  damped_adaptive = damping is not None and adaptive
  huge = float(np.sqrt(np.finfo(dtype).max)) / max(1, u.shape[-1])

  def cond(c: _Carry):
    return (c.iteration < max_iter) & (c.residual > tol) & ~c.stop

  def body(c: _Carry):
    new = step(w_hh, mask, c.hs, c.lin, c.damping)
    # The linearised recurrence multiplies up to T Jacobians and can overflow far from the
    # solution, where the linearisation is worse than the dynamics. Entries that overflowed, or
    # are so large that the next product h W_hhᵀ could, restart from the previous iterate; the
    # steps already exact stay exact, so the iteration still makes at least one more step
    # exact each time (ELK's paper resets such entries to zero instead).
    wild = ~(jnp.abs(new) <= huge)  # NaN too
    overflow = jnp.any(wild)
    if not damped_adaptive:
      new = jnp.where(wild, c.hs, new)
    new_lin = linearise(w_hh, u, h0, mask, act, new)
    new_res = relative_residual(new, new_lin)
    new_merit = _merit(new, new_lin) if damped_adaptive else c.merit  # only LM's rule reads it
    finite = jnp.isfinite(new_res) & jnp.isfinite(new_merit)
    if damped_adaptive:
      accept = finite & (new_merit <= c.merit)
      lam = jnp.where(
        accept, jnp.maximum(c.damping * DAMPING_DOWN, DAMPING_MIN), c.damping * DAMPING_UP
      )
      stop = lam > DAMPING_MAX
    else:
      accept, lam, stop = finite, c.damping, ~finite
    keep = lambda old, fresh: jax.tree.map(lambda o, f: jnp.where(accept, f, o), old, fresh)
    hs, lin, res, merit = keep(
      (c.hs, c.lin, c.residual, c.merit), (new, new_lin, new_res, new_merit)
    )
    return _Carry(
      c.iteration + 1,
      hs,
      lin,
      res,
      merit,
      lam,
      c.diverged | stop,
      stop,
      c.resets + overflow.astype(jnp.int32),
    )

  zero = jnp.zeros((), jnp.int32)
  merit = _merit(hs, lin) if damped_adaptive else jnp.zeros((), dtype)
  c = jax.lax.while_loop(cond, body, _Carry(zero, hs, lin, res, merit, lam, bad, bad, zero))
  # Return φ(h) rather than h: the same point to within the residual, but every state is then
  # an activation's output, so a ReLU unit the sequential scan leaves at exactly 0 is exactly
  # 0 here too (its σ' in the backward pass agrees) and a masked step copies its state exactly.
  return c.lin.phi, SolveInfo(
    c.iteration,
    c.residual,
    (c.residual <= tol) & jnp.isfinite(c.residual),
    c.diverged,
    c.resets,
    jnp.zeros((), bool),
  )
