"""jrnn.parallel's building blocks: linear scans, one ELK step, the parallel adjoint."""
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn import loops
from jrnn.activations import get_activation
from jrnn.parallel import adjoint, elk, linear_scan, newton


def _random(key, shape, scale=1.0):
  return scale * jax.random.normal(key, shape, jnp.float64)


@pytest.mark.slow
def test_scans_match_a_sequential_loop():
  k = jax.random.split(jax.random.key(0), 2)
  a = _random(k[0], (7, 2, 3, 3), 0.6)
  b = _random(k[1], (7, 2, 3))
  d = a[..., 0]

  @jax.jit
  def scans(a, d, b):
    return [(linear_scan.solve_full(a, b, reverse=r), linear_scan.solve_diagonal(d, b, reverse=r))
            for r in (False, True)]

  for reverse, (full, diagonal) in zip((False, True), scans(a, d, b)):
    np.testing.assert_allclose(full, linear_scan.solve_sequential(a, b, reverse=reverse),
                               rtol=1e-12)
    np.testing.assert_allclose(diagonal, linear_scan.solve_sequential(d, b, reverse=reverse),
                               rtol=1e-12)


def test_scans_name_a_bad_shape():
  with pytest.raises(ValueError, match=r"a must have shape b.shape \+ \(H,\)"):
    linear_scan.solve_full(jnp.zeros((4, 2, 3)), jnp.zeros((4, 2, 3)))
  with pytest.raises(ValueError, match="a must have the shape of b"):
    linear_scan.solve_diagonal(jnp.zeros((4, 2, 2)), jnp.zeros((4, 2, 3)))


@pytest.mark.slow
def test_elk_step_is_the_levenberg_marquardt_least_squares_solution():
  # One ELK step minimises Σ‖h_t − J_t h_{t-1} − c_t‖² + λ Σ‖h_t − h⁽ⁱ⁾_t‖² over the valid
  # steps, a masked step (exactly linear) being the hard constraint h_t = h_{t-1}: hold the
  # Kalman smoother (full and diagonal Jacobians) to the dense equality-constrained
  # least-squares solution of that objective (its KKT system).
  n_steps, n_batch, n_hidden, lam = 4, 2, 3, 0.7
  k = jax.random.split(jax.random.key(1), 4)
  w = _random(k[0], (n_hidden, n_hidden), 0.8)
  u = _random(k[1], (n_steps, n_batch, n_hidden))
  h0 = _random(k[2], (n_batch, n_hidden), 0.3)
  mask = jnp.array([[1, 1], [1, 0], [0, 1], [1, 0]], bool)
  guess = _random(k[3], (n_steps, n_batch, n_hidden), 0.5)
  lin = newton.linearise(w, u, h0, mask, get_activation("tanh"), guess)
  steps = jax.jit(lambda lin: (elk.elk_step_full(w, mask, guess, lin, lam),
                               elk.elk_step_diagonal(w, mask, guess, lin, lam)))(lin)
  diag = newton.diagonal_jacobians(w, lin.gain, mask)
  for step, jac in zip(steps, (newton.full_jacobians(w, lin.gain, mask),
                               diag[..., :, None] * jnp.eye(n_hidden)[None, None])):
    c = newton.offsets(jac, lin)
    n = n_steps * n_hidden
    for b in range(n_batch):
      rows, rhs, cons, cons_rhs = [], [], [], []
      for t in range(n_steps):
        sl = slice(t * n_hidden, (t + 1) * n_hidden)
        dyn = np.zeros((n_hidden, n))
        dyn[:, sl] = np.eye(n_hidden)
        if t:
          dyn[:, (t - 1) * n_hidden:t * n_hidden] = -np.asarray(jac[t, b])
        if not mask[t, b]:
          cons.append(dyn)
          cons_rhs.append(np.asarray(c[t, b]))
          continue
        damp = np.zeros((n_hidden, n))
        damp[:, sl] = np.sqrt(lam) * np.eye(n_hidden)
        rows += [dyn, damp]
        rhs += [np.asarray(c[t, b]), np.sqrt(lam) * np.asarray(guess[t, b])]
      a, r = np.concatenate(rows), np.concatenate(rhs)
      con = np.concatenate(cons) if cons else np.zeros((0, n))
      m = con.shape[0]
      kkt = np.block([[a.T @ a, con.T], [con, np.zeros((m, m))]])
      sol = np.linalg.solve(kkt, np.concatenate([a.T @ r] + cons_rhs))
      want = sol[:n].reshape(n_steps, n_hidden)
      np.testing.assert_allclose(step[:, b], want, rtol=1e-10, atol=1e-12)


def test_parallel_adjoint_equals_the_sequential_loop():
  # tanh reads σ' from the states; sin (no closed form in h) recomputes the pre-activations.
  k = jax.random.split(jax.random.key(2), 4)
  w = _random(k[0], (4, 4), 0.5)
  u = _random(k[1], (6, 3, 4))
  h0 = _random(k[2], (3, 4), 0.5)
  g = _random(k[3], (6, 3, 4))
  mask = jnp.arange(6)[:, None] % jnp.array([1, 2, 3])[None] == 0  # holes, and step 1 masked
  mask = mask.at[0, 1].set(False)
  acts = [get_activation("tanh"), get_activation(jnp.sin)]

  @jax.jit
  def both(w, u, h0, g):
    out = []
    for act in acts:
      hs = loops.scan_recurrence(w, u, h0, mask, act, 1)
      out.append((adjoint.parallel_states_backward(act, w, u, h0, mask, hs, g),
                  loops.states_backward(act, 1, w, u, h0, mask, hs, g)))
    return out

  for got, want in both(w, u, h0, g):
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.slow
@hypothesis.settings(max_examples=3, deadline=None)
@hypothesis.given(n_steps=st.integers(1, 9), n_batch=st.integers(1, 3),
                  n_hidden=st.integers(1, 4), seed=st.integers(0, 100))
def test_quasi_deer_matches_the_scan_for_drawn_shapes(n_steps, n_batch, n_hidden, seed):
  act = get_activation("tanh")
  k = jax.random.split(jax.random.key(seed), 4)
  w = _random(k[0], (n_hidden, n_hidden), 0.6 / np.sqrt(n_hidden))
  u = _random(k[1], (n_steps, n_batch, n_hidden))
  h0 = _random(k[2], (n_batch, n_hidden), 0.5)
  mask = jax.random.bernoulli(k[3], 0.7, (n_steps, n_batch))
  hs, info = jax.jit(lambda w, u, h0, mask: newton.iterate(
      newton.quasi_deer_step, w, u, h0, mask, act, tol=1e-13, max_iter=n_steps + 2))(
          w, u, h0, mask)
  assert bool(info.converged) and int(info.iterations) <= n_steps + 1
  np.testing.assert_allclose(hs, loops.scan_recurrence(w, u, h0, mask, act, 1), rtol=1e-10,
                             atol=1e-13)
