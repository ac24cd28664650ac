"""What a parallel solve is asked to do (:class:`Solver`) and what it reports (:class:`SolveInfo`).

A :class:`Solver` is a hashable ``NamedTuple`` of Python values, so it can be a static argument
of ``jax.jit`` and a ``nondiff_argnum`` of a ``custom_vjp``; the strings ``"deer"``,
``"quasi_deer"``, ``"elk"``, ``"quasi_elk"`` stand for ``Solver(method=...)`` with the defaults.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("deer", "quasi_deer", "elk", "quasi_elk")
ADJOINTS = ("sequential", "parallel")
ON_FAILURE = ("raise", "fallback", "ignore")
# Default tolerances on the relative residual (see SolveInfo): a few hundred ulps of O(1)
# states, reached by Newton one iteration after it enters its quadratic regime.
DEFAULT_TOL = {jnp.dtype(jnp.float64): 1e-12, jnp.dtype(jnp.float32): 2e-5}
DEFAULT_MEMORY_LIMIT = 2 << 30  # bytes of Jacobians a full-matrix solve may hold: 2 GiB
# The default iteration cap (Solver.max_iter=None): max(floor, T) undamped, max(floor, 2T) damped.
DEFAULT_MIN_ITER, DEFAULT_MIN_ITER_DAMPED = 100, 200
MAX_ITER_LIMIT = 2**31 - 1  # the solve's iteration counter is int32


class Solver(NamedTuple):
  """How a parallel-in-time solve runs. Every field is a plain Python value (hashable).

  Attributes:
    method: ``"deer"`` (Newton, full Jacobians ``J_t = diag(σ'(a_t)) W_hh``: ``T·B·H²`` entries,
      ``O(H³)`` per combine), ``"quasi_deer"`` (their diagonals: ``T·B·H``, elementwise),
      ``"elk"`` / ``"quasi_elk"`` (the same linearisations damped by Levenberg–Marquardt,
      solved as a parallel Kalman smoother; for dynamics where undamped Newton blows up).
    tol: convergence threshold on the relative residual (:class:`SolveInfo`); ``None`` picks
      :data:`DEFAULT_TOL` for the dtype (``1e-12`` float64, ``2e-5`` float32).
    max_iter: the most linear solves one call may run (``1 ≤ max_iter ≤ 2³¹ − 1``, the int32
      counter), or ``None`` (the default) for a cap that grows with the sequence:
      ``max(100, T)`` for DEER and quasi-DEER, ``max(200, 2T)`` for ELK and quasi-ELK
      (:meth:`iteration_cap`). Exact (DEER) and quasi (quasi-DEER) Newton both make at least
      one more step exact per iteration, so ``T`` iterations guarantee convergence in exact
      arithmetic: a cap of ``T`` never gives up on a solve the theory says will finish. The
      damped methods hold back part of every step and have no such bound; they get twice the
      budget and a floor of 200 (one valid step takes quasi-ELK about 12 iterations to
      ``1e-12``, a benign tanh RNN at ``T = 100`` up to about 100). A useful solve takes far
      fewer (``O(log T)`` for a contracting RNN); a failing one runs to the cap, so set it
      lower to fail faster.
    damping: ``λ > 0`` of ELK and quasi-ELK, the weight of ``λ‖h − h⁽ⁱ⁾‖²`` (the trust region
      around the current iterate); ``λ → 0`` is DEER, large ``λ`` takes small safe steps.
      Ignored by DEER and quasi-DEER.
    adaptive: whether ``λ`` follows Levenberg–Marquardt's rule from ``damping`` (a step that
      does not lower ``½‖r‖²`` is rejected and ``λ`` grows ×10; an accepted one shrinks it
      ×0.3), or stays fixed (every finite step taken). ``None``: adaptive for ELK, fixed for
      quasi-ELK, whose diagonal step is not a descent direction of ``½‖r‖²`` (the rule would
      reject steps that converge).
    adjoint: how the gradient's reverse recursion runs: ``"sequential"`` (the hand BPTT's
      loop, :func:`jrnn.loops.states_backward`) or ``"parallel"`` (a reverse associative scan
      with full transposed Jacobians, ``T·B·H²`` entries; :mod:`jrnn.parallel.adjoint`).
    on_failure: what a solve that has not converged within ``max_iter`` (or met NaN/Inf) does:
      ``"raise"`` (a runtime error naming the residual, raised from a host callback; under
      ``jit`` it surfaces as a ``JaxRuntimeError`` carrying that message), ``"fallback"``
      (return the sequential scan's states instead: always correct, slower; under ``vmap``
      both branches run), ``"ignore"`` (return the last finite iterate; the
      :class:`SolveInfo` says it did not converge: only for callers that read it).
    memory_limit: bytes of full ``(T, B, H, H)`` matrices a solve may allocate (DEER, ELK, the
      parallel adjoint); checked at trace time, before anything is allocated. ``None``: no
      limit.
  """

  method: str = "deer"
  tol: Optional[float] = None
  max_iter: Optional[int] = None
  damping: float = 0.1
  adaptive: Optional[bool] = None
  adjoint: str = "sequential"
  on_failure: str = "raise"
  memory_limit: Optional[int] = DEFAULT_MEMORY_LIMIT

  def tolerance(self, dtype) -> float:
    """``tol``, or the default for ``dtype`` when ``tol`` is ``None``."""
    if self.tol is not None:
      return float(self.tol)
    return DEFAULT_TOL.get(jnp.dtype(dtype), 2e-5)

  def iteration_cap(self, n_steps: int) -> int:
    """``max_iter``, or the default cap for ``n_steps`` (``T``) when it is ``None``."""
    if self.max_iter is not None:
      return int(self.max_iter)
    if self.method in ("elk", "quasi_elk"):
      return max(DEFAULT_MIN_ITER_DAMPED, 2 * int(n_steps))
    return max(DEFAULT_MIN_ITER, int(n_steps))

  @property
  def adaptive_damping(self) -> bool:
    """Whether ELK's ``λ`` adapts (see ``adaptive``)."""
    return self.method == "elk" if self.adaptive is None else bool(self.adaptive)

  @property
  def full_jacobians(self) -> bool:
    """Whether the forward solve stores full ``H × H`` Jacobians."""
    return self.method in ("deer", "elk")


class SolveInfo(NamedTuple):
  """What a parallel solve reports (one value for the whole batch).

  ``residual`` is the fixed-point residual of the last iterate ``h``, relative to its size (the
  states returned are ``φ(h)``, one more application of the map, at most that far from ``h``):

  .. math::

     r = \\frac{\\max_{t,b,i} |h_t − φ_t(h_{t-1})|}{\\max(1, \\max_{t,b,i} |φ_t(h_{t-1})|)}

  with ``φ_t(h) = σ(W_hh h + u_t)`` at a valid step and ``φ_t(h) = h`` at a masked one; it is
  ``0`` exactly on the sequential trajectory. ``converged`` is ``r <= tol``. ``diverged`` says
  the solve stopped early: its residual was NaN or Inf even after the overflowing entries were
  reset (NaN/Inf inputs or weights, or dynamics whose sequential trajectory itself overflows),
  or adaptive ELK's damping grew past ``1e12`` without finding a step that lowers the residual
  (its non-finite trial steps are rejected, not fatal). The states returned are then ``φ`` of
  the last finite iterate. ``resets`` counts the iterations whose linearised recurrence
  overflowed (products of ``T`` Jacobians of a poor linearisation, typically the first
  iterations from a zero guess on long sequences); their non-finite entries restarted from the
  previous iterate, which keeps the iteration's guarantee (one more exact step each time).
  ``fell_back`` says the states returned are the sequential scan's, not the solver's: the solve
  failed and ``on_failure="fallback"`` replaced them (the other fields still describe the
  failed solve).
  """

  iterations: jax.Array  # shape=(), int32: linear solves run
  residual: jax.Array  # shape=(), dtype of the states
  converged: jax.Array  # shape=(), bool
  diverged: jax.Array  # shape=(), bool
  resets: jax.Array  # shape=(), int32: iterations whose linear solve overflowed
  fell_back: jax.Array  # shape=(), bool: the states are the sequential fallback's


SolverLike = Union[str, Solver]


def _is_real(x) -> bool:
  """A real Python or NumPy number, not a bool (``True`` is not a tolerance)."""
  return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def as_solver(solver: SolverLike, *, argname: str = "solver") -> Solver:
  """A validated :class:`Solver` from a :class:`Solver` or a method name.

  Raises:
    ValueError, TypeError: naming ``argname`` and the field at fault.
  """
  if isinstance(solver, str):
    if solver not in METHODS:
      raise ValueError(
        f"{argname} must be one of {METHODS} or a jrnn.parallel.Solver, got {solver!r}"
      )
    return Solver(method=solver)
  if not isinstance(solver, Solver):
    raise TypeError(
      f"{argname} must be a method name or a jrnn.parallel.Solver, got {type(solver).__name__}"
    )
  if solver.method not in METHODS:
    raise ValueError(f"{argname}.method must be one of {METHODS}, got {solver.method!r}")
  if solver.adjoint not in ADJOINTS:
    raise ValueError(f"{argname}.adjoint must be one of {ADJOINTS}, got {solver.adjoint!r}")
  if solver.on_failure not in ON_FAILURE:
    raise ValueError(f"{argname}.on_failure must be one of {ON_FAILURE}, got {solver.on_failure!r}")
  if solver.tol is not None:
    if not _is_real(solver.tol):
      raise TypeError(
        f"{argname}.tol must be a float in (0, 1) or None (the dtype's default), "
        f"got {type(solver.tol).__name__} {solver.tol!r}"
      )
    if not (math.isfinite(solver.tol) and 0 < solver.tol < 1):
      # A relative residual of 1 is met by the zero guess of every tanh network: tol >= 1
      # would report convergence after 0 iterations.
      raise ValueError(
        f"{argname}.tol must be a finite float in (0, 1) (a relative residual), got {solver.tol!r}"
      )
  if solver.max_iter is not None:
    if isinstance(solver.max_iter, (bool, np.bool_)) or not isinstance(
      solver.max_iter, (int, np.integer)
    ):
      raise TypeError(
        f"{argname}.max_iter must be a positive int or None (a cap that grows "
        f"with T), got {type(solver.max_iter).__name__} {solver.max_iter!r}"
      )
    if not 1 <= solver.max_iter <= MAX_ITER_LIMIT:
      raise ValueError(
        f"{argname}.max_iter must be an int in [1, {MAX_ITER_LIMIT}] (the "
        f"iteration counter is int32) or None, got {solver.max_iter!r}"
      )
  if not _is_real(solver.damping):
    raise TypeError(
      f"{argname}.damping must be a positive float (λ), "
      f"got {type(solver.damping).__name__} {solver.damping!r}"
    )
  if not (math.isfinite(solver.damping) and solver.damping > 0):
    raise ValueError(
      f"{argname}.damping must be a finite positive float (λ), got {solver.damping!r}"
    )
  if solver.adaptive is not None and not isinstance(solver.adaptive, (bool, np.bool_)):
    raise TypeError(f"{argname}.adaptive must be True, False or None, got {solver.adaptive!r}")
  if solver.memory_limit is not None and not (
    isinstance(solver.memory_limit, (int, np.integer))
    and not isinstance(solver.memory_limit, (bool, np.bool_))
    and solver.memory_limit > 0
  ):
    raise ValueError(
      f"{argname}.memory_limit must be a positive int (bytes) or None, got {solver.memory_limit!r}"
    )
  return solver


def check_memory(solver: Solver, what: str, shape, dtype, copies: int = 1) -> None:
  """Raises ``ValueError`` before a solve allocates ``copies`` full ``(T, B, H, H)`` arrays
  beyond ``solver.memory_limit``, naming the diagonal variant that avoids them.

  Args:
    solver: the configuration (its ``method`` and ``memory_limit``).
    what: who allocates: ``"forward"`` or ``"adjoint"``.
    shape: ``(T, B, H)`` of the states.
    dtype: their dtype.
    copies: how many ``(T, B, H, H)`` arrays the solve holds at once (its scan elements).
  """
  if solver.memory_limit is None:
    return
  n_steps, n_batch, n_hidden = shape
  entries = n_steps * n_batch * n_hidden * n_hidden
  need = copies * entries * jnp.dtype(dtype).itemsize
  if need <= solver.memory_limit:
    return
  size = f"T·B·H² = {n_steps}·{n_batch}·{n_hidden}² = {entries:,} entries"
  if what == "adjoint":
    raise ValueError(
      f"solver adjoint='parallel' stores the transposed Jacobians, {size} ({copies} "
      f"cop{'y' if copies == 1 else 'ies'}, {need / 2**30:.2f} GiB in {jnp.dtype(dtype).name}), "
      f"over memory_limit={solver.memory_limit} bytes; use adjoint='sequential' (the hand "
      "BPTT's loop, T·B·H) or raise Solver.memory_limit"
    )
  quasi = "quasi_" + solver.method
  raise ValueError(
    f"solver method={solver.method!r} stores full Jacobians, {size} ({copies} "
    f"cop{'y' if copies == 1 else 'ies'}, {need / 2**30:.2f} GiB in {jnp.dtype(dtype).name}), "
    f"over memory_limit={solver.memory_limit} bytes; use method={quasi!r} (diagonal "
    f"Jacobians, T·B·H = {n_steps * n_batch * n_hidden:,} entries) or raise "
    "Solver.memory_limit"
  )
