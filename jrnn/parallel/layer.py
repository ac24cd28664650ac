"""The parallel solvers as a differentiable recurrence: forward by a solver, backward by BPTT.

:func:`parallel_recurrence` is a ``jax.custom_vjp``: its forward pass finds the trajectory
with the :class:`~jrnn.parallel.Solver`'s method (then applies its ``on_failure`` policy); its
backward pass differentiates through the fixed point, not through the iterations. At the
solution ``h`` of ``r(h, θ) = 0`` (``r_t = h_t − φ_t(h_{t-1}; θ)``) the implicit function
theorem gives ``dh/dθ = −(∂r/∂h)⁻¹ ∂r/∂θ``; ``∂r/∂h`` is block lower-bidiagonal with identity
blocks and ``−J_t`` below, so the transposed solve is exactly BPTT's reverse recursion
``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)``. Its cost and result are the hand BPTT's; only the
trajectory it reads came from the solver. ``Solver.adjoint`` runs it either by the sequential
loop (:func:`jrnn.loops.states_backward`) or by a reverse associative scan
(:func:`jrnn.parallel.adjoint.parallel_states_backward`).

* :func:`solve`: states and :class:`SolveInfo` of the recurrence over projected inputs ``u``
  (the public entry point; differentiable).
* :func:`parallel_forward`: the same for a layer or an :class:`jrnn.RNNParams` model with
  readout, over time-major inputs: ``(ParallelOutput(ys, hs, h_last), SolveInfo)``. This is how
  a caller of ``jrnn.forward(..., solver=...)`` (which returns only the states) reads the
  iteration count and residual.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import loops, validation
from jrnn.activations import Activation, ActivationLike, get_activation
from jrnn.parallel import adjoint, elk, newton
from jrnn.parallel.config import SolveInfo, Solver, SolverLike, as_solver, check_memory
from jrnn.params import LayerParams, RNNParams

# Full (T, B, H, H) arrays each full-matrix solve holds at once (DEER's Jacobians and the scan's
# partial products; ELK's (A, C, J) and theirs; the adjoint's transposed Jacobians): XLA's
# temporary buffers for them measured 3.1, 8.3 and 2.6 × T·B·H² entries at (T, B, H) =
# (1000, 4, 32), float32, on CPU.
_FULL_COPIES = {"deer": 3, "elk": 8, "adjoint": 3}


def trajectory(w_hh, u, h0, mask, act: Activation, solver: Solver, init=None):
  """``(hs (T, B, H), SolveInfo)`` by ``solver.method``, before any ``on_failure`` policy.

  ``u``, ``mask`` are in time order; ``mask`` boolean or ``None``.
  """
  if solver.full_jacobians:
    check_memory(solver, "forward", u.shape, u.dtype, _FULL_COPIES[solver.method])
  step = {
    "deer": newton.deer_step,
    "quasi_deer": newton.quasi_deer_step,
    "elk": elk.elk_step_full,
    "quasi_elk": elk.elk_step_diagonal,
  }[solver.method]
  damped = solver.method in ("elk", "quasi_elk")
  return newton.iterate(
    step,
    w_hh,
    u,
    h0,
    mask,
    act,
    tol=solver.tolerance(u.dtype),
    max_iter=solver.iteration_cap(u.shape[0]),
    init=init,
    damping=solver.damping if damped else None,
    adaptive=solver.adaptive_damping,
  )


class SolverError(RuntimeError):
  """A parallel solve with ``on_failure="raise"`` did not converge."""


# What to try instead of each method, most useful first (never the method that failed).
_ALTERNATIVES = {
  "deer": "method='elk' (damped) for unstable dynamics",
  "quasi_deer": "method='deer' (full Jacobians) or 'quasi_elk' (damped) for unstable dynamics",
  "elk": "a larger damping",
  "quasi_elk": "method='elk' (full Jacobians) or a larger damping",
}


def failure_message(method: str, iterations, residual, diverged, tol: float, max_iter: int) -> str:
  """The :class:`SolverError` message of a failed solve: what happened and what to change."""
  why = (
    "met NaN/Inf (diverged)"
    if diverged
    else f"did not reach tol={tol:g} within max_iter={max_iter}"
  )
  return (
    f"parallel solver {method!r} {why}: {int(iterations)} iterations, relative residual "
    f"{float(residual):.3g}. Raise max_iter, try {_ALTERNATIVES[method]}, pass "
    "Solver(on_failure='fallback') to run the sequential scan instead, or use "
    "solver='sequential' (Newton needs a contracting RNN: largest Lyapunov exponent < 0)"
  )


def _raise_failed(method, tol, max_iter, failed, iterations, residual, diverged):
  """Host side of the ``"raise"`` policy: raises for the first failed solve of a (possibly
  vmapped, hence batched) set of flags; returns ``True`` per solve otherwise."""
  failed = np.asarray(failed)
  if failed.any():
    i = np.unravel_index(np.argmax(failed), failed.shape) if failed.ndim else ()
    raise SolverError(
      failure_message(
        method,
        np.asarray(iterations)[i],
        np.asarray(residual)[i],
        bool(np.asarray(diverged)[i]),
        tol,
        max_iter,
      )
    )
  return np.ones(failed.shape, bool)


def apply_policy(
  hs, info: SolveInfo, w_hh, u, h0, mask, act: Activation, solver: Solver, unroll: int = 1
):
  """Applies ``solver.on_failure`` to a solve's result; returns ``(hs, info)`` to use.

  ``"raise"``: eagerly (concrete values) a :class:`SolverError` is raised here; traced (under
  ``jit``, ``vmap``, ``grad``) a ``jax.pure_callback`` that ``lax.cond`` runs only on failure
  raises it (under ``vmap`` the cond runs for every call, and the callback receives each
  member's flag, so only a failed member raises); its result gates the returned states, so
  the check can be neither skipped nor pruned. ``"fallback"``: ``lax.cond`` runs
  :func:`jrnn.loops.scan_recurrence` when the solve failed, and ``info.fell_back`` says so.
  ``"ignore"``: ``hs`` as it is (``info.converged`` says whether to trust it).
  """
  failed = ~info.converged
  if solver.on_failure == "raise":
    check = functools.partial(
      _raise_failed, solver.method, solver.tolerance(u.dtype), solver.iteration_cap(u.shape[0])
    )
    if not isinstance(failed, jax.core.Tracer):
      check(failed, info.iterations, info.residual, info.diverged)
      return hs, info

    def host_check():
      return jax.pure_callback(
        check,
        jax.ShapeDtypeStruct((), jnp.bool_),
        failed,
        info.iterations,
        info.residual,
        info.diverged,
        vmap_method="broadcast_all",
      )

    ok = jax.lax.cond(failed, host_check, lambda: jnp.ones((), bool))
    return jnp.where(ok, hs, jnp.nan), info
  if solver.on_failure == "fallback":
    hs = jax.lax.cond(
      failed, lambda: loops.scan_recurrence(w_hh, u, h0, mask, act, unroll), lambda: hs
    )
    return hs, info._replace(fell_back=failed)
  return hs, info


def _solve(w_hh, u, h0, mask, init, act, solver, unroll):
  hs, info = trajectory(w_hh, u, h0, mask, act, solver, init)
  return apply_policy(hs, info, w_hh, u, h0, mask, act, solver, unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def parallel_recurrence(w_hh, u, h0, mask, init, act: Activation, solver: Solver, unroll: int = 1):
  """``(hs (T, B, H), SolveInfo)`` of the recurrence over ``u (T, B, H)`` (time order), with the
  fixed-point VJP of the module docstring.

  Args:
    w_hh: ``(H, H)``.
    u: ``(T, B, H)``.
    h0: ``(B, H)``.
    mask: ``(T, B)`` boolean, or ``None``.
    init: initial guess ``(T, B, H)`` or ``None`` (zeros); it receives a zero cotangent.
    act: the activation (static).
    solver: a validated :class:`Solver` (static).
    unroll: the sequential loops' ``unroll`` (fallback and sequential adjoint).
  """
  return _solve(w_hh, u, h0, mask, init, act, solver, unroll)


def _fwd(w_hh, u, h0, mask, init, act, solver, unroll):
  hs, info = _solve(w_hh, u, h0, mask, init, act, solver, unroll)
  keep_u = u if act.deriv_from_output is None else None
  return (hs, info), (w_hh, keep_u, h0, mask, hs, init)


def _bwd(act, solver, unroll, res, cts):
  w_hh, u, h0, mask, hs, init = res
  g = cts[0]
  if solver.adjoint == "parallel":
    deltas, dw_hh, dh0 = adjoint.parallel_states_backward(act, w_hh, u, h0, mask, hs, g)
  else:
    deltas, dw_hh, dh0 = loops.states_backward(act, unroll, w_hh, u, h0, mask, hs, g)
  dinit = None if init is None else jnp.zeros_like(init)
  return dw_hh, deltas, dh0, None, dinit


parallel_recurrence.defvjp(_fwd, _bwd)


def check_adjoint_memory(solver: Solver, shape, dtype) -> None:
  """Raises before a parallel adjoint would allocate past ``solver.memory_limit``."""
  if solver.adjoint == "parallel":
    check_memory(solver, "adjoint", shape, dtype, _FULL_COPIES["adjoint"])


def run(
  w_hh,
  u,
  h0,
  mask,
  act: Activation,
  solver: SolverLike,
  *,
  reverse: bool = False,
  unroll: int = 1,
  init=None,
):
  """:func:`parallel_recurrence` with ``reverse`` handled, ``mask`` made boolean and the solver
  validated: what :mod:`jrnn.engine` calls. Returns ``(hs (T, B, H), SolveInfo)``."""
  solver = as_solver(solver)
  check_adjoint_memory(solver, u.shape, u.dtype)
  u, mask = loops.in_time_order(u, mask, reverse)
  if init is not None and reverse:
    init = jnp.flip(init, 0)
  hs, info = parallel_recurrence(w_hh, u, h0, mask, init, act, solver, unroll)
  return (jnp.flip(hs, 0) if reverse else hs), info


def solve(
  w_hh: jax.Array,
  u: jax.Array,
  h0: jax.Array,
  mask: Optional[jax.Array] = None,
  *,
  activation: ActivationLike = "tanh",
  solver: SolverLike = "deer",
  reverse: bool = False,
  init: Optional[jax.Array] = None,
):
  """Solves ``h_t = σ(h_{t-1} W_hhᵀ + u_t)`` (a masked step copies the state) in parallel.

  The recurrence of :func:`jrnn.recurrence`, returning the solver's diagnostics too.
  Differentiable by ``jax.grad`` (the fixed-point adjoint of :mod:`jrnn.parallel.layer`);
  ``init`` gets a zero gradient.

  Args:
    w_hh: ``(H, H)``.
    u: projected inputs ``(T, B, H)``, time-major.
    h0: ``(B, H)``.
    mask: ``(T, B)`` boolean or numeric (nonzero: valid step), or ``None``.
    activation: ``σ``.
    solver: a method name (``"deer"``, ``"quasi_deer"``, ``"elk"``, ``"quasi_elk"``) or a
      :class:`Solver`.
    reverse: run from ``t = T`` down (outputs stay aligned with ``u``).
    init: the initial guess of the states ``(T, B, H)`` (aligned with ``u``); ``None`` is zeros.
      A good guess (e.g. the previous training step's states) saves iterations.

  Returns:
    ``(hs (T, B, H), SolveInfo)``.

  Raises:
    ValueError, TypeError: at trace time, for bad shapes, dtypes, solver fields, or a
    full-Jacobian solve over ``solver.memory_limit``.
    SolverError: at run time, with ``on_failure="raise"``, when the solve fails (under ``jit``
    wrapped in JAX's runtime error).
  """
  act = get_activation(activation)
  validation.check_bool("reverse", reverse)
  validation.check_recurrence_inputs(w_hh, u, h0, mask)
  if jnp.shape(u)[0] == 0:
    raise ValueError(f"u must have at least one time step (T >= 1), got shape {jnp.shape(u)}")
  dtype = jnp.result_type(u)
  if init is not None:
    validation.check_shape("init", init, u.shape, "(T, B, H)")
    validation.check_float("init", init, dtype)
  return run(w_hh, u, h0, mask, act, solver, reverse=reverse, init=init)


class ParallelOutput(NamedTuple):
  """What :func:`parallel_forward` returns beside its :class:`SolveInfo` (as
  :class:`jrnn.RNNOutput`, time-major)."""

  ys: Optional[jax.Array]  # shape=(T, B, O); None for LayerParams
  hs: jax.Array  # shape=(T, B, H)
  h_last: jax.Array  # shape=(B, H): the state after each sequence's last valid step


def parallel_forward(
  params: Union[RNNParams, LayerParams],
  xs: jax.Array,
  *,
  h0: Optional[jax.Array] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  reverse: bool = False,
  solver: SolverLike = "deer",
  init: Optional[jax.Array] = None,
):
  """:func:`jrnn.forward` by a parallel solver, returning the solver's diagnostics too.

  ``jrnn.forward(params, xs, solver=...)`` gives the same states (and gradients) but no
  :class:`SolveInfo`; call this where the iteration count or residual matters.

  Args:
    params: :class:`jrnn.RNNParams` (with readout) or :class:`jrnn.LayerParams` (``ys`` is
      ``None``).
    xs: time-major inputs ``(T, B, I)``, or ``(T, I)`` for one sequence.
    h0: ``(B, H)`` (``(H,)`` unbatched); default ``params.h0`` if learnt, else zeros.
    mask, lengths: valid steps ``(T, B)`` or lengths ``(B,)`` (``(T,)``/``()`` unbatched).
    activation, output_activation, reverse: as :func:`jrnn.forward`.
    solver: a method name or a :class:`Solver`.
    init: initial guess of the states, shaped as the returned ``hs``.

  Returns:
    ``(ParallelOutput(ys, hs, h_last), SolveInfo)``, shaped as :func:`jrnn.forward`'s
    time-major outputs.
  """
  if not isinstance(params, (RNNParams, LayerParams)):
    raise TypeError(f"params must be RNNParams or LayerParams, got {type(params).__name__}")
  validation.check_params_consistent(params.w_xh, params.w_hh, params.b_h, params.h0)
  dtype = jnp.result_type(params.w_hh)
  n_hidden, n_in = params.w_xh.shape
  validation.check_float("xs", xs, dtype)
  unbatched = jnp.ndim(xs) == 2
  if unbatched:
    xs = xs[:, None]
    mask = None if mask is None else jnp.asarray(validation.from_nested(mask))[:, None]
    lengths = None if lengths is None else jnp.reshape(validation.from_nested(lengths), (1,))
    h0 = None if h0 is None else h0[None]
    init = None if init is None else init[:, None]
  validation.check_shape("xs", xs, (None, None, n_in), f"(T, B, I={n_in})")
  n_steps, n_batch, _ = xs.shape
  if lengths is not None:
    if mask is not None:
      raise ValueError("pass mask or lengths, not both")
    mask = validation.mask_from_lengths(validation.from_nested(lengths), n_steps, n_batch)
  if n_steps == 0:
    raise ValueError(f"xs must have at least one time step (T >= 1), got shape {xs.shape}")
  if mask is not None:
    mask = validation.from_nested(mask)
    validation.check_mask(mask, n_steps, n_batch)
    mask = jnp.asarray(mask).astype(bool)
    xs = loops.zero_masked(xs, mask)  # a padded step's input, NaN or not, stays inert
  if h0 is None:
    h0 = (
      jnp.zeros((n_batch, n_hidden), dtype)
      if params.h0 is None
      else jnp.broadcast_to(params.h0, (n_batch, n_hidden))
    )
  u = xs @ params.w_xh.T + params.b_h.reshape(1, 1, n_hidden)
  hs, info = solve(
    params.w_hh, u, h0, mask, activation=activation, solver=solver, reverse=reverse, init=init
  )
  h_last = hs[0] if reverse else hs[-1]
  ys = None
  if isinstance(params, RNNParams):
    ys = hs @ params.w_hy.T + params.b_y.reshape(1, 1, -1)
    if output_activation is not None:
      ys = get_activation(output_activation, argname="output_activation").fn(ys)
  if unbatched:
    ys = None if ys is None else ys[:, 0]
    hs, h_last = hs[:, 0], h_last[0]
  return ParallelOutput(ys, hs, h_last), info
