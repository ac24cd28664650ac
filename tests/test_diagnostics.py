"""Gradient diagnostics: norms against jax.jacrev, the seed's bound as an inequality, Lanczos
against exact SVD, Lyapunov exponents of a linear RNN, the Pascanu conditions; and
scripts/experiments/gradient_study.py (its quick mode reproducible byte for byte, its agreement criterion,
its argument checks)."""
import functools
import json

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

import jrnn

RTOL = 1e-10


def make(seed, n_steps, n_hidden, n_in=3, *, radius=1.1, act="tanh", mask_p=0.0, xscale=1.0):
  k_p, k_x, k_m, k_h = jax.random.split(jax.random.key(seed), 4)
  params = jrnn.init_params(k_p, n_in, n_hidden, 2, scheme="spectral", spectral_radius=radius,
                            dtype=jnp.float64)
  params = params._replace(b_h=0.1 * jax.random.normal(k_h, (n_hidden,), jnp.float64))
  xs = xscale * jax.random.normal(k_x, (n_steps, n_in), jnp.float64)
  mask = jax.random.uniform(k_m, (n_steps,)) >= mask_p
  return params, xs, mask


def unrolled_all(params, xs, mask, act, k):
  """``h_k -> (h_k, ..., h_T)`` by a Python loop over the seed's step."""
  fn = jrnn.get_activation(act).fn

  def f(h):
    out = [h]
    for i in range(k + 1, xs.shape[0] + 1):
      h = jnp.where(mask[i - 1], fn(params.w_hh @ h + params.w_xh @ xs[i - 1] + params.b_h), h)
      out.append(h)
    return jnp.stack(out)
  return f


def traj_and_norms(params, xs, mask, act):
  @jax.jit
  def run(p, x, m):
    traj = jrnn.reference.trajectory(p, x, mask=m, activation=act)
    return traj, jrnn.diagnostics.jacobian_norms(traj)
  return run(params, xs, mask)


@pytest.mark.slow
@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), n_steps=st.integers(1, 6),
                  n_hidden=st.integers(1, 5), act=st.sampled_from(["tanh", "relu", "sigmoid"]),
                  mask_p=st.sampled_from([0.0, 0.4]))
def test_norms_equal_norms_of_jacrev(seed, n_steps, n_hidden, act, mask_p):
  # Data by NumPy (helpers.numpy_rnn): each example is a new shape, which JAX's random ops would
  # compile for.
  params, xs, mask = helpers.numpy_rnn(seed, n_steps, n_hidden, mask_p=mask_p)
  traj, norms = traj_and_norms(params, xs, mask, act)
  norms = np.asarray(norms)  # sliced below: NumPy does it without compiling
  assert norms.shape == (n_steps + 1, n_steps + 1)
  for k in range(n_steps + 1):
    jac = jax.jit(jax.jacrev(unrolled_all(params, xs, mask, act, k)))(traj.hs[k])
    np.testing.assert_allclose(norms[k:, k], np.linalg.norm(np.asarray(jac), ord=2, axis=(1, 2)),
                               rtol=1e-9, atol=1e-13)
    np.testing.assert_array_equal(norms[:k, k], 0)


@pytest.mark.slow
@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), n_steps=st.integers(1, 12),
                  n_hidden=st.integers(1, 8), radius=st.floats(0.2, 2.5),
                  xscale=st.sampled_from([0.1, 1.0, 3.0]),
                  act=st.sampled_from(["tanh", "relu", "sigmoid", "softplus"]),
                  mask_p=st.sampled_from([0.0, 0.4]))
def test_seed_bound_holds_for_every_pair(seed, n_steps, n_hidden, radius, xscale, act, mask_p):
  # Data by NumPy and both bounds in one compiled program: each example is a new shape, and
  # JAX's eager ops (random draws, the bounds' arithmetic) compile once per op per shape.
  params, xs, mask = helpers.numpy_rnn(seed, n_steps, n_hidden, radius=radius, mask_p=mask_p,
                                       xscale=xscale)
  traj, norms = traj_and_norms(params, xs, mask, act)
  sup, tight = jax.jit(lambda traj: (
      jrnn.diagnostics.seed_bound(traj, jrnn.get_activation(act).gamma),
      jrnn.diagnostics.seed_bound(traj)))(traj)  # tight: γ = max |σ'| along this trajectory
  norms, sup, tight = np.asarray(norms), np.asarray(sup), np.asarray(tight)
  lower = np.tril(np.ones_like(norms, bool))
  slack = 1 + 1e-12
  assert np.all(norms[lower] <= tight[lower] * slack + 1e-300)
  assert np.all(tight[lower] <= sup[lower] * slack)
  assert np.all(sup[~lower] == 0) and np.all(norms[~lower] == 0)


def test_seed_bound_values():
  params, xs, _ = make(1, 5, 4)
  mask = jnp.array([True, False, True, True, False])
  traj = jrnn.reference.trajectory(params, xs, mask=mask)
  bound = jrnn.diagnostics.seed_bound(traj, 0.5)
  c = np.linalg.norm(np.asarray(params.w_hh), 2) * 0.5
  valid = np.concatenate([[0], np.cumsum(np.asarray(mask))])
  for t in range(6):
    for k in range(t + 1):
      np.testing.assert_allclose(bound[t, k], c ** (valid[t] - valid[k]), rtol=RTOL)
  gains = np.abs(np.asarray(traj.gains))[np.asarray(mask)]
  np.testing.assert_allclose(jrnn.diagnostics.trajectory_gamma(traj), gains.max(), rtol=RTOL)
  with pytest.raises(ValueError, match="gamma must be a number or 'trajectory'"):
    jrnn.diagnostics.seed_bound(traj, "sup")


@pytest.mark.slow
def test_orthogonal_linear_norms_are_exact_powers_and_rate_is_recovered():
  # W_hh = s Q with Q orthogonal and σ = identity: every ∂h_t/∂h_k = s^{t-k} Q^{t-k}.
  s = 0.93
  q = jrnn.init_params(jax.random.key(2), 2, 6, 1, scheme="orthogonal", dtype=jnp.float64)
  params = q._replace(w_hh=s * q.w_hh)
  xs = jax.random.normal(jax.random.key(3), (15, 2), jnp.float64)
  traj = jrnn.reference.trajectory(params, xs, activation="identity")
  norms = jax.jit(jrnn.diagnostics.jacobian_norms)(traj)
  lag = np.subtract.outer(np.arange(16), np.arange(16))
  np.testing.assert_allclose(norms, np.where(lag >= 0, s ** np.maximum(lag, 0), 0), rtol=1e-10)
  np.testing.assert_allclose(norms, jrnn.diagnostics.seed_bound(traj, 1.0), rtol=1e-10)
  fit = jax.jit(jrnn.diagnostics.fit_rate)(jrnn.diagnostics.lag_profile(norms))
  np.testing.assert_allclose(fit.rate, s, rtol=1e-10)
  np.testing.assert_allclose(fit.log_intercept, 0, atol=1e-10)
  assert int(fit.num_lags) == 15


def test_lag_profile_matches_python_loop():
  rng = np.random.default_rng(0)
  norms = np.tril(rng.uniform(0.1, 3.0, size=(2, 7, 7)))
  norms[0, 5, 2] = 0.0  # a dead path: left out of the geometric mean
  prof = jax.jit(jrnn.diagnostics.lag_profile)(jnp.asarray(norms))
  for lag in range(7):
    vals = np.concatenate([np.diagonal(n, -lag) for n in norms])
    pos = vals[vals > 0]
    np.testing.assert_allclose(prof.geo_mean[lag], np.exp(np.mean(np.log(pos))), rtol=RTOL)
    np.testing.assert_allclose(prof.max[lag], vals.max(), rtol=RTOL)
    np.testing.assert_allclose(prof.min[lag], vals.min(), rtol=RTOL)
    assert prof.count[lag] == vals.size and prof.nonzero[lag] == pos.size
  with pytest.raises(ValueError, match=r"norms must have shape \(..., T\+1, T\+1\)"):
    jrnn.diagnostics.lag_profile(jnp.zeros((3, 4)))


def test_fit_rate_on_synthetic_geometric_profile():
  lags = np.arange(12)
  rng = np.random.default_rng(1)
  for rate in (0.5, 1.0, 1.7):
    norms = np.zeros((12, 12))
    for t in range(12):
      for k in range(t + 1):
        norms[t, k] = 2.0 * rate ** (t - k)
    fit = jrnn.diagnostics.fit_rate(jrnn.diagnostics.lag_profile(jnp.asarray(norms)), min_lag=2, max_lag=8)
    np.testing.assert_allclose(fit.rate, rate, rtol=1e-10)
    np.testing.assert_allclose(fit.log_intercept, np.log(2.0), rtol=1e-10)
    assert int(fit.num_lags) == 7
  del lags, rng


@pytest.mark.slow
def test_lanczos_exact_with_h_iterations_and_never_above():
  params, xs, _ = make(4, 12, 6, radius=1.3)
  traj, norms = traj_and_norms(params, xs, jnp.ones(12, bool), "tanh")
  est = jax.jit(functools.partial(jrnn.diagnostics.jacobian_norm_estimate, num_iters=6))(
      traj, 9, 2, key=jax.random.key(0))
  np.testing.assert_allclose(est.norm, norms[9, 2], rtol=1e-10)
  # traced (t, k), vmapped over pairs
  ts, ks = jnp.array([12, 5, 3]), jnp.array([0, 5, 1])
  one = functools.partial(jrnn.diagnostics.jacobian_norm_estimate, key=jax.random.key(1), num_iters=3)
  many = jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))(traj, ts, ks)
  assert np.all(many.norm <= norms[ts, ks] * (1 + 1e-10))
  np.testing.assert_allclose(many.norm[1], 1.0, rtol=1e-12)  # ∂h_5/∂h_5 = I


@pytest.mark.slow
def test_lag_estimates_close_to_exact_at_larger_h():
  params, xs, _ = make(5, 30, 24, radius=1.0)
  traj, norms = traj_and_norms(params, xs, jnp.ones(30, bool), "tanh")
  estimate = jax.jit(jrnn.diagnostics.lag_norm_estimates, static_argnames=("lag", "num_iters"))
  for lag in (1, 3, 10, 25):
    est = estimate(traj, lag=lag, key=jax.random.key(lag), num_iters=20 if lag == 1 else 10)
    exact = np.diagonal(np.asarray(norms), -lag)
    assert est.norm.shape == exact.shape == (31 - lag,)
    assert np.all(est.norm <= exact * (1 + 1e-10))
    np.testing.assert_allclose(est.norm, exact, rtol=1e-8)
    assert np.all(np.abs(est.norm - exact) <= est.error_bound + 1e-9 * exact)
  with pytest.raises(ValueError, match=r"lag must be a static int in \[0, T=30\], got 31"):
    jrnn.diagnostics.lag_norm_estimates(traj, 31, key=jax.random.key(0))


def _batch(n_seq, n_steps, n_hidden, mask_p):
  """``n_seq`` float64 trajectories of one layer, with masks, and each one's exact norms."""
  params, _, _ = make(8, n_steps, n_hidden, radius=1.2)
  k_x, k_m = jax.random.split(jax.random.key(9))
  xs = jax.random.normal(k_x, (n_seq, n_steps, 3), jnp.float64)
  masks = jax.random.uniform(k_m, (n_seq, n_steps)) >= mask_p
  trajs = jax.vmap(lambda x, m: jrnn.reference.trajectory(params, x, mask=m))(xs, masks)
  one = lambda b: jax.tree_util.tree_map(lambda a: a[b], trajs)
  batch = jrnn.reference.Trajectory(params.w_hh, trajs.hs, trajs.gains, trajs.mask)
  return batch, [one(b) for b in range(n_seq)]


@pytest.mark.slow
def test_end_lag_norms_equal_exact_svd_for_every_sequence_and_lag():
  batch, trajs = _batch(3, 11, 5, mask_p=0.2)
  lags = (4, 1, 11, 2, 7)  # any order, the full length included
  estimate = jax.jit(jrnn.diagnostics.end_lag_norm_estimates, static_argnames=("lags", "num_iters"))
  est = estimate(batch, lags, key=jax.random.key(0), num_iters=5)  # H = 5 iterations: exact
  assert est.norm.shape == est.error_bound.shape == (3, 5)
  exact = np.asarray(jax.jit(jax.vmap(jrnn.diagnostics.jacobian_norms))(batch._replace(
      w_hh=jnp.broadcast_to(batch.w_hh, (3, 5, 5)))))[:, 11]  # (B, T+1): ∂h_T/∂h_k
  np.testing.assert_allclose(est.norm, exact[:, [11 - k for k in lags]], rtol=RTOL)
  # Fewer iterations than H: an estimate from below.
  few = estimate(batch, (3,), key=jax.random.key(1), num_iters=2)
  assert np.all(few.norm[:, 0] <= exact[:, 8] * (1 + 1e-10))
  for bad in ((), (0,), (12,), (2.0,)):
    with pytest.raises(ValueError, match=r"lags must be static ints in \[1, T=11\]"):
      jrnn.diagnostics.end_lag_norm_estimates(batch, bad, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"one w_hh \(H, H\) and a batch of gains \(B, T, H\)"):
    jrnn.diagnostics.end_lag_norm_estimates(trajs[0], (1,), key=jax.random.key(0))


@pytest.mark.slow
def test_lag_loss_contributions_are_the_diagonals_of_loss_contributions():
  batch, trajs = _batch(3, 9, 4, mask_p=0.3)
  g = jax.random.normal(jax.random.key(3), (3, 9, 4), jnp.float64)
  lags = (9, 1, 3, 2, 6)
  sums = jax.jit(jrnn.diagnostics.lag_loss_contributions, static_argnames="lags")(batch, g, lags)
  assert sums.shape == (3, 5)
  contrib = jax.jit(jrnn.diagnostics.loss_contributions)
  for b, traj in enumerate(trajs):
    c = np.asarray(contrib(traj, g[b]))
    want = [sum(c[t, t - k] for t in range(k, 10)) for k in lags]
    np.testing.assert_allclose(sums[b], want, rtol=RTOL)
  with pytest.raises(ValueError, match=r"dloss_dh must have shape \(B, T, H\)=\(3, 9, 4\)"):
    jrnn.diagnostics.lag_loss_contributions(batch, g[:, 1:], lags)


@pytest.mark.slow
def test_loss_contributions_equal_grad_of_each_loss_term():
  params, xs, mask = make(6, 6, 4, mask_p=0.3)
  targets = jax.random.normal(jax.random.key(7), (6, 2), jnp.float64)
  traj = jrnn.reference.trajectory(params, xs, mask=mask)

  def summed(hs):
    return jrnn.squared_error(jrnn.readout(params.w_hy, params.b_y, hs), targets)

  g = jax.grad(summed)(traj.hs[1:])
  contrib = jax.jit(jrnn.diagnostics.loss_contributions)(traj, g)
  assert contrib.shape == (7, 7)
  np.testing.assert_array_equal(contrib[0], 0)
  for k in range(7):
    f = unrolled_all(params, xs, mask, "tanh", k)
    for t in range(max(k, 1), 7):
      loss_t = lambda h: jnp.sum((params.w_hy @ f(h)[t - k] + params.b_y - targets[t - 1]) ** 2)
      ref = jnp.linalg.norm(jax.grad(loss_t)(traj.hs[k]))
      np.testing.assert_allclose(contrib[t, k], ref, rtol=RTOL, atol=1e-14)
    np.testing.assert_array_equal(contrib[:k, k], 0)
  with pytest.raises(ValueError, match=r"dloss_dh must have shape \(T, H\)=\(6, 4\)"):
    jrnn.diagnostics.loss_contributions(traj, g[1:])


def test_weight_spectrum_matches_numpy():
  w = jax.random.normal(jax.random.key(8), (5, 5), jnp.float64)
  spec = jax.jit(jrnn.diagnostics.weight_spectrum)(w)
  np.testing.assert_allclose(spec.singular_values, np.linalg.svd(np.asarray(w))[1], rtol=RTOL)
  np.testing.assert_allclose(spec.spectral_norm, np.linalg.norm(np.asarray(w), 2), rtol=RTOL)
  np.testing.assert_allclose(spec.spectral_radius,
                             np.abs(np.linalg.eigvals(np.asarray(w))).max(), rtol=RTOL)
  np.testing.assert_allclose(np.sort_complex(np.asarray(spec.eigenvalues)),
                             np.sort_complex(np.linalg.eigvals(np.asarray(w))), rtol=1e-9)
  with pytest.raises(ValueError, match=r"w_hh must be square \(H, H\), got \(2, 3\)"):
    jrnn.diagnostics.weight_spectrum(jnp.zeros((2, 3)))
  with pytest.raises(TypeError, match="w_hh must have a floating dtype"):
    jrnn.diagnostics.weight_spectrum(jnp.zeros((2, 2), jnp.int32))


@pytest.mark.parametrize("act,gamma", [("tanh", 1.0), ("relu", 1.0), ("sigmoid", 0.25)])
@pytest.mark.parametrize("scale", [0.5, 1.5, 3.0, 5.0])
def test_pascanu_verdict_numbers(act, gamma, scale):
  q = jrnn.init_params(jax.random.key(9), 2, 4, 1, scheme="orthogonal", dtype=jnp.float64)
  w = q.w_hh * scale
  w = w.at[0].multiply(0.5)  # singular values scale and scale/2: radius < norm in general
  v = jrnn.diagnostics.pascanu_conditions(w, act)
  sv = np.linalg.svd(np.asarray(w))[1]
  np.testing.assert_allclose(v.sigma_max, sv[0], rtol=RTOL)
  np.testing.assert_allclose(v.gamma, gamma)
  np.testing.assert_allclose(v.threshold, 1 / gamma)
  np.testing.assert_allclose(v.eta, sv[0] * gamma, rtol=RTOL)
  np.testing.assert_allclose(v.spectral_radius, np.abs(np.linalg.eigvals(np.asarray(w))).max(),
                             rtol=RTOL)
  assert bool(v.vanishing_sufficient) == (sv[0] < 1 / gamma)
  assert bool(v.exploding_necessary) == (sv[0] > 1 / gamma)
  word = "vanishing" if sv[0] < 1 / gamma else "exploding"
  assert word in v.summary()


@pytest.mark.slow
def test_pascanu_vanishing_verdict_implies_measured_decay():
  q = jrnn.init_params(jax.random.key(10), 3, 5, 1, scheme="orthogonal", dtype=jnp.float64)
  params = q._replace(w_hh=3.5 * q.w_hh)  # σ_max = 3.5 < 1/γ = 4 for sigmoid
  verdict = jrnn.diagnostics.pascanu_conditions(params.w_hh, "sigmoid")
  assert bool(verdict.vanishing_sufficient)
  xs = jax.random.normal(jax.random.key(11), (10, 3), jnp.float64)
  norms = jrnn.diagnostics.jacobian_norms(jrnn.reference.trajectory(params, xs, activation="sigmoid"))
  lag = np.subtract.outer(np.arange(11), np.arange(11))
  lower = lag >= 0
  assert np.all(norms[lower] <= float(verdict.eta) ** lag[lower] * (1 + 1e-12))


def test_pascanu_bad_inputs():
  with pytest.raises(ValueError, match="no known gamma"):
    jrnn.diagnostics.pascanu_conditions(jnp.eye(2), lambda a: jnp.sin(a))
  v = jrnn.diagnostics.pascanu_conditions(jnp.eye(2), lambda a: jnp.sin(a), gamma=1.0)
  assert not bool(v.vanishing_sufficient) and not bool(v.exploding_necessary)
  assert "boundary" in v.summary()


def test_lyapunov_of_linear_rnn_is_log_eigenvalue_moduli():
  rng = np.random.default_rng(0)
  lam = np.array([1.1, -0.9, 0.7, 0.5, -0.3])
  s = rng.normal(size=(5, 5))
  w = s @ np.diag(lam) @ np.linalg.inv(s)
  params = jrnn.RNNParams(jnp.asarray(rng.normal(size=(5, 2))), jnp.asarray(w), jnp.zeros(5),
                          jnp.zeros((1, 5)), jnp.zeros(1))
  xs = jnp.asarray(rng.normal(size=(400, 2)))
  traj = jrnn.reference.trajectory(params, xs, activation="identity")
  exps = jax.jit(jrnn.diagnostics.lyapunov_exponents, static_argnames=("burn_in", "num_exponents"))
  np.testing.assert_allclose(exps(traj, burn_in=50), np.sort(np.log(np.abs(lam)))[::-1],
                             atol=1e-6)
  np.testing.assert_allclose(exps(traj, burn_in=50, num_exponents=2), np.log([1.1, 0.9]),
                             atol=1e-6)
  # a generic W_hh (complex eigenvalue pairs converge more slowly)
  w = rng.normal(size=(5, 5)) / np.sqrt(5)
  traj = jrnn.reference.trajectory(params._replace(w_hh=jnp.asarray(w)), xs, activation="identity")
  np.testing.assert_allclose(exps(traj, burn_in=50),
                             np.sort(np.log(np.abs(np.linalg.eigvals(w))))[::-1], atol=2e-3)


@pytest.mark.slow
def test_top_lyapunov_exponent_of_a_diagonal_w_hh_is_its_largest_entry():
  """W_hh = diag(d) leaves every coordinate axis invariant: a start on e_1 would only ever see
  unit 1 (log|d_1|). The DCT start mixes every unit, so one exponent is the largest."""
  d = np.array([0.5, -0.6, 0.95, 0.7, 0.8, -0.4])
  params = jrnn.RNNParams(jnp.ones((6, 1)), jnp.asarray(np.diag(d)), jnp.zeros(6),
                          jnp.zeros((1, 6)), jnp.zeros(1))
  traj = jrnn.reference.trajectory(params, jnp.zeros((200, 1)), activation="identity")
  top = jrnn.diagnostics.lyapunov_exponents(traj, num_exponents=1, burn_in=20)
  np.testing.assert_allclose(top, [np.log(0.95)], atol=1e-3)
  two = jrnn.diagnostics.lyapunov_exponents(traj, num_exponents=2, burn_in=20)
  np.testing.assert_allclose(two, np.log([0.95, 0.8]), atol=1e-2)
  # r·I: every exponent is log r, whichever start.
  traj = jrnn.reference.trajectory(params._replace(w_hh=0.9 * jnp.eye(6)), jnp.zeros((50, 1)),
                                   activation="identity")
  np.testing.assert_allclose(jrnn.diagnostics.lyapunov_exponents(traj, num_exponents=1),
                             [np.log(0.9)], rtol=1e-10)


def test_lyapunov_sum_is_mean_log_det_and_mask_skips_steps():
  params, xs, mask = make(12, 40, 4, radius=1.4, mask_p=0.3)
  traj = jrnn.reference.trajectory(params, xs, mask=mask)
  exps = jrnn.diagnostics.lyapunov_exponents(traj, burn_in=3)
  js = np.asarray(jrnn.reference.step_jacobians(traj))
  use = np.asarray(mask) & (np.arange(1, 41) > 3)
  logdet = np.mean([np.log(abs(np.linalg.det(j))) for j in js[use]])
  np.testing.assert_allclose(np.sum(exps), logdet, rtol=1e-10)
  assert np.all(np.diff(np.asarray(exps)) <= 0)
  with pytest.raises(ValueError, match=r"num_exponents must lie in \[1, H=4\], got 5"):
    jrnn.diagnostics.lyapunov_exponents(traj, num_exponents=5)
  with pytest.raises(ValueError, match=r"burn_in must lie in \[0, T=40\), got 40"):
    jrnn.diagnostics.lyapunov_exponents(traj, burn_in=40)




@pytest.mark.slow
def test_gradient_study_quick_mode_is_reproducible(tmp_path, capsys):
  """--quick twice: the same results.json, byte for byte; draws summarised; --out refused."""
  study = helpers.load_script("gradient_study")
  texts = []
  for name, extra in (("a", []), ("b", ["--no-plot"])):
    study.main(["--out", str(tmp_path / name), "--quick"] + extra)
    texts.append((tmp_path / name / "results.json").read_text())
  helpers.assert_same_results(*texts)
  results = json.loads(texts[0])
  assert results["command"] == "python scripts/experiments/gradient_study.py --quick"
  assert results["git"]["commit"] and results["versions"]["jax"]
  assert list(results["data_sha256"]) == ["inputs"] and results["seeds"] == [0]
  assert "out" not in results["config"] and results["config"]["draws"] == 2
  settings = results["settings"]
  assert len(settings) == 2 * 2 * len(results["config"]["families"])
  for s in settings:
    assert len(s["lag_profile"]["geo_mean"]) == 7  # draw 0 keeps the full record
    assert len(s["draws"]["rate"]) == len(s["draws"]["lyapunov_growth_factor"]) == 2
    over = s["over_draws"]
    assert over["rate"]["min"] <= over["rate"]["median"] <= over["rate"]["max"]
    assert over["agree_all"] == all(s["draws"]["agree"])
    assert over["bound_holds"] == 2  # the seed's bound holds on every draw
  # W_hh = r·I: every draw is the same matrix, and the full QR iteration finds the fastest unit.
  irnn = [s for s in settings if s["family"] == "identity" and s["activation"] == "relu"]
  assert [s["over_draws"]["agree_all"] for s in irnn] == [True, True]
  timing = json.loads((tmp_path / "a" / "timing.json").read_text())
  assert "--out" in timing["command"] and timing["wall_s"] > 0
  assert "| identity | relu | 1.5 |" in (tmp_path / "a" / "results.md").read_text()
  for png in ("norm_vs_lag.png", "heatmaps.png", "rates.png"):
    assert (tmp_path / "a" / png).stat().st_size > 0
  assert not (tmp_path / "b" / "rates.png").exists()
  capsys.readouterr()
  with pytest.raises(SystemExit):  # a user's results are not replaced without --overwrite
    study.main(["--out", str(tmp_path / "a"), "--quick"])
  assert "already holds results.json" in capsys.readouterr().err


@pytest.mark.parametrize("rate, growth, expected", [
    (0.5, 0.5, True), (1.0, 1.049, True), (1.0, 1.051, False), (1.0, 0.949, False),
    (0.5, 0.0, False),  # a product that vanished exactly: exp(λ₁) = 0
    (float("nan"), 0.5, False), (0.5, float("inf"), False)])
def test_gradient_study_agreement_criterion(rate, growth, expected):
  study = helpers.load_script("gradient_study")
  assert study.agrees(rate, growth) is expected


@pytest.mark.parametrize("argv, fragment", [
    (["--draws", "0"], "--draws must be >= 1, got 0"),
    (["--steps", "1"], "--steps must be >= 2"),
    (["--hidden", "0"], "--hidden must be >= 1, got 0")])
def test_gradient_study_refuses_bad_sizes(tmp_path, capsys, argv, fragment):
  study = helpers.load_script("gradient_study")
  with pytest.raises(SystemExit):
    study.parse(["--out", str(tmp_path)] + argv)
  assert fragment in capsys.readouterr().err
