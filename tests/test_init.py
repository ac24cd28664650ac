"""Every init scheme draws from the law its docstring states, in float32 and float64."""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

DTYPES = [jnp.float32, jnp.float64]
# Large enough that a sample statistic of the ~4k entries lands within a few percent.
I, H, O = 48, 64, 40


def _tol(dtype):
  return 1e-5 if dtype == jnp.float32 else 1e-12


def _init(scheme, dtype, **kw):
  return jrnn.init_params(jax.random.key(7), I, H, O, scheme=scheme, dtype=dtype, **kw)


def _check_layout(p, dtype):
  assert p.w_xh.shape == (H, I) and p.w_hh.shape == (H, H) and p.b_h.shape == (H,)
  assert p.w_hy.shape == (O, H) and p.b_y.shape == (O,) and p.h0 is None
  assert all(a.dtype == dtype for a in jax.tree.leaves(p))


def _check_uniform(w, bound):
  """Entries in ``[-bound, bound]``, filling it (max near the bound), variance ``bound²/3``."""
  w = np.asarray(w, np.float64)
  assert np.max(np.abs(w)) <= bound * (1 + 1e-6)
  assert np.max(np.abs(w)) > 0.95 * bound
  np.testing.assert_allclose(np.var(w), bound ** 2 / 3, rtol=0.12)
  assert abs(np.mean(w)) < 0.1 * bound


def _check_normal_std(w, std, rtol=0.08):
  w = np.asarray(w, np.float64)
  np.testing.assert_allclose(np.std(w), std, rtol=rtol)
  assert abs(np.mean(w)) < 0.1 * std


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_scheme_is_normal_times_scale(dtype):
  p = _init("seed", dtype)
  _check_layout(p, dtype)
  for w in (p.w_xh, p.w_hh, p.w_hy):
    _check_normal_std(w, 0.01)
  np.testing.assert_array_equal(p.b_h, 0)
  np.testing.assert_array_equal(p.b_y, 0)
  _check_normal_std(_init("seed", dtype, scale=0.5).w_hh, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_scheme_is_uniform_one_over_sqrt_hidden(dtype):
  p = _init("pytorch", dtype)
  _check_layout(p, dtype)
  bound = 1 / math.sqrt(H)
  for w in (p.w_xh, p.w_hh, p.w_hy):
    _check_uniform(w, bound)
  # torch.nn.RNN draws its biases from the same law; torch.nn.Linear(H, O) its readout bias.
  for b in (p.b_h, p.b_y):
    assert np.max(np.abs(b)) <= bound and np.std(b) > 0.3 * bound


@pytest.mark.parametrize("scheme", ["glorot", "xavier"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_glorot_scheme_bound_is_sqrt_six_over_fans(scheme, dtype):
  p = _init(scheme, dtype)
  _check_layout(p, dtype)
  for w in (p.w_xh, p.w_hh, p.w_hy):
    fan_out, fan_in = w.shape
    _check_uniform(w, math.sqrt(6 / (fan_in + fan_out)))
  np.testing.assert_array_equal(p.b_h, 0)


@pytest.mark.parametrize("scale", [None, 0.9])
@pytest.mark.parametrize("dtype", DTYPES)
def test_orthogonal_scheme_has_all_singular_values_equal_to_scale(scale, dtype):
  p = _init("orthogonal", dtype, scale=scale)
  _check_layout(p, dtype)
  s = 1.0 if scale is None else scale
  w = np.asarray(p.w_hh, np.float64)
  np.testing.assert_allclose(w.T @ w, s ** 2 * np.eye(H), atol=50 * _tol(dtype))
  np.testing.assert_allclose(w @ w.T, s ** 2 * np.eye(H), atol=50 * _tol(dtype))
  _check_uniform(p.w_xh, math.sqrt(6 / (H + I)))
  # Different keys give different matrices (a random rotation, not a fixed one).
  other = jrnn.init_params(jax.random.key(8), I, H, O, scheme="orthogonal", dtype=dtype)
  assert not np.allclose(other.w_hh, p.w_hh)


@pytest.mark.parametrize("scale", [None, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_scheme_is_the_irnn(scale, dtype):
  p = _init("identity", dtype, scale=scale)
  _check_layout(p, dtype)
  s = 1.0 if scale is None else scale
  np.testing.assert_array_equal(p.w_hh, s * np.eye(H))
  _check_normal_std(p.w_xh, 0.001)
  _check_normal_std(p.w_hy, 0.001)
  np.testing.assert_array_equal(p.b_h, 0)


@pytest.mark.parametrize("target", [None, 0.7, 1.3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_spectral_scheme_hits_the_target_radius(target, dtype):
  p = _init("spectral", dtype, spectral_radius=target)
  _check_layout(p, dtype)
  want = 1.0 if target is None else target
  radius = np.max(np.abs(np.linalg.eigvals(np.asarray(p.w_hh, np.float64))))
  np.testing.assert_allclose(radius, want, rtol=20 * _tol(dtype))
  np.testing.assert_allclose(jrnn.spectral_radius(p.w_hh), want, rtol=20 * _tol(dtype))


def test_spectral_radius_of_known_matrices():
  # A rotation by θ scaled by r has eigenvalues r·e^{±iθ}: radius r, though it is not symmetric.
  theta, r = 0.3, 1.7
  rot = r * jnp.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
  np.testing.assert_allclose(jrnn.spectral_radius(rot), r, rtol=1e-12)
  # A nilpotent matrix has radius 0 though its norm is not.
  np.testing.assert_allclose(jrnn.spectral_radius(jnp.array([[0.0, 5.0], [0.0, 0.0]])), 0,
                             atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", jrnn.SCHEMES)
def test_every_scheme_is_pure_and_jittable(scheme):
  init = functools.partial(jrnn.init_params, n_in=3, n_hidden=4, n_out=2, scheme=scheme,
                           dtype=jnp.float64)
  jitted = jax.jit(init)
  a = init(jax.random.key(1))
  b = jitted(jax.random.key(1))
  chex.assert_trees_all_close(a, b, rtol=1e-12, atol=1e-15)
  # The key is the only source of randomness: same key, same draw; another key, another.
  again = jitted(jax.random.key(1))
  chex.assert_trees_all_equal(b, again)
  assert not np.allclose(jitted(jax.random.key(2)).w_xh, b.w_xh)
  # Legacy uint32 keys work too.
  assert jitted(jax.random.PRNGKey(1)).w_hh.shape == (4, 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_learn_h0_adds_a_zero_state(dtype):
  p = jrnn.init_params(jax.random.key(0), 3, 4, 2, learn_h0=True, dtype=dtype)
  assert p.h0.shape == (4,) and p.h0.dtype == dtype
  np.testing.assert_array_equal(p.h0, 0)
  layer = jrnn.init_layer(jax.random.key(0), 3, 4, learn_h0=True, dtype=dtype)
  assert isinstance(layer, jrnn.LayerParams) and layer.h0.shape == (4,)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_init_stacked_shapes(bidirectional):
  d = 2 if bidirectional else 1
  p = jrnn.init_stacked(jax.random.key(0), 3, 4, 2, num_layers=3, bidirectional=bidirectional,
                        scheme="pytorch", dtype=jnp.float64)
  assert p.num_layers == 3 and p.num_directions == d and p.hidden_size == 4
  for l, layer in enumerate(p.layers):
    assert len(layer) == d
    for q in layer:
      assert q.w_xh.shape == (4, 3 if l == 0 else d * 4) and q.w_hh.shape == (4, 4)
  assert p.w_hy.shape == (2, d * 4) and p.b_y.shape == (2,)
  # Every layer and direction draws its own weights.
  whh = [q.w_hh for layer in p.layers for q in layer]
  assert all(not np.allclose(whh[0], w) for w in whh[1:])
  bare = jrnn.init_stacked(jax.random.key(0), 3, 4, num_layers=2)
  assert bare.w_hy is None and bare.b_y is None


def test_init_stacked_pytorch_readout_bound_uses_the_readout_fan_in():
  p = jrnn.init_stacked(jax.random.key(0), 3, 32, 200, bidirectional=True, scheme="pytorch",
                        dtype=jnp.float64)
  _check_uniform(p.w_hy, 1 / math.sqrt(64))
