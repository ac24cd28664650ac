"""Per-step Jacobians, their products and matrix-free products against jax.jacrev of the
unrolled map, in float64."""
import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

import jrnn

RTOL = 1e-10
ACTS = ("tanh", "relu", "sigmoid", "identity", "leaky_relu", "softplus")
SETTINGS = dict(max_examples=15, deadline=None)


def make(seed, n_steps, n_hidden, n_in=3, *, radius=1.1, act="tanh", mask_p=0.0):
  k_p, k_x, k_m, k_h = jax.random.split(jax.random.key(seed), 4)
  params = jrnn.init_params(k_p, n_in, n_hidden, 2, scheme="spectral", spectral_radius=radius,
                            dtype=jnp.float64)
  params = params._replace(b_h=0.1 * jax.random.normal(k_h, (n_hidden,), jnp.float64))
  xs = jax.random.normal(k_x, (n_steps, n_in), jnp.float64)
  mask = jax.random.uniform(k_m, (n_steps,)) >= mask_p
  return params, xs, mask


def unrolled(params, xs, mask, act, k, t):
  """``h_k -> h_t`` by a Python loop over the seed's step (the reference)."""
  return lambda h: unrolled_all(params, xs, mask, act, k)(h)[t - k]


def unrolled_all(params, xs, mask, act, k):
  """``h_k -> (h_k, h_{k+1}, ..., h_T)`` by a Python loop, stacked."""
  fn = jrnn.get_activation(act).fn

  def f(h):
    out = [h]
    for i in range(k + 1, xs.shape[0] + 1):
      new = fn(params.w_hh @ h + params.w_xh @ xs[i - 1] + params.b_h)
      h = jnp.where(mask[i - 1], new, h)
      out.append(h)
    return jnp.stack(out)
  return f


def products(params, xs, mask, act):
  return jax.jit(lambda p, x, m: jrnn.reference.jacobian_products(
      jrnn.reference.trajectory(p, x, mask=m, activation=act)))(params, xs, mask)


@pytest.mark.slow
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("jit", [False, True])
def test_step_jacobian_is_diag_gain_times_w_hh(act, jit):
  params, xs, _ = make(0, 5, 4, act=act)
  traj = jrnn.reference.trajectory(params, xs, activation=act)
  js = (jax.jit(jrnn.reference.step_jacobians) if jit else jrnn.reference.step_jacobians)(traj)
  assert js.shape == (5, 4, 4)
  for t in range(1, 6):
    one_step = lambda h: jrnn.step(params, h, xs[t - 1], activation=act)[0]
    ref = jax.jacrev(one_step)(traj.hs[t - 1])
    np.testing.assert_allclose(js[t - 1], ref, rtol=RTOL, atol=1e-14)
    # the column convention, written out: diag(σ'(a_t)) W_hh
    a = params.w_hh @ traj.hs[t - 1] + params.w_xh @ xs[t - 1] + params.b_h
    gain = jax.vmap(jax.grad(jrnn.get_activation(act).fn))(a)
    np.testing.assert_allclose(js[t - 1], jnp.diag(gain) @ params.w_hh, rtol=RTOL, atol=1e-14)


@pytest.mark.slow
def test_trajectory_states_match_forward():
  params, xs, mask = make(1, 7, 5, mask_p=0.3)
  traj = jrnn.reference.trajectory(params, xs, mask=mask)
  out = jrnn.forward(params, xs, mask=mask)
  np.testing.assert_allclose(traj.hs[1:], out.hs, rtol=RTOL)
  np.testing.assert_array_equal(traj.hs[0], np.zeros(5))
  assert traj.num_steps == 7


def test_masked_step_jacobian_is_identity():
  params, xs, _ = make(2, 4, 3)
  mask = jnp.array([True, False, True, False])
  js = jrnn.reference.step_jacobians(jrnn.reference.trajectory(params, xs, mask=mask))
  np.testing.assert_array_equal(js[1], np.eye(3))
  np.testing.assert_array_equal(js[3], np.eye(3))
  assert np.abs(js[0] - np.eye(3)).max() > 1e-3


@pytest.mark.slow
@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), n_steps=st.integers(1, 5),
                  n_hidden=st.integers(1, 4), act=st.sampled_from(ACTS),
                  mask_p=st.sampled_from([0.0, 0.4]))
def test_products_equal_jacrev_of_unrolled_map(seed, n_steps, n_hidden, act, mask_p):
  # Data by NumPy (helpers.numpy_rnn): each example is a new shape, which JAX's random ops would
  # compile for; the products as a NumPy array, sliced below without compiling.
  params, xs, mask = helpers.numpy_rnn(seed, n_steps, n_hidden, mask_p=mask_p)
  traj = jax.jit(functools.partial(jrnn.reference.trajectory, activation=act))(params, xs, mask=mask)
  prods = np.asarray(products(params, xs, mask, act))
  assert prods.shape == (n_steps + 1, n_steps + 1, n_hidden, n_hidden)
  for k in range(n_steps + 1):
    np.testing.assert_array_equal(prods[:k, k], 0)
    ref = jax.jit(jax.jacrev(unrolled_all(params, xs, mask, act, k)))(traj.hs[k])  # (T+1-k, H, H)
    np.testing.assert_allclose(prods[k:, k], ref, rtol=RTOL, atol=1e-13)


def test_products_under_jit_and_h0():
  params, xs, mask = make(3, 5, 3, mask_p=0.3)
  h0 = jnp.array([0.3, -0.2, 0.5])
  traj = jax.jit(functools.partial(jrnn.reference.trajectory, activation="tanh"))(params, xs, h0=h0,
                                                                        mask=mask)
  np.testing.assert_array_equal(traj.hs[0], h0)
  prods = jax.jit(jrnn.reference.jacobian_products)(traj)
  ref = jax.jacrev(unrolled(params, xs, mask, "tanh", 1, 5))(traj.hs[1])
  np.testing.assert_allclose(prods[5, 1], ref, rtol=RTOL, atol=1e-14)


@pytest.mark.slow
@hypothesis.settings(**SETTINGS)
@hypothesis.given(seed=st.integers(0, 2**16), n_steps=st.integers(1, 7),
                  n_hidden=st.integers(1, 6), act=st.sampled_from(ACTS),
                  mask_p=st.sampled_from([0.0, 0.4]))
def test_matrix_free_products_equal_explicit(seed, n_steps, n_hidden, act, mask_p):
  # Data by NumPy (helpers.numpy_rnn, and v): each example is a new shape, which JAX's random ops
  # would compile for.
  params, xs, mask = helpers.numpy_rnn(seed, n_steps, n_hidden, mask_p=mask_p)
  prods = np.asarray(products(params, xs, mask, act))
  v = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(n_hidden))

  @jax.jit
  def both(p, x, m, v):
    traj = jrnn.reference.trajectory(p, x, mask=m, activation=act)
    steps = jnp.arange(n_steps + 1)
    return (jax.vmap(jrnn.reference.jacobian_jvp, in_axes=(None, 0, None))(traj, steps, v),
            jax.vmap(jrnn.reference.jacobian_vjp, in_axes=(None, 0, None))(traj, steps, v))

  jvps, vjps = (np.asarray(a) for a in both(params, xs, mask, v))
  v_np = np.asarray(v)  # the explicit references by NumPy: nothing to compile per shape
  np.testing.assert_allclose(jvps, np.einsum("tkij,j->kti", prods, v_np), rtol=RTOL, atol=1e-13)
  np.testing.assert_allclose(vjps, np.einsum("i,tkij->tkj", v_np, prods), rtol=RTOL, atol=1e-13)
  # and eagerly, with concrete indices
  traj = jrnn.reference.trajectory(params, xs, mask=mask, activation=act)
  np.testing.assert_allclose(jrnn.reference.jacobian_jvp(traj, n_steps // 2, v), jvps[n_steps // 2],
                             rtol=RTOL, atol=1e-13)
  np.testing.assert_allclose(jrnn.reference.jacobian_vjp(traj, n_steps, v), vjps[n_steps],
                             rtol=RTOL, atol=1e-13)


def test_matrix_free_products_with_traced_indices():
  params, xs, mask = make(4, 6, 4, mask_p=0.3)
  traj = jrnn.reference.trajectory(params, xs, mask=mask)
  prods = jrnn.reference.jacobian_products(traj)
  v = jnp.arange(1.0, 5.0)
  jvps = jax.jit(jax.vmap(jrnn.reference.jacobian_jvp, in_axes=(None, 0, None)))(traj, jnp.arange(7), v)
  vjps = jax.jit(jax.vmap(jrnn.reference.jacobian_vjp, in_axes=(None, 0, None)))(traj, jnp.arange(7), v)
  np.testing.assert_allclose(jvps, jnp.einsum("tkij,j->kti", prods, v), rtol=RTOL, atol=1e-13)
  np.testing.assert_allclose(vjps, jnp.einsum("i,tkij->tkj", v, prods), rtol=RTOL, atol=1e-13)


@pytest.mark.slow
def test_matrix_free_products_agree_with_jax_jvp_vjp_at_larger_h():
  params, xs, mask = make(5, 9, 40, mask_p=0.2)
  traj = jrnn.reference.trajectory(params, xs, mask=mask)
  f = unrolled(params, xs, mask, "tanh", 2, 8)
  v = jax.random.normal(jax.random.key(6), (40,), jnp.float64)
  _, tangent = jax.jvp(f, (traj.hs[2],), (v,))
  np.testing.assert_allclose(jrnn.reference.jacobian_jvp(traj, 2, v)[8], tangent, rtol=RTOL, atol=1e-13)
  _, pullback = jax.vjp(f, traj.hs[2])
  np.testing.assert_allclose(jrnn.reference.jacobian_vjp(traj, 8, v)[2], pullback(v)[0], rtol=RTOL,
                             atol=1e-13)


@pytest.mark.slow
def test_batched_by_vmap():
  params, _, _ = make(7, 4, 3)
  xs = jax.random.normal(jax.random.key(8), (4, 2, 3), jnp.float64)  # (T, B, I)
  batched = jax.vmap(lambda x: jrnn.reference.jacobian_products(jrnn.reference.trajectory(params, x)),
                     in_axes=1)(xs)
  for b in range(2):
    one = jrnn.reference.jacobian_products(jrnn.reference.trajectory(params, xs[:, b]))
    np.testing.assert_allclose(batched[b], one, rtol=RTOL, atol=1e-15)


def test_layer_params_accepted():
  params, xs, _ = make(9, 3, 2)
  a = jrnn.reference.jacobian_products(jrnn.reference.trajectory(params.layer, xs))
  b = jrnn.reference.jacobian_products(jrnn.reference.trajectory(params, xs))
  np.testing.assert_array_equal(a, b)


def test_bad_inputs():
  params, xs, mask = make(10, 4, 3)
  with pytest.raises(TypeError, match="params must be RNNParams or LayerParams"):
    jrnn.reference.trajectory((params.w_xh, params.w_hh), xs)
  with pytest.raises(ValueError, match=r"xs must have shape \(T, I\)=\(\?, 3\), got \(4, 2\)"):
    jrnn.reference.trajectory(params, xs[:, :2])
  with pytest.raises(ValueError, match=r"xs must have shape \(T, I\)=\(\?, 3\), got \(4, 1, 3\)"):
    jrnn.reference.trajectory(params, xs[:, None])
  with pytest.raises(TypeError, match="xs has dtype float32"):
    jrnn.reference.trajectory(params, xs.astype(jnp.float32))
  with pytest.raises(ValueError, match=r"mask must have shape \(T,\)=\(4,\), got \(3,\)"):
    jrnn.reference.trajectory(params, xs, mask=mask[:3])
  with pytest.raises(ValueError, match=r"h0 must have shape \(H,\)=\(3,\), got \(2,\)"):
    jrnn.reference.trajectory(params, xs, h0=jnp.zeros(2))
  traj = jrnn.reference.trajectory(params, xs)
  with pytest.raises(ValueError, match=r"k must lie in \[0, T=4\], got 5"):
    jrnn.reference.jacobian_jvp(traj, 5, jnp.zeros(3))
  with pytest.raises(ValueError, match=r"t must lie in \[0, T=4\], got -1"):
    jrnn.reference.jacobian_vjp(traj, -1, jnp.zeros(3))
  with pytest.raises(TypeError, match="k must be an integer scalar"):
    jrnn.reference.jacobian_jvp(traj, 1.5, jnp.zeros(3))
  with pytest.raises(ValueError, match=r"v must have shape \(H,\)=\(3,\), got \(4,\)"):
    jrnn.reference.jacobian_jvp(traj, 1, jnp.zeros(4))
  with pytest.raises(ValueError, match=r"u must have shape \(H,\)=\(3,\), got \(3, 1\)"):
    jrnn.reference.jacobian_vjp(traj, 1, jnp.zeros((3, 1)))
  with pytest.raises(TypeError, match="traj must be a Trajectory"):
    jrnn.reference.jacobian_products(tuple(traj))
