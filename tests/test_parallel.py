"""Parallel-in-time solvers through the engine: the sequential trajectory, the hand BPTT's
gradients, failures reported as documented, and training with a parallel solver.

Compiling the solvers dominates these tests' time, so each test compiles as few programs as
it can (one per method for the trajectory and gradient checks).
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
import jrnn.parallel as par
from helpers import random_params

METHODS = ("deer", "quasi_deer", "elk", "quasi_elk")
TIGHT = dict(tol=1e-13, max_iter=60)


def _close(a, b, rtol=1e-10):
  # rtol on every entry, plus an atol at rounding level of the largest entry (exact zeros).
  scale = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=1e-13 * scale)


def _mask():
  # holes inside sequences, a sequence masked from its first step, one fully valid
  return jnp.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1], [1, 0, 0], [0, 1, 1]], bool)


@functools.cache
def _models(num_layers=2):
  return (random_params(jax.random.key(0), n_in=2, n_hidden=4, n_out=2),
          jrnn.init_stacked(jax.random.key(2), 2, 3, 2, num_layers=num_layers, scheme="glorot",
                            dtype=jnp.float64),
          jax.random.normal(jax.random.key(1), (6, 3, 2), jnp.float64))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _values_and_grads(params, stacked, xs, solver, stacked_solver):
  """A tanh layer with a holed mask and a learnt h0, and a 2-layer ReLU stack with lengths:
  the states, and the gradients of a loss of the outputs and final states."""
  def loss(params, stacked):
    one = jrnn.forward(params, xs, mask=_mask(), solver=solver)
    two = jrnn.stacked_forward(stacked, xs, lengths=jnp.array([6, 2, 4]), activation="relu",
                               solver=stacked_solver)
    value = jnp.sum(jnp.sin(one.ys)) + jnp.sum(one.h_last ** 2) + jnp.sum(two.ys ** 2)
    return value, (one.hs, two.hs)
  return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, stacked)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_trajectory_and_gradients_equal_the_sequential_hand_bptt(method):
  # Both adjoints: the sequential loop for the tanh layer, the reverse scan for the ReLU stack
  # (one ReLU layer for the ELK methods, whose programs are the slowest to compile).
  models = _models(1 if "elk" in method else 2)
  (_, hs_ref), g_ref = _values_and_grads(*models, "sequential", "sequential")
  (_, hs), g = _values_and_grads(*models, par.Solver(method, **TIGHT),
                                 par.Solver(method, adjoint="parallel", **TIGHT))
  _close(hs, hs_ref)
  _close(g, g_ref)


@pytest.mark.slow
def test_parallel_forward_reports_iterations_and_residual():
  params = random_params(jax.random.key(4), n_in=2, n_hidden=3, n_out=1)
  xs = jax.random.normal(jax.random.key(5), (6, 2, 2), jnp.float64)
  out, info = jax.jit(lambda p: par.parallel_forward(p, xs, lengths=jnp.array([6, 2]),
                                                     solver="quasi_deer"))(params)
  ref = jrnn.forward(params, xs, lengths=jnp.array([6, 2]))
  _close(out, par.ParallelOutput(*ref))
  assert bool(info.converged) and not bool(info.diverged)
  assert 1 <= int(info.iterations) <= 7  # at most T + 1: one exact step more per iteration
  assert float(info.residual) <= par.DEFAULT_TOL[jnp.dtype(jnp.float64)]
  # unbatched, reverse, and a converged initial guess: zero iterations
  out1, info1 = par.parallel_forward(params, xs[:, 0], reverse=True, solver="quasi_deer",
                                     init=jrnn.forward(params, xs[:, 0], reverse=True).hs)
  assert int(info1.iterations) == 0
  _close(out1.hs, jrnn.forward(params, xs[:, 0], reverse=True).hs)


def test_solve_matches_recurrence_in_float32():
  k = jax.random.split(jax.random.key(6), 3)
  w = 0.5 * jax.random.normal(k[0], (8, 8), jnp.float32) / 8 ** 0.5
  u = jax.random.normal(k[1], (40, 2, 8), jnp.float32)
  h0 = jnp.zeros((2, 8), jnp.float32)
  hs, info = jax.jit(lambda w, u: par.solve(w, u, h0, solver="quasi_deer"))(w, u)
  assert hs.dtype == jnp.float32 and bool(info.converged) and info.residual.dtype == jnp.float32
  np.testing.assert_allclose(hs, jrnn.recurrence(w, u, h0), atol=1e-5)


def _expanding(n_steps, dtype):
  """A tanh RNN that settles (W = 4I: states saturate near ±1, where σ' is small) but whose
  linearisation about the zero guess grows 4× per step: DEER's first products overflow."""
  w = 4.0 * jnp.eye(3, dtype=dtype)
  u = 0.1 * jax.random.normal(jax.random.key(7), (n_steps, 1, 3), dtype)
  return w, u, jnp.zeros((1, 3), dtype)


@functools.partial(jax.jit, static_argnums=3)
def _solve(w, u, h0, solver):
  return par.solve(w, u, h0, solver=solver)


def test_non_convergence_is_raised_reported_or_replaced():
  w, u, h0 = _expanding(12, jnp.float64)
  ref = jrnn.recurrence(w, u, h0, kernel="xla")
  few = dict(method="quasi_deer", max_iter=2)
  with pytest.raises(Exception, match="did not reach tol=1e-12 within max_iter=2"):
    jax.block_until_ready(_solve(w, u, h0, par.Solver(**few)))
  hs, info = _solve(w, u, h0, par.Solver(on_failure="fallback", **few))
  assert int(info.iterations) == 2 and not bool(info.converged) and not bool(info.diverged)
  assert float(info.residual) > 1e-3
  np.testing.assert_allclose(hs, ref, rtol=1e-12)  # the sequential scan's states


@pytest.mark.slow
def test_overflow_is_reset_and_nan_is_reported():
  # From the zero guess DEER's linearised recurrence grows 4× per step: in float32 its first
  # solve overflows. Those entries restart from the previous iterate, the solve converges all
  # the same, and SolveInfo counts the resets.
  w, u, h0 = _expanding(80, jnp.float32)
  hs, info = _solve(w, u, h0, par.Solver("deer"))
  assert bool(info.converged) and not bool(info.diverged) and int(info.resets) >= 1
  np.testing.assert_allclose(hs, jrnn.recurrence(w, u, h0, kernel="xla"), atol=1e-5)
  # NaN in the inputs: the residual is NaN, nothing to iterate on; reported, then raised.
  u = u.at[5, 0, 1].set(jnp.nan)
  _, info = _solve(w, u, h0, par.Solver("deer", on_failure="ignore"))
  assert bool(info.diverged) and not bool(info.converged)
  with pytest.raises(Exception, match=r"'deer' met NaN/Inf \(diverged\)"):
    jax.block_until_ready(_solve(w, u, h0, par.Solver("deer")))


def test_deer_memory_is_checked_before_allocation_and_names_the_quasi_variant():
  params = jax.eval_shape(lambda: jrnn.init_params(jax.random.key(0), 2, 64, 1))
  xs = jax.ShapeDtypeStruct((100_000, 16, 2), jnp.float32)  # traced only: nothing allocated
  for method, quasi in (("deer", "quasi_deer"), ("elk", "quasi_elk")):
    with pytest.raises(ValueError, match=f"use method='{quasi}'"):
      jax.eval_shape(lambda p, x: jrnn.forward(p, x, solver=method), params, xs)
  with pytest.raises(ValueError, match="adjoint='sequential'"):
    jax.eval_shape(lambda p, x: jrnn.forward(
        p, x, solver=par.Solver("quasi_deer", adjoint="parallel")), params, xs)
  jax.eval_shape(lambda p, x: jrnn.forward(p, x, solver="quasi_deer"), params, xs)  # fine


@pytest.mark.parametrize("bad,match", [
    (dict(solver="newton"), "solver must be one of"),
    (dict(solver=par.Solver("newton")), r"solver.method must be one of"),
    (dict(solver=par.Solver(adjoint="magic")), r"solver.adjoint must be one of"),
    (dict(solver=par.Solver(on_failure="retry")), r"solver.on_failure must be one of"),
    (dict(solver=par.Solver(tol=-1.0)), r"solver.tol must be a finite float in \(0, 1\)"),
    (dict(solver=par.Solver(max_iter=0)), r"solver.max_iter must be an int in \[1, "),
    (dict(solver=par.Solver(damping=0.0)), r"solver.damping must be a finite positive float"),
    (dict(solver="deer", grad="autodiff"), "differentiates through its fixed point"),
    (dict(solver="deer", kernel="pallas_interpret"), "applies to solver='sequential' only"),
])
def test_bad_solver_choices_are_named(bad, match):
  params = jrnn.init_params(jax.random.key(0), 2, 3, 1)
  with pytest.raises((ValueError, TypeError), match=match):
    jrnn.forward(params, jnp.ones((4, 2), jnp.float32), **bad)


def test_solver_is_hashable_and_the_engine_lists_the_methods():
  assert jrnn.engine.SOLVERS == ("sequential",) + par.METHODS
  assert hash(par.Solver("elk", damping=0.5)) == hash(par.Solver("elk", damping=0.5))
  assert par.as_solver("quasi_elk") == par.Solver("quasi_elk")


@pytest.mark.slow
def test_make_train_step_trains_with_a_parallel_solver():
  k = jax.random.split(jax.random.key(8), 3)
  n_steps, n_batch = 8, 8
  xs = jax.random.normal(k[0], (n_steps, n_batch, 2), jnp.float32)
  targets = jnp.cumsum(xs[..., :1], axis=0) / 4  # a running sum: needs the recurrence
  batch = jrnn.training.Batch(xs, targets)
  params = jrnn.init_params(k[1], 2, 8, 1, scheme="glorot", dtype=jnp.float32)
  params = params._replace(w_hh=0.5 * params.w_hh)  # contracting: few Newton iterations
  loss_fn = jrnn.training.sequence_loss("squared_error", solver=par.Solver(
      "quasi_deer", on_failure="fallback"))
  step = jrnn.training.make_train_step(loss_fn, optax.adam(1e-2), has_aux=True)
  opt_state = optax.adam(1e-2).init(params)
  first = None
  for _ in range(40):
    params, opt_state, metrics = step(params, opt_state, batch)
    first = float(metrics["loss"]) if first is None else first
  assert float(metrics["loss"]) < 0.5 * first
