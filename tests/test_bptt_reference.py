"""The hand-written BPTT of jrnn.reference.bptt against jax.grad, and the seed's O(T²) formula."""
import functools

import hypothesis
import hypothesis.strategies as st
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.reference import bptt as br

RTOL, ATOL = 1e-10, 1e-12


def _softsign(a):
  return a / (1 + jnp.abs(a))


def _params(key, n_in, n_hidden, n_out, learn_h0=False):
  """float64 parameters with non-zero biases and h0, so every gradient term is exercised."""
  p = jrnn.init_params(key, n_in, n_hidden, n_out, scheme="glorot", dtype=jnp.float64,
                       learn_h0=learn_h0)
  k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 1), 3)
  p = p._replace(b_h=0.3 * jax.random.normal(k1, (n_hidden,), jnp.float64),
                 b_y=0.3 * jax.random.normal(k2, (n_out,), jnp.float64))
  if learn_h0:
    p = p._replace(h0=0.5 * jax.random.normal(k3, (n_hidden,), jnp.float64))
  return p


def _stacked(key, n_in, n_hidden, n_out, num_layers, bidirectional, learn_h0=False):
  p = jrnn.init_stacked(key, n_in, n_hidden, n_out, num_layers=num_layers,
                        bidirectional=bidirectional, scheme="glorot", dtype=jnp.float64,
                        learn_h0=learn_h0)
  keys = iter(jax.random.split(jax.random.fold_in(key, 7), 64))
  layers = tuple(tuple(
      l._replace(b_h=0.3 * jax.random.normal(next(keys), l.b_h.shape, jnp.float64),
                 h0=None if l.h0 is None else 0.5 * jax.random.normal(next(keys), l.h0.shape,
                                                                      jnp.float64))
      for l in layer) for layer in p.layers)
  return p._replace(layers=layers)


def _targets(key, lead, n_out, loss):
  if loss == "squared_error":
    return jax.random.normal(key, lead + (n_out,), jnp.float64)
  return jax.random.randint(key, lead, 0, n_out)


def _autodiff_loss(fwd, params, xs, targets, *, loss, reduction, mask, time_axis, h0=None,
                   **kw):
  """The same loss written plainly, for jax.grad."""
  ys = fwd(params, xs, h0=h0, mask=mask, grad="autodiff", **kw).ys
  fn = jrnn.squared_error if loss == "squared_error" else jrnn.softmax_cross_entropy
  return fn(ys, targets, mask, reduction=reduction, time_axis=time_axis)


def _jit(fn, **static):
  """``fn`` with its configuration fixed, compiled once (eager dispatch is much slower)."""
  return jax.jit(functools.partial(fn, **static))


def _assert_trees_close(actual, expected):
  chex.assert_trees_all_close(actual, expected, rtol=RTOL, atol=ATOL)


def _layout_data(key, layout, n_steps, n_batch, n_in, n_out, loss, masked):
  """xs, targets, mask in the caller's layout; time_axis of the loss."""
  kx, kt, km = jax.random.split(key, 3)
  if layout == "unbatched":
    lead, time_axis = (n_steps,), 0
  elif layout == "time_major":
    lead, time_axis = (n_steps, n_batch), 0
  else:
    lead, time_axis = (n_batch, n_steps), 1
  xs = jax.random.normal(kx, lead + (n_in,), jnp.float64)
  mask = jax.random.bernoulli(km, 0.7, lead) if masked else None
  return xs, _targets(kt, lead, n_out, loss), mask, time_axis


ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity", "leaky_relu", "softplus", _softsign]


@pytest.mark.slow
@pytest.mark.parametrize("activation,loss", [
    (act, ("cross_entropy", "squared_error")[i % 2]) for i, act in enumerate(ACTIVATIONS)])
def test_hand_equals_autodiff_every_activation_and_loss(activation, loss):
  p = _params(jax.random.key(0), 3, 4, 3, learn_h0=True)
  xs, tg, mask, ta = _layout_data(jax.random.key(1), "time_major", 6, 2, 3, 3, loss, True)
  want_loss, (want, want_dx) = jax.jit(jax.value_and_grad(
      functools.partial(_autodiff_loss, jrnn.forward, loss=loss, reduction="sum", mask=mask,
                        time_axis=ta, activation=activation),
      argnums=(0, 1)))(p, xs, tg)
  got = _jit(br.hand_loss_and_grads, loss=loss, activation=activation)(p, xs, tg, mask=mask)
  np.testing.assert_allclose(got.loss, want_loss, rtol=RTOL)
  _assert_trees_close(got.grads, want)
  _assert_trees_close(got.d_xs, want_dx)
  assert got.d_h0 is None


@pytest.mark.slow
@pytest.mark.parametrize("layout,reduction,reverse", [
    ("unbatched", "sum", True), ("unbatched", "mean", False), ("time_major", "batch_mean", True),
    ("time_major", "sum", False), ("batch_major", "mean", True),
    ("batch_major", "batch_mean", False)])
def test_hand_equals_autodiff_layouts_reductions_reverse(layout, reduction, reverse):
  p = _params(jax.random.key(2), 2, 5, 3)
  xs, tg, mask, ta = _layout_data(jax.random.key(3), layout, 5, 3, 2, 3, "squared_error", True)
  kw = dict(time_major=layout != "batch_major", reverse=reverse, activation="tanh",
            output_activation="sigmoid")
  want_loss, (want, want_dx) = jax.jit(jax.value_and_grad(
      functools.partial(_autodiff_loss, jrnn.forward, loss="squared_error",
                        reduction=reduction, mask=mask, time_axis=ta, **kw),
      argnums=(0, 1)))(p, xs, tg)
  got = _jit(br.hand_loss_and_grads, reduction=reduction, **kw)(p, xs, tg, mask=mask)
  np.testing.assert_allclose(got.loss, want_loss, rtol=RTOL)
  _assert_trees_close(got.grads, want)
  _assert_trees_close(got.d_xs, want_dx)


@pytest.mark.slow
@pytest.mark.parametrize("h0_shape", ["(H,)", "(B, H)"])
def test_hand_d_h0_and_lengths(h0_shape):
  p = _params(jax.random.key(4), 3, 4, 2, learn_h0=True)
  xs = jax.random.normal(jax.random.key(5), (6, 3, 3), jnp.float64)
  tg = _targets(jax.random.key(6), (6, 3), 2, "squared_error")
  lengths = jnp.array([6, 2, 0])
  mask = jrnn.validation.mask_from_lengths(lengths, 6, 3)
  shape = (4,) if h0_shape == "(H,)" else (3, 4)
  h0 = jax.random.normal(jax.random.key(7), shape, jnp.float64)

  def loss(p, xs, h0):
    ys = jrnn.forward(p, xs, h0=h0, lengths=lengths, grad="autodiff").ys
    return jrnn.squared_error(ys, tg, mask)

  want = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(p, xs, h0)
  got = br.hand_loss_and_grads(p, xs, tg, h0=h0, lengths=lengths)
  # the explicit h0 overrides the learnt one, whose gradient is then zero
  np.testing.assert_array_equal(got.grads.h0, np.zeros(4))
  _assert_trees_close((got.grads, got.d_xs, got.d_h0), want)


@pytest.mark.slow
@pytest.mark.parametrize("num_layers,bidirectional,loss", [
    (1, True, "squared_error"), (2, False, "cross_entropy"), (2, True, "cross_entropy")])
def test_hand_stacked_equals_autodiff(num_layers, bidirectional, loss):
  p = _stacked(jax.random.key(8), 3, 4, 3, num_layers, bidirectional, learn_h0=True)
  xs, tg, mask, ta = _layout_data(jax.random.key(9), "batch_major", 5, 3, 3, 3, loss, True)
  want_loss, (want, want_dx) = jax.jit(jax.value_and_grad(
      functools.partial(_autodiff_loss, jrnn.stacked_forward, loss=loss, reduction="batch_mean",
                        mask=mask, time_axis=ta, time_major=False, activation="softplus"),
      argnums=(0, 1)))(p, xs, tg)
  got = _jit(br.hand_stacked_loss_and_grads, loss=loss, reduction="batch_mean",
             time_major=False, activation="softplus")(p, xs, tg, mask=mask)
  np.testing.assert_allclose(got.loss, want_loss, rtol=RTOL)
  _assert_trees_close(got.grads, want)
  _assert_trees_close(got.d_xs, want_dx)


@pytest.mark.slow
@pytest.mark.parametrize("h0_batched", [False, True])
def test_hand_stacked_explicit_h0(h0_batched):
  p = _stacked(jax.random.key(10), 2, 3, 2, 2, True)
  xs = jax.random.normal(jax.random.key(11), (4, 2, 2), jnp.float64)
  tg = _targets(jax.random.key(12), (4, 2), 2, "squared_error")
  shape = (4, 2, 3) if h0_batched else (4, 3)
  h0 = jax.random.normal(jax.random.key(13), shape, jnp.float64)
  lengths = jnp.array([4, 1])

  def loss(p, xs, h0):
    ys = jrnn.stacked_forward(p, xs, h0=h0, lengths=lengths, grad="autodiff").ys
    return jrnn.squared_error(ys, tg, jrnn.validation.mask_from_lengths(lengths, 4, 2))

  want = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(p, xs, h0)
  got = jax.jit(br.hand_stacked_loss_and_grads)(p, xs, tg, h0=h0, lengths=lengths)
  _assert_trees_close((got.grads, got.d_xs, got.d_h0), want)


@pytest.mark.slow
@pytest.mark.parametrize("activation,loss", [
    ("tanh", "squared_error"), ("relu", "cross_entropy"), (_softsign, "squared_error")])
def test_seed_formula_equals_recursion_and_autodiff(activation, loss):
  p = _params(jax.random.key(14), 2, 3, 3, learn_h0=True)
  xs, tg, mask, ta = _layout_data(jax.random.key(15), "time_major", 5, 2, 2, 3, loss, True)
  kw = dict(loss=loss, activation=activation, reduction="mean", output_activation="tanh")
  seed = _jit(br.seed_formula_grads, **kw)(p, xs, tg, mask=mask)
  hand = _jit(br.hand_loss_and_grads, **kw)(p, xs, tg, mask=mask)
  auto = jax.jit(jax.grad(functools.partial(
      _autodiff_loss, jrnn.forward, mask=mask, time_axis=ta, **kw)))(p, xs, tg)
  _assert_trees_close(seed, hand.grads)
  _assert_trees_close(seed, auto)


def test_seed_formula_unbatched_without_h0():
  p = _params(jax.random.key(16), 2, 3, 2)
  xs = jax.random.normal(jax.random.key(17), (4, 2), jnp.float64)
  tg = _targets(jax.random.key(18), (4,), 2, "squared_error")
  seed = jax.jit(br.seed_formula_grads)(p, xs, tg)
  want = jax.jit(jax.grad(
      lambda p: jrnn.squared_error(jrnn.forward(p, xs, grad="autodiff").ys, tg)))(p)
  assert seed.h0 is None
  _assert_trees_close(seed, want)


@pytest.mark.slow
def test_seed_formula_double_sum_by_hand_for_one_step():
  """T = 1: the double sum has one term, (∂L/∂h_1 ⊙ σ'(a_1))ᵀ h_0, written out here."""
  p = _params(jax.random.key(19), 2, 3, 2, learn_h0=True)
  x = jax.random.normal(jax.random.key(20), (1, 2), jnp.float64)
  tg = _targets(jax.random.key(21), (1,), 2, "squared_error")
  h1 = jnp.tanh(p.w_hh @ p.h0 + p.w_xh @ x[0] + p.b_h)
  dl_dh1 = 2 * (p.w_hy @ h1 + p.b_y - tg[0]) @ p.w_hy
  e = dl_dh1 * (1 - h1 ** 2)
  seed = br.seed_formula_grads(p, x, tg)
  np.testing.assert_allclose(seed.w_hh, np.outer(e, p.h0), rtol=RTOL)
  np.testing.assert_allclose(seed.w_xh, np.outer(e, x[0]), rtol=RTOL)
  np.testing.assert_allclose(seed.h0, e @ p.w_hh, rtol=RTOL)


@pytest.mark.slow
def test_hand_under_jit_equals_eager():
  p = _params(jax.random.key(22), 3, 4, 2, learn_h0=True)
  xs, tg, mask, _ = _layout_data(jax.random.key(23), "time_major", 3, 2, 3, 2,
                                 "cross_entropy", True)
  fn = functools.partial(br.hand_loss_and_grads, loss="cross_entropy", activation="relu")
  eager = fn(p, xs, tg, mask=mask)
  jitted = jax.jit(fn)(p, xs, tg, mask=mask)
  _assert_trees_close(jitted, eager)
  sp = _stacked(jax.random.key(24), 3, 4, 2, 1, True)
  sfn = functools.partial(br.hand_stacked_loss_and_grads, loss="cross_entropy")
  _assert_trees_close(jax.jit(sfn)(sp, xs, tg, mask=mask), sfn(sp, xs, tg, mask=mask))
  seed_fn = functools.partial(br.seed_formula_grads, loss="cross_entropy")
  _assert_trees_close(jax.jit(seed_fn)(p, xs, tg, mask=mask), seed_fn(p, xs, tg, mask=mask))


@pytest.mark.slow
@hypothesis.settings(max_examples=5, deadline=None)
@hypothesis.given(
    n_steps=st.integers(1, 6), n_batch=st.integers(1, 3), n_in=st.integers(1, 3),
    n_hidden=st.integers(1, 4), n_out=st.integers(1, 3), num_layers=st.integers(1, 2),
    bidirectional=st.booleans(), activation=st.sampled_from(ACTIVATIONS),
    loss=st.sampled_from(["squared_error", "cross_entropy"]), use_lengths=st.booleans(),
    seed=st.integers(0, 2 ** 16))
def test_hand_stacked_random_sizes(n_steps, n_batch, n_in, n_hidden, n_out, num_layers,
                                   bidirectional, activation, loss, use_lengths, seed):
  key = jax.random.key(seed)
  p = _stacked(key, n_in, n_hidden, n_out, num_layers, bidirectional, learn_h0=True)
  kx, kt, kl = jax.random.split(jax.random.fold_in(key, 3), 3)
  xs = jax.random.normal(kx, (n_steps, n_batch, n_in), jnp.float64)
  tg = _targets(kt, (n_steps, n_batch), n_out, loss)
  if use_lengths:
    lengths = jax.random.randint(kl, (n_batch,), 0, n_steps + 1)
    mask = jrnn.validation.mask_from_lengths(lengths, n_steps, n_batch)
    kw = dict(lengths=lengths)
  else:
    mask = jax.random.bernoulli(kl, 0.6, (n_steps, n_batch))
    kw = dict(mask=mask)

  def loss_fn(p, xs):
    ys = jrnn.stacked_forward(p, xs, activation=activation, grad="autodiff", **kw).ys
    fn = jrnn.squared_error if loss == "squared_error" else jrnn.softmax_cross_entropy
    return fn(ys, tg, mask)

  want = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(p, xs)
  got = _jit(br.hand_stacked_loss_and_grads, loss=loss, activation=activation)(p, xs, tg, **kw)
  _assert_trees_close((got.grads, got.d_xs), want)


def test_bad_inputs():
  p = _params(jax.random.key(25), 2, 3, 2)
  xs = jnp.zeros((4, 2), jnp.float64)
  tg = jnp.zeros((4, 2), jnp.float64)
  with pytest.raises(ValueError, match="loss must be one of"):
    br.hand_loss_and_grads(p, xs, tg, loss="hinge")
  with pytest.raises(ValueError, match="reduction must be one of"):
    br.hand_loss_and_grads(p, xs, tg, reduction="none")
  with pytest.raises(ValueError, match=r"targets must have shape .*\(4, 2\).*got \(4, 3\)"):
    br.hand_loss_and_grads(p, xs, jnp.zeros((4, 3), jnp.float64))
  with pytest.raises(TypeError, match="targets has dtype float32"):
    br.seed_formula_grads(p, xs, tg.astype(jnp.float32))
  with pytest.raises(TypeError, match="targets must be integer labels"):
    br.hand_loss_and_grads(p, xs, tg, loss="cross_entropy")
  with pytest.raises(ValueError, match=r"xs must have shape \(T, I=2\)"):
    br.hand_loss_and_grads(p, jnp.zeros((4, 3), jnp.float64), tg)
  sp = jrnn.init_stacked(jax.random.key(0), 2, 3, None, dtype=jnp.float64)
  with pytest.raises(ValueError, match="with a readout"):
    br.hand_stacked_loss_and_grads(sp, xs, tg)
