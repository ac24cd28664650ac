"""jrnn.online: exact RTRL equals BPTT; SnAp-1 where it must; online truncated BPTT; refusals."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
import jrnn.online as online
from helpers import random_params

T, I, H, O = 6, 2, 3, 2
MASK = jnp.array([1, 1, 0, 1, 1, 1], bool)  # step 2 does not happen
LOSS_MASK = jnp.array([1, 0, 1, 1, 1, 1], bool)  # step 1 happens but is not scored


def _data(key, loss="squared_error"):
  kx, ky = jax.random.split(key)
  xs = jax.random.normal(kx, (T, I), jnp.float64)
  if loss == "squared_error":
    return xs, jax.random.normal(ky, (T, O), jnp.float64)
  return xs, jax.random.randint(ky, (T,), 0, O)


@functools.partial(jax.jit, static_argnames=("loss", "activation"))
def _bptt(params, xs, targets, *, loss="squared_error", activation="tanh", mask=None,
          loss_mask=None):
  """BPTT: ``jax.grad`` of ``Σ_t L_t`` through ``jrnn.forward``; also ``h_last``."""
  scored = mask if loss_mask is None else loss_mask if mask is None else mask & loss_mask
  fn = jrnn.squared_error if loss == "squared_error" else jrnn.softmax_cross_entropy

  def total(p):
    out = jrnn.forward(p, xs, mask=mask, activation=activation)
    return fn(out.ys, targets, scored, reduction="sum"), out.h_last

  (value, h_last), grads = jax.value_and_grad(total, has_aux=True)(params)
  return value, grads, h_last


# Jitted once per configuration and reused across tests (compiling dominates their time).
_rtrl = jax.jit(online.rtrl_sequence, static_argnames=("loss", "activation"))
_rtrl_step = jax.jit(online.rtrl_step)
_snap_step = jax.jit(online.snap1_step)


def _assert_tree_close(a, b, rtol=1e-10, atol=1e-12):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_rtrl_equals_bptt_with_masks_under_jit(activation):
  params = random_params(jax.random.key(0), I, H, O)  # learnt h0 too
  xs, targets = _data(jax.random.key(1))
  res = _rtrl(params, xs, targets, mask=MASK, loss_mask=LOSS_MASK, activation=activation)
  value, grads, h_last = _bptt(params, xs, targets, activation=activation, mask=MASK,
                               loss_mask=LOSS_MASK)
  np.testing.assert_allclose(res.loss, value, rtol=1e-12)
  _assert_tree_close(res.grads, grads)
  np.testing.assert_allclose(res.state.h, h_last, rtol=1e-12)


def test_rtrl_cross_entropy_without_h0_equals_bptt():
  params = random_params(jax.random.key(2), I, H, O, learn_h0=False)
  xs, labels = _data(jax.random.key(3), "cross_entropy")
  res = _rtrl(params, xs, labels, loss="cross_entropy")
  value, grads, _ = _bptt(params, xs, labels, loss="cross_entropy")
  np.testing.assert_allclose(res.loss, value, rtol=1e-12)
  assert res.grads.h0 is None
  _assert_tree_close(res.grads, grads)


def test_rtrl_steps_in_a_python_loop_match_the_scan():
  params = random_params(jax.random.key(4), I, H, O)
  xs, targets = _data(jax.random.key(5))
  state = online.rtrl_init(params)
  np.testing.assert_array_equal(state.influence.h0, np.eye(H))  # M_0 = I for a learnt h0
  total = jax.tree_util.tree_map(jnp.zeros_like, params)
  for t in range(T):
    state, g, _ = _rtrl_step(params, state, xs[t], targets[t], mask=MASK[t], loss_mask=LOSS_MASK[t])
    total = jax.tree_util.tree_map(jnp.add, total, g)
    if not MASK[t]:
      assert not any(np.any(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(g))
  res = _rtrl(params, xs, targets, mask=MASK, loss_mask=LOSS_MASK)
  _assert_tree_close(total, res.grads, rtol=1e-13)
  _assert_tree_close(state, res.state, rtol=1e-13)


def test_snap1_equals_rtrl_when_w_hh_is_diagonal():
  params = random_params(jax.random.key(6), I, H, O)
  params = params._replace(w_hh=jnp.diag(jnp.array([0.9, -0.5, 0.3])))
  xs, targets = _data(jax.random.key(7))
  kw = dict(mask=MASK, loss_mask=LOSS_MASK)
  snap_sequence = jax.jit(functools.partial(online.snap1_sequence, **kw))
  snap = snap_sequence(params, xs, targets)
  exact = _rtrl(params, xs, targets, **kw)
  _assert_tree_close(snap.grads, exact.grads)
  _assert_tree_close(online.snap1_to_dense(snap.state.influence), exact.state.influence)
  # ... and is an approximation otherwise: the paths through other units are dropped.
  full = random_params(jax.random.key(6), I, H, O)
  approx = snap_sequence(full, xs, targets).grads
  assert not np.allclose(approx.w_hh, _rtrl(full, xs, targets, **kw).grads.w_hh)


def test_snap1_is_exact_for_the_one_step_influence():
  # From the start of a stream, the first step's influence and gradient are RTRL's. (From a
  # given h, that is: from a learnt h0, M_0 = I is dense and SnAp-1 keeps its diagonal only.)
  params = random_params(jax.random.key(8), I, H, O)
  xs, targets = _data(jax.random.key(9))
  h = jnp.ones(H)
  on = dict(mask=jnp.asarray(True), loss_mask=jnp.asarray(True))  # as the loop test's calls
  snap, g_snap, _ = _snap_step(params, online.snap1_init(params, h), xs[0], targets[0], **on)
  exact, g_exact, _ = _rtrl_step(params, online.rtrl_init(params, h), xs[0], targets[0], **on)
  _assert_tree_close(online.snap1_to_dense(snap.influence), exact.influence, rtol=1e-13)
  _assert_tree_close(g_snap, g_exact, rtol=1e-13)
  # From any influence on the pattern, a SnAp-1 step is RTRL's step restricted to the pattern.
  leaves = jax.tree_util.tree_leaves(snap.influence)
  keys = jax.random.split(jax.random.key(10), len(leaves))
  pattern = jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(snap.influence),
      [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
  snap_state = online.SnApState(exact.h, pattern)
  rtrl_state = online.RTRLState(exact.h, online.snap1_to_dense(pattern))
  snap, _, _ = _snap_step(params, snap_state, xs[1], targets[1], **on)
  exact, _, _ = _rtrl_step(params, rtrl_state, xs[1], targets[1], **on)
  _assert_tree_close(snap.influence, online.dense_to_snap1(exact.influence), rtol=1e-13)


def test_tbptt_with_a_long_window_is_bptt_and_with_a_short_one_is_truncated_bptt():
  params = random_params(jax.random.key(11), I, H, O)
  xs, targets = _data(jax.random.key(12))
  tbptt = jax.jit(online.tbptt_sequence, static_argnames="truncation")
  long = tbptt(params, xs, targets, truncation=T, mask=MASK, loss_mask=LOSS_MASK)
  value, grads, _ = _bptt(params, xs, targets, mask=MASK, loss_mask=LOSS_MASK)
  np.testing.assert_allclose(long.loss, value, rtol=1e-12)
  _assert_tree_close(long.grads, grads)
  short = tbptt(params, xs, targets, truncation=2)
  ref = jax.jit(functools.partial(jrnn.training.truncated_bptt, k1=1, k2=2))(params, xs, targets)
  _assert_tree_close(short.grads, ref.grads)


def test_rtrl_refuses_a_large_influence_unless_allowed():
  big = jrnn.RNNParams(jnp.zeros((300, 2)), jnp.zeros((300, 300)), jnp.zeros(300),
                       jnp.zeros((1, 300)), jnp.zeros(1))
  with pytest.raises(ValueError, match=r"exact RTRL at H=300.*MiB.*max_influence_bytes"):
    online.rtrl_init(big)
  params = random_params(jax.random.key(13), I, H, O)
  need = online.rtrl_influence_bytes(params)
  assert need == H * (H * I + H * H + 2 * H) * 8
  with pytest.raises(ValueError, match="snap1 or uoro"):
    online.rtrl_init(params, max_influence_bytes=need - 1)
  with pytest.raises(ValueError, match="max_influence_bytes"):
    online.init_streams(online.online_method("rtrl", max_influence_bytes=need - 1), params, 2)
  assert online.rtrl_init(params, max_influence_bytes=need).influence.w_hh.shape == (H, H, H)
  with pytest.raises(ValueError, match="max_influence_bytes must be a positive int"):
    online.rtrl_init(params, max_influence_bytes=0)


def test_bad_inputs_name_the_argument():
  params = random_params(jax.random.key(14), I, H, O)
  state = online.rtrl_init(params)
  with pytest.raises(ValueError, match=r"x must have shape"):
    online.rtrl_step(params, state, jnp.zeros((2, I)), jnp.zeros(O))
  with pytest.raises(ValueError, match=r"target must have shape"):
    online.snap1_step(params, online.snap1_init(params), jnp.zeros(I), jnp.zeros(O + 1))
  with pytest.raises(TypeError, match="integer label"):
    online.rtrl_step(params, state, jnp.zeros(I), jnp.zeros(()), loss="cross_entropy")
  with pytest.raises(ValueError, match="loss must be one of"):
    online.rtrl_step(params, state, jnp.zeros(I), jnp.zeros(O), loss="hinge")
  with pytest.raises(ValueError, match=r"xs must have shape \(T, I\)"):
    online.snap1_sequence(params, jnp.zeros((T, 1, I)), jnp.zeros((T, O)))
  with pytest.raises(ValueError, match=r"mask must have shape \(T,\)"):
    online.snap1_sequence(params, jnp.zeros((T, I)), jnp.zeros((T, O)), mask=MASK[:-1])
  with pytest.raises(ValueError, match="truncation must be a positive int"):
    online.tbptt_init(params, truncation=0)
  with pytest.raises(ValueError, match="needs key="):
    online.uoro_init(params)  # a learnt h0 starts from random signs
  with pytest.raises(TypeError, match="stacked layers are not supported"):
    online.snap1_init(jrnn.StackedParams(((params.layer,),), params.w_hy, params.b_y))
  with pytest.raises(ValueError, match="method must be one of"):
    online.online_method("bptt")
  with pytest.raises(ValueError, match="truncation"):
    online.online_method("tbptt")


@pytest.mark.slow
def test_uoro_mean_over_draws_is_the_true_gradient():
  """Unbiased: the mean of many estimates lies within its own statistical error of BPTT's."""
  n_draws = 4000
  params = random_params(jax.random.key(15), I, H, O)  # learnt h0: estimated from ν_0 ν_0ᵀ = I
  xs, targets = _data(jax.random.key(16))
  kw = dict(mask=MASK, loss_mask=LOSS_MASK)
  _, true, _ = _bptt(params, xs, targets, **kw)
  keys = jax.random.split(jax.random.key(17), n_draws)
  draws = jax.jit(jax.vmap(
      lambda k: online.uoro_sequence(params, xs, targets, key=k, **kw).grads))(keys)
  mean = jax.tree_util.tree_map(lambda a: jnp.mean(a, 0), draws)
  stderr = jax.tree_util.tree_map(lambda a: jnp.std(a, 0, ddof=1) / np.sqrt(n_draws), draws)
  # The readout's gradient is exact in every draw; the recurrent ones are estimates.
  for name in ("w_hy", "b_y"):
    got = np.asarray(getattr(draws, name))
    np.testing.assert_allclose(got, np.broadcast_to(getattr(true, name), got.shape), rtol=1e-10,
                               atol=1e-12)
  for name in ("w_xh", "w_hh", "b_h", "h0"):
    m, s, g = (np.asarray(getattr(tree, name)) for tree in (mean, stderr, true))
    assert np.all(s > 0), name  # really random
    # Elementwise within 4.5 standard errors (about 1 in 150,000 per entry by chance) ...
    assert np.all(np.abs(m - g) < 4.5 * s), (name, (m - g) / s)
    # ... and the check has power: the error bars are small next to the gradient itself.
    assert np.linalg.norm(s) < 0.25 * np.linalg.norm(g), (name, s, g)
  # The key is the only randomness: different keys, different estimates.
  assert not np.allclose(draws.w_hh[0], draws.w_hh[1])
