"""The seed document's NumPy ``SimpleRNN`` example, reproduced by jrnn.

The reference below is the seed's algorithm written out again in NumPy (column vectors, a
Python loop over time, ``np.random.seed(42)`` and the same order of draws), so the weights and
inputs are exactly the ones the seed prints.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn


def _seed_example():
  """Weights, inputs and the seed's printed ``hs``/``ys``, computed the seed's way."""
  rng = np.random.RandomState(42)  # the state np.random.seed(42) gives the global generator
  n_in, n_hidden, n_out = 3, 5, 2
  w_xh = rng.randn(n_hidden, n_in) * 0.01
  w_hh = rng.randn(n_hidden, n_hidden) * 0.01
  w_hy = rng.randn(n_out, n_hidden) * 0.01
  b_h = np.zeros((n_hidden, 1))
  b_y = np.zeros((n_out, 1))
  inputs = [rng.randn(n_in, 1) for _ in range(4)]
  h = np.zeros((n_hidden, 1))
  hs, ys = [], []
  for x_t in inputs:
    h = np.tanh(np.dot(w_xh, x_t) + np.dot(w_hh, h) + b_h)
    hs.append(h)
    ys.append(np.dot(w_hy, h) + b_y)
  weights = dict(w_xh=w_xh, w_hh=w_hh, b_h=b_h[:, 0], w_hy=w_hy, b_y=b_y[:, 0])
  return weights, np.stack([x[:, 0] for x in inputs]), np.stack(
      [h[:, 0] for h in hs]), np.stack([y[:, 0] for y in ys])


def test_global_seed_matches_the_reference_generator():
  # The reference draws from a RandomState(42); the seed calls np.random.seed(42) and draws from
  # the global generator. Check that the two agree, so the reference has the seed's weights.
  np.random.seed(42)
  first = np.random.randn(5, 3) * 0.01
  weights, _, _, _ = _seed_example()
  np.testing.assert_array_equal(first, weights["w_xh"])


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 1e-6)])
@pytest.mark.parametrize("grad", ["hand", "autodiff"])
@pytest.mark.parametrize("use_jit", [False, True])
def test_forward_reproduces_the_seed_example(dtype, tol, grad, use_jit):
  weights, xs, hs_ref, ys_ref = _seed_example()
  params = jrnn.RNNParams(**{k: jnp.asarray(v, dtype) for k, v in weights.items()})
  fwd = functools.partial(jrnn.forward, grad=grad)
  if use_jit:
    fwd = jax.jit(fwd)
  out = fwd(params, jnp.asarray(xs, dtype))
  assert out.hs.shape == (4, 5) and out.ys.shape == (4, 2) and out.h_last.shape == (5,)
  assert out.hs.dtype == dtype
  # The states are O(1e-2), so compare relative to their size as well as absolutely.
  np.testing.assert_allclose(out.hs, hs_ref, rtol=tol * 100, atol=tol)
  np.testing.assert_allclose(out.ys, ys_ref, rtol=tol * 100, atol=tol)
  np.testing.assert_allclose(out.h_last, hs_ref[-1], rtol=tol * 100, atol=tol)


def test_step_in_a_python_loop_reproduces_the_seed_example():
  weights, xs, hs_ref, ys_ref = _seed_example()
  params = jrnn.RNNParams(**{k: jnp.asarray(v) for k, v in weights.items()})
  h = jnp.zeros(5)
  for t in range(4):
    h, y = jrnn.step(params, h, jnp.asarray(xs[t]))
    np.testing.assert_allclose(h, hs_ref[t], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(y, ys_ref[t], rtol=1e-12, atol=1e-15)


def test_seed_init_scheme_has_the_seed_scale_and_zero_biases():
  # The seed's SimpleRNN draws N(0, 1) * 0.01 and zero biases; scheme="seed" is that law.
  params = jrnn.init_params(jax.random.key(0), 3, 5, 2, scheme="seed", dtype=jnp.float64)
  assert params.w_xh.shape == (5, 3) and params.w_hh.shape == (5, 5)
  assert params.w_hy.shape == (2, 5)
  np.testing.assert_array_equal(params.b_h, 0)
  np.testing.assert_array_equal(params.b_y, 0)
  assert 0 < float(jnp.max(jnp.abs(params.w_hh))) < 0.06  # six standard deviations
