"""Gradient clipping against its formulas and against optax."""
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn


def grads(seed, scale):
  ks = jax.random.split(jax.random.key(seed), 3)
  return {"w": scale * jax.random.normal(ks[0], (3, 4), jnp.float64),
          "b": scale * jax.random.normal(ks[1], (4,), jnp.float64),
          "nested": (scale * jax.random.normal(ks[2], (2,), jnp.float64),)}


def flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


@pytest.mark.slow
@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3),
                  threshold=st.floats(0.1, 10.0))
def test_global_norm_clipping_formula_and_optax(seed, scale, threshold):
  g = grads(seed, scale)
  norm = np.linalg.norm(flat(g))
  np.testing.assert_allclose(jrnn.training.global_norm(g), norm, rtol=1e-12)
  clipped, reported = jrnn.training.clip_tree_by_global_norm(g, threshold)
  np.testing.assert_allclose(reported, norm, rtol=1e-12)
  expected = flat(g) * (threshold / norm if norm >= threshold else 1.0)
  np.testing.assert_allclose(flat(clipped), expected, rtol=1e-12)
  assert np.linalg.norm(flat(clipped)) <= threshold * (1 + 1e-12) or norm < threshold
  ref, _ = optax.clip_by_global_norm(threshold).update(g, optax.EmptyState())
  np.testing.assert_allclose(flat(clipped), flat(ref), rtol=1e-12)
  tx = jrnn.training.global_norm_clipping(threshold)
  out, state = jax.jit(tx.update)(g, tx.init(g))
  np.testing.assert_allclose(flat(out), expected, rtol=1e-12)
  np.testing.assert_allclose(state.norm, norm, rtol=1e-12)
  assert int(state.clipped) == int(norm >= threshold)


def test_global_norm_boundary_and_zero():
  g = {"a": jnp.array([3.0, 4.0])}
  clipped, norm = jrnn.training.clip_tree_by_global_norm(g, 5.0)  # ‖g‖ = θ: rescaled by θ/‖g‖ = 1
  np.testing.assert_allclose(clipped["a"], [3.0, 4.0], rtol=1e-15)
  assert float(norm) == 5.0
  zero = {"a": jnp.zeros(3)}
  clipped, norm = jax.jit(jrnn.training.clip_tree_by_global_norm, static_argnums=1)(zero, 1.0)
  assert np.all(np.isfinite(clipped["a"])) and float(norm) == 0.0
  assert float(jrnn.training.global_norm({})) == 0.0


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), scale=st.floats(0.1, 30.0),
                  limit=st.sampled_from([0.5, 1.0, 5.0]))
def test_elementwise_clipping_is_np_clip(seed, scale, limit):
  g = grads(seed, scale)
  out = jrnn.training.clip_elementwise(g, limit)
  np.testing.assert_array_equal(flat(out), np.clip(flat(g), -limit, limit))
  tx = jrnn.training.elementwise_clipping(limit)
  upd, state = jax.jit(tx.update)(g, tx.init(g))
  np.testing.assert_array_equal(flat(upd), np.clip(flat(g), -limit, limit))
  assert int(state.clipped) == int(np.any(np.abs(flat(g)) > limit))
  np.testing.assert_allclose(state.norm, np.linalg.norm(flat(g)), rtol=1e-12)


def test_default_limit_is_char_rnn_five():
  g = {"a": jnp.array([-7.0, -5.0, 0.3, 5.0, 12.0])}
  np.testing.assert_array_equal(jrnn.training.clip_elementwise(g)["a"], [-5.0, -5.0, 0.3, 5.0, 5.0])


def test_transforms_chain_with_optimiser_and_count():
  params = {"w": jnp.zeros(2)}
  tx = optax.chain(jrnn.training.global_norm_clipping(1.0), optax.sgd(0.1))
  state = tx.init(params)
  for g in (jnp.array([3.0, 4.0]), jnp.array([0.3, 0.4]), jnp.array([0.0, 9.0])):
    upd, state = tx.update({"w": g}, state, params)
    scale = min(1.0, 1.0 / float(np.linalg.norm(g)))
    np.testing.assert_allclose(upd["w"], -0.1 * scale * np.asarray(g), rtol=1e-12)
  assert int(state[0].clipped) == 2


def test_bad_thresholds():
  with pytest.raises(ValueError, match="threshold must be positive, got 0"):
    jrnn.training.clip_tree_by_global_norm({"a": jnp.ones(2)}, 0)
  with pytest.raises(ValueError, match="threshold must be positive, got -1"):
    jrnn.training.global_norm_clipping(-1.0)
  with pytest.raises(ValueError, match="limit must be positive, got 0"):
    jrnn.training.clip_elementwise({"a": jnp.ones(2)}, 0.0)
  with pytest.raises(ValueError, match="limit must be positive"):
    jrnn.training.elementwise_clipping(-5)
