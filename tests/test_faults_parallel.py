"""Red-team probes of jrnn.parallel kept as a table (docs/reliability.md, issue 24): each bad
input, the error it must raise and a fragment of the message; then the behaviours a table cannot
show: a failed solve raises eagerly, under jit and under vmap, a converged one never raises
(vmapped seeds with solver="deer" train), "fallback" says so in SolveInfo, quasi-ELK converges
with lengths, and NaN/Inf at masked steps changes neither the loss nor any gradient in any path.

Tiny H and T throughout: the table's checks run at trace time, before anything compiles.
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
from jrnn.parallel import Solver, SolverError
from jrnn.training import seeds

F64 = jnp.float64
P = random_params(jax.random.key(0), n_in=2, n_hidden=3, n_out=1, learn_h0=False)
XS = np.zeros((4, 2, 2))
W, U, H0 = np.zeros((3, 3)), np.zeros((4, 2, 3)), np.zeros((2, 3))


def _fwd(**kw):
  return lambda: par.parallel_forward(P, kw.pop("xs", XS), **kw)


def _solver(**fields):
  return _fwd(solver=Solver(**fields))


# (label, call, exception type, message fragment)
FAULTS = [
    ("tol=True", _solver(tol=True), TypeError, "solver.tol must be a float in (0, 1)"),
    ("tol='1e-6'", _solver(tol="1e-6"), TypeError, "solver.tol must be a float"),
    ("tol=inf", _solver(tol=float("inf")), ValueError, "solver.tol must be a finite float"),
    ("tol=nan", _solver(tol=float("nan")), ValueError, "got nan"),
    ("tol=0", _solver(tol=0.0), ValueError, "solver.tol must be a finite float in (0, 1)"),
    ("tol=-1", _solver(tol=-1.0), ValueError, "solver.tol must be a finite float in (0, 1)"),
    ("tol=1 (met by the zero guess)", _solver(tol=1.0), ValueError, "got 1.0"),
    ("tol=2", _solver(tol=2), ValueError, "(a relative residual), got 2"),
    ("max_iter=10**12", _solver(max_iter=10**12), ValueError,
     "solver.max_iter must be an int in [1, 2147483647]"),
    ("max_iter=0", _solver(max_iter=0), ValueError, "solver.max_iter must be an int in [1,"),
    ("max_iter=-5", _solver(max_iter=-5), ValueError, "got -5"),
    ("max_iter=True", _solver(max_iter=True), TypeError, "solver.max_iter must be a positive int"),
    ("max_iter=2.5", _solver(max_iter=2.5), TypeError, "got float 2.5"),
    ("max_iter='10'", _solver(max_iter="10"), TypeError, "got str '10'"),
    ("damping=0", _solver(damping=0.0), ValueError, "solver.damping must be a finite positive"),
    ("damping=-1", _solver(damping=-1.0), ValueError, "got -1.0"),
    ("damping=nan", _solver(damping=float("nan")), ValueError, "got nan"),
    ("damping=inf", _solver(damping=float("inf")), ValueError, "got inf"),
    ("damping=True", _solver(damping=True), TypeError, "solver.damping must be a positive float"),
    ("damping='0.1'", _solver(damping="0.1"), TypeError, "got str '0.1'"),
    ("adaptive='no'", _solver(adaptive="no"), TypeError, "solver.adaptive must be True, False"),
    ("memory_limit=True", _solver(memory_limit=True), ValueError, "solver.memory_limit must be"),
    ("memory_limit=0", _solver(memory_limit=0), ValueError, "positive int (bytes) or None"),
    ("memory_limit=1.5", _solver(memory_limit=1.5), ValueError, "got 1.5"),
    ("method='newton'", _solver(method="newton"), ValueError, "solver.method must be one of"),
    ("adjoint='magic'", _solver(adjoint="magic"), ValueError, "solver.adjoint must be one of"),
    ("on_failure='retry'", _solver(on_failure="retry"), ValueError,
     "solver.on_failure must be one of"),
    ("solver='newton'", _fwd(solver="newton"), ValueError, "solver must be one of"),
    ("solver=3", _fwd(solver=3), TypeError, "solver must be a method name or a"),
    ("T=0 parallel_forward", _fwd(xs=np.zeros((0, 2, 2))), ValueError,
     "xs must have at least one time step (T >= 1), got shape (0, 2, 2)"),
    ("T=0 solve", lambda: par.solve(W, np.zeros((0, 2, 3)), H0), ValueError,
     "u must have at least one time step"),
    ("params a dict", lambda: par.parallel_forward({"w": 1}, XS), TypeError,
     "params must be RNNParams or LayerParams"),
    ("xs wrong I", _fwd(xs=np.zeros((4, 2, 5))), ValueError, "xs must have shape (T, B, I=2)"),
    ("xs float32", _fwd(xs=np.zeros((4, 2, 2), np.float32)), TypeError, "xs has dtype float32"),
    ("mask and lengths", _fwd(mask=np.ones((4, 2), bool), lengths=np.array([4, 4])), ValueError,
     "mask or lengths, not both"),
    ("lengths > T", _fwd(lengths=np.array([5, 1])), ValueError, "lengths must lie in [0, T=4]"),
    ("lengths float", _fwd(lengths=np.array([2.0, 1.0])), TypeError,
     "lengths must have an integer dtype"),
    ("mask wrong shape", _fwd(mask=np.ones((3, 2), bool)), ValueError,
     "mask must have shape (T, B)=(4, 2)"),
    ("init wrong shape", _fwd(init=np.zeros((4, 2, 2))), ValueError,
     "init must have shape (T, B, H)=(4, 2, 3)"),
    ("reverse='no'", _fwd(reverse="no"), TypeError, "reverse must be True or False"),
    ("solve h0 wrong shape", lambda: par.solve(W, U, np.zeros((3,))), ValueError,
     "h0 must have shape (B, H)"),
    ("solve u rank 2", lambda: par.solve(W, np.zeros((4, 3)), H0), ValueError,
     "u must have shape (T, B, H)"),
]


@pytest.mark.parametrize("label,call,exc,fragment", FAULTS, ids=[f[0] for f in FAULTS])
def test_bad_input_is_refused_with_a_clear_message(label, call, exc, fragment):
  del label
  with pytest.raises(exc, match=_escape(fragment)):
    call()


def _escape(fragment):
  import re  # pylint: disable=import-outside-toplevel
  return re.escape(fragment)


def test_default_iteration_cap_grows_with_t():
  assert Solver().max_iter is None
  assert Solver("deer").iteration_cap(10) == 100 and Solver("deer").iteration_cap(400) == 400
  assert Solver("quasi_elk").iteration_cap(100) == 200
  assert Solver("elk").iteration_cap(1000) == 2000
  assert Solver("quasi_elk", max_iter=7).iteration_cap(1000) == 7


# ---------------------------------------------------------------------------------------------
# Behaviour: failures are never silent; converged solves never raise.

def _expanding(n_steps=12):
  """A tanh RNN (W = 4I) whose linearisation about the zero guess grows 4× per step: quasi-DEER
  with max_iter=2 cannot converge; with zero inputs the trajectory is 0 and it converges."""
  w = 4.0 * jnp.eye(3, dtype=F64)
  u = 0.1 * jax.random.normal(jax.random.key(7), (n_steps, 1, 3), F64)
  return w, u, jnp.zeros((1, 3), F64)


FEW = Solver("quasi_deer", max_iter=2)


def test_failed_solve_raises_eagerly_as_solver_error():
  w, u, h0 = _expanding()
  with pytest.raises(SolverError, match="'quasi_deer' did not reach tol=1e-12 within max_iter=2"):
    par.solve(w, u, h0, solver=FEW)
  with pytest.raises(SolverError, match="did not reach"):  # through the engine's custom_vjp
    jax.grad(lambda u: jnp.sum(jrnn.recurrence(w, u, h0, solver=FEW)))(u)


@pytest.mark.slow
def test_issue_reproducers_raise_eagerly():
  # Issue 24: an unstable ELK solve (orthogonal, scale 3, T = 400) returned states 2.0 off.
  params = jrnn.init_params(jax.random.key(3), 1, 16, 1, scheme="orthogonal", scale=3.0,
                            dtype=jnp.float32)
  xs = jax.random.normal(jax.random.key(4), (400, 1, 1), jnp.float32)
  with pytest.raises(SolverError, match=r"'elk' did not reach tol=0.5 within max_iter=20.*"
                                        r"try a larger damping"):
    jrnn.forward(params, xs, solver=Solver("elk", tol=0.5, max_iter=20))
  with pytest.raises(SolverError, match="'deer' did not reach tol=2e-05 within max_iter=20"):
    par.parallel_forward(params, xs, solver=Solver("deer", max_iter=20))


def test_failure_message_never_suggests_the_failed_method():
  for method in par.METHODS:
    text = par.layer.failure_message(method, 3, 0.1, False, 1e-6, 3)
    suggestions = text.split("Raise max_iter", 1)[1]
    assert f"'{method}'" not in suggestions, text


def test_under_jit_and_vmap_only_a_failed_member_raises():
  w, u, h0 = _expanding()
  run = jax.jit(jax.vmap(lambda u: par.solve(w, u, h0, solver=FEW)))
  hs, info = run(jnp.stack([0 * u, 0 * u]))  # both converge (the zero trajectory)
  assert bool(jnp.all(info.converged)) and bool(jnp.all(hs == 0))
  with pytest.raises(Exception, match="SolverError: parallel solver 'quasi_deer' did not reach"):
    jax.block_until_ready(run(jnp.stack([0 * u, u])))  # member 1 fails


def test_fallback_and_ignore_say_so_in_solve_info():
  w, u, h0 = _expanding()
  ref = jrnn.recurrence(w, u, h0, kernel="xla")
  hs, info = par.solve(w, u, h0, solver=FEW._replace(on_failure="fallback"))
  assert bool(info.fell_back) and not bool(info.converged)
  np.testing.assert_allclose(hs, ref, rtol=1e-12)
  hs, info = par.solve(w, 0 * u, h0, solver=FEW._replace(on_failure="fallback"))
  assert bool(info.converged) and not bool(info.fell_back)
  hs, info = par.solve(w, u, h0, solver=FEW._replace(on_failure="ignore"))
  assert not bool(info.converged) and not bool(info.fell_back)
  assert float(jnp.max(jnp.abs(hs - ref))) > 1e-6  # the iterate, flagged as not converged


@pytest.mark.slow
def test_vmapped_seeds_train_with_deer():
  # Issue 24: jit(vmap(forward(solver="deer"))) raised on every call though every solve
  # converged, so make_multi_seed_train_step with sequence_loss(solver="deer") could not run.
  params = jax.vmap(lambda s: jrnn.init_params(jax.random.key(s), 3, 8, 2, dtype=F64))(
      jnp.arange(3))
  xs = jax.random.normal(jax.random.key(1), (3, 30, 4, 3), F64)
  hs = jax.jit(jax.vmap(lambda p, x: jrnn.forward(p, x, solver="deer").hs))(params, xs)
  ref = jax.vmap(lambda p, x: jrnn.forward(p, x).hs)(params, xs)
  np.testing.assert_allclose(hs, ref, rtol=1e-10, atol=1e-12)
  targets = jax.random.normal(jax.random.key(2), (3, 30, 4, 2), F64)
  batch = jrnn.training.Batch(xs, targets)
  opt = optax.sgd(1e-2)
  step = seeds.make_multi_seed_train_step(
      jrnn.training.sequence_loss("squared_error", solver="deer"), opt, has_aux=True,
      donate=False)
  opt_state = jax.vmap(opt.init)(params)
  new, _, metrics = step(params, opt_state, batch)
  assert np.all(np.isfinite(np.asarray(metrics["loss"])))
  assert not np.allclose(new.w_hh, params.w_hh)


@pytest.mark.slow
def test_quasi_elk_converges_with_lengths_as_without():
  # Issue 24: residual 1.1e-5 after 3,000 iterations with lengths (59 without). Masked steps
  # are exactly linear; damped, a run of them needed O(λ L²) iterations.
  k = jax.random.split(jax.random.key(0), 2)
  n_hidden, n_steps = 4, 100
  w = 0.9 * jax.random.normal(k[0], (n_hidden, n_hidden), F64) / np.sqrt(n_hidden)
  u = jax.random.normal(k[1], (n_steps, 4, n_hidden), F64)
  h0 = jnp.zeros((4, n_hidden), F64)
  mask = jnp.arange(n_steps)[:, None] < jnp.array([100, 70, 10, 1])[None]
  holes = mask.at[20:50, 0].set(False)
  solve = jax.jit(lambda u, m, s: par.solve(w, u, h0, m, solver=s), static_argnums=2)
  for method in ("quasi_elk", "elk"):
    solver = Solver(method, on_failure="ignore")
    _, plain = solve(u, jnp.ones_like(mask), solver)
    for m in (mask, holes):
      hs, info = solve(u, m, solver)
      assert bool(info.converged) and int(info.iterations) <= int(plain.iterations) + 5, (
          method, int(info.iterations), int(plain.iterations))
      ref = jrnn.recurrence(w, u, h0, m, kernel="xla")
      np.testing.assert_allclose(hs, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Masked steps are inert: NaN or Inf there changes neither the loss nor any gradient.

def _poisoned(xs, mask):
  bad = jnp.where(mask[..., None], xs, jnp.nan)
  return bad.at[-1, 1, 0].set(jnp.inf)  # an Inf too (step T-1 of sequence 1 is masked)


@functools.cache
def _masked_case():
  params = random_params(jax.random.key(5), n_in=2, n_hidden=3, n_out=2, learn_h0=False)
  xs = jax.random.normal(jax.random.key(6), (6, 2, 2), F64)
  targets = jax.random.normal(jax.random.key(7), (6, 2, 2), F64)
  lengths = jnp.array([6, 3])
  mask = jnp.arange(6)[:, None] < lengths[None]
  mask = mask.at[1, 0].set(False)  # a hole inside sequence 0 as well
  return params, xs, targets, mask


PATHS = [dict(grad="hand"), dict(grad="autodiff"), dict(solver="deer"),
         dict(solver="quasi_deer"), dict(solver="elk"), dict(solver="quasi_elk"),
         dict(solver=Solver("deer", adjoint="parallel"))]


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(map(str, p.values())))
def test_nan_and_inf_at_masked_steps_are_inert(path):
  params, xs, targets, mask = _masked_case()

  def loss(p, x):
    ys = jrnn.forward(p, x, mask=mask, **path).ys
    return jrnn.squared_error(ys, targets, mask)

  vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  clean_value, clean_grads = vg(params, xs)
  value, grads = vg(params, _poisoned(xs, mask))
  assert np.isfinite(float(value))
  np.testing.assert_allclose(value, clean_value, rtol=1e-12)
  chex.assert_trees_all_close(grads, clean_grads, rtol=1e-10, atol=1e-14)
  assert not np.any(np.asarray(grads[1])[~np.asarray(mask)])  # ∂L/∂x is 0 at masked steps


def test_masked_nan_is_inert_in_stacks_parallel_forward_and_recurrence():
  params, xs, targets, mask = _masked_case()
  bad = _poisoned(xs, mask)
  stack = jrnn.init_stacked(jax.random.key(2), 2, 3, 2, num_layers=1, bidirectional=True,
                            scheme="glorot", dtype=F64)

  def losses(x):
    out = [jrnn.stacked_forward(stack, x, mask=mask).ys,
           par.parallel_forward(params, x, mask=mask, solver="quasi_deer")[0].ys]
    u = x @ params.w_xh.T
    out.append(jrnn.recurrence(params.w_hh, u, u[0] * 0, mask, grad="autodiff"))
    return [jrnn.squared_error(y, jnp.zeros_like(y), mask) for y in out]

  for i in range(3):
    f = jax.jit(jax.value_and_grad(lambda x: losses(x)[i]))
    (v0, g0), (v1, g1) = f(xs), f(bad)
    assert np.isfinite(float(v1)) and np.all(np.isfinite(np.asarray(g1))), i
    np.testing.assert_allclose(v1, v0, rtol=1e-12)
    np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-14)
