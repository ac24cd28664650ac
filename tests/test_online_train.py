"""jrnn.online training: the online train step updates every k steps of B streams."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
import jrnn.online as online
from helpers import random_params

T, B, I, H, O = 4, 2, 2, 3, 2


def _batch(key):
  kx, ky = jax.random.split(key)
  return (jax.random.normal(kx, (T, B, I), jnp.float64),
          jax.random.normal(ky, (T, B, O), jnp.float64))


@pytest.mark.slow
def test_rtrl_train_step_over_a_whole_window_is_sgd_on_bptt():
  params = random_params(jax.random.key(0), I, H, O, learn_h0=False)
  xs, targets = _batch(jax.random.key(1))
  loss_mask = jnp.ones((T, B), bool).at[0].set(False)
  lr = 0.1
  method = online.online_method("rtrl")
  step = online.make_online_train_step(method, optax.sgd(lr), every=T, reduction="sum",
                                       donate=False)
  state = online.init_streams(method, params, B)
  new, _, state, metrics = step(params, optax.sgd(lr).init(params), state,
                                online.OnlineBatch(xs, targets, loss_mask))

  def bptt(p):
    out = jrnn.forward(p, xs)
    return jrnn.squared_error(out.ys, targets, loss_mask, reduction="sum"), out.h_last

  (value, h_last), grads = jax.jit(jax.value_and_grad(bptt, has_aux=True))(params)
  want = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
  for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
  assert int(metrics["scored"]) == (T - 1) * B
  np.testing.assert_allclose(metrics["loss"], value / ((T - 1) * B), rtol=1e-12)
  np.testing.assert_allclose(state.h, h_last, rtol=1e-12)
  assert state.influence.w_hh.shape == (B, H, H, H)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["uoro", "tbptt"])  # snap1: the skip test below
def test_each_method_trains_every_step_and_lowers_the_loss(name):
  params = random_params(jax.random.key(2), I, H, O, learn_h0=False)
  xs, targets = _batch(jax.random.key(3))
  method = online.online_method(name, truncation=2 if name == "tbptt" else None)
  opt = optax.adam(0.05)
  step = online.make_online_train_step(method, opt, every=1, jit=False)
  state = online.init_streams(method, params, B)
  opt_state = opt.init(params)
  key = jax.random.key(4)
  run = jax.jit(lambda p, o, s, k: step(p, o, s, online.OnlineBatch(xs, targets), k))
  losses = []
  for window in range(6):  # the same window again and again: the loss must fall
    params, opt_state, state, metrics = run(params, opt_state, state,
                                            jax.random.fold_in(key, window))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0], losses


def test_train_step_refuses_bad_configurations():
  params = random_params(jax.random.key(5), I, H, O, learn_h0=False)
  xs, targets = _batch(jax.random.key(6))
  opt = optax.sgd(0.1)
  uoro = online.online_method("uoro")
  step = online.make_online_train_step(uoro, opt, jit=False)
  state = online.init_streams(uoro, params, B)
  with pytest.raises(ValueError, match="needs key="):
    step(params, opt.init(params), state, online.OnlineBatch(xs, targets))
  step = online.make_online_train_step(online.online_method("snap1"), opt, every=3, jit=False)
  with pytest.raises(ValueError, match="multiple of every=3"):
    step(params, opt.init(params), state, online.OnlineBatch(xs, targets))
  with pytest.raises(ValueError, match="every must be a positive int"):
    online.make_online_train_step(uoro, opt, every=0)
  with pytest.raises(ValueError, match="reduction must be one of"):
    online.make_online_train_step(uoro, opt, reduction="none")
  with pytest.raises(ValueError, match=r"h must have shape \(B, H\)"):
    online.init_streams(uoro, params, B, h=jnp.zeros((B + 1, H)))


def test_an_update_without_a_scored_step_is_skipped():
  params = random_params(jax.random.key(7), I, H, O, learn_h0=False)
  xs, targets = _batch(jax.random.key(8))
  opt = optax.adam(0.1)
  method = online.online_method("snap1")
  step = online.make_online_train_step(method, opt, every=2, donate=False)
  opt_state = opt.init(params)
  # The first two steps are not scored: the first update is skipped, the second is not.
  loss_mask = jnp.ones((T, B), bool).at[:2].set(False)
  batch = online.OnlineBatch(xs, targets, loss_mask)
  new, new_opt, state, metrics = step(params, opt_state, online.init_streams(method, params, B),
                                      batch)
  assert int(metrics["scored"]) == 2 * B
  assert not np.allclose(new.w_hh, params.w_hh)
  # With nothing scored at all, nothing moves, not even Adam's statistics.
  none = online.OnlineBatch(xs, targets, jnp.zeros((T, B), bool))
  same, same_opt, _, metrics = step(params, opt_state, state, none)
  assert int(metrics["scored"]) == 0 and float(metrics["loss"]) == 0.0
  for a, b in zip(jax.tree_util.tree_leaves((same, same_opt)),
                  jax.tree_util.tree_leaves((params, opt_state))):
    np.testing.assert_array_equal(a, b)
