"""jrnn's fast path: jax.grad through ``grad="hand"`` (the custom VJP) equals autodiff."""
import functools

import hypothesis
import hypothesis.strategies as st
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from helpers import random_params

RTOL, ATOL = 1e-10, 1e-12


def _softsign(a):
  return a / (1 + jnp.abs(a))


ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity", "leaky_relu", "softplus", _softsign]


_params = random_params


def _stacked(key, n_in, n_hidden, n_out, num_layers, bidirectional):
  p = jrnn.init_stacked(key, n_in, n_hidden, n_out, num_layers=num_layers,
                        bidirectional=bidirectional, scheme="glorot", dtype=jnp.float64,
                        learn_h0=True)
  keys = iter(jax.random.split(jax.random.fold_in(key, 7), 64))
  layers = tuple(tuple(
      l._replace(b_h=0.3 * jax.random.normal(next(keys), l.b_h.shape, jnp.float64),
                 h0=0.5 * jax.random.normal(next(keys), l.h0.shape, jnp.float64))
      for l in layer) for layer in p.layers)
  return p._replace(layers=layers)


def _loss(fwd, params, xs, h0, targets, *, grad, loss, mask, time_axis, **kw):
  ys = fwd(params, xs, h0=h0, mask=mask, grad=grad, **kw).ys
  fn = jrnn.squared_error if loss == "squared_error" else jrnn.softmax_cross_entropy
  return fn(ys, targets, mask, time_axis=time_axis)


def _targets(key, lead, n_out, loss):
  if loss == "squared_error":
    return jax.random.normal(key, lead + (n_out,), jnp.float64)
  return jax.random.randint(key, lead, 0, n_out)


def _assert_hand_equals_autodiff(fwd, params, xs, h0, targets, **kw):
  """Gradients for every parameter, the inputs and an explicit h0, hand vs autodiff."""
  grads = {}
  for mode in ("hand", "autodiff"):
    fn = functools.partial(_loss, fwd, grad=mode, **kw)
    argnums = (0, 1) if h0 is None else (0, 1, 2)
    grads[mode] = jax.jit(jax.value_and_grad(fn, argnums=argnums))(params, xs, h0, targets)
  got = jax.tree_util.tree_leaves(grads["hand"])
  want = jax.tree_util.tree_leaves(grads["autodiff"])
  assert len(got) == len(want)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=RTOL, atol=ATOL)


def _data(key, layout, n_steps, n_batch, n_in, n_out, loss, masked=True):
  kx, kt, km = jax.random.split(key, 3)
  lead = {"unbatched": (n_steps,), "time_major": (n_steps, n_batch),
          "batch_major": (n_batch, n_steps)}[layout]
  xs = jax.random.normal(kx, lead + (n_in,), jnp.float64)
  mask = jax.random.bernoulli(km, 0.7, lead) if masked else None
  return xs, _targets(kt, lead, n_out, loss), mask, 1 if layout == "batch_major" else 0


@pytest.mark.slow
@pytest.mark.parametrize("activation,loss", [
    (act, ("squared_error", "cross_entropy")[i % 2]) for i, act in enumerate(ACTIVATIONS)])
def test_every_activation_and_loss(activation, loss):
  p = _params(jax.random.key(0), 3, 4, 3)
  xs, tg, mask, ta = _data(jax.random.key(1), "time_major", 6, 2, 3, 3, loss)
  _assert_hand_equals_autodiff(jrnn.forward, p, xs, None, tg, loss=loss, mask=mask,
                               time_axis=ta, activation=activation)


@pytest.mark.slow
@pytest.mark.parametrize("layout,reverse,masked", [
    ("unbatched", False, True), ("unbatched", True, False), ("time_major", True, True),
    ("time_major", False, False), ("batch_major", False, True), ("batch_major", True, True)])
def test_layouts_reverse_masks_explicit_h0(layout, reverse, masked):
  p = _params(jax.random.key(2), 2, 5, 2, learn_h0=False)
  xs, tg, mask, ta = _data(jax.random.key(3), layout, 5, 3, 2, 2, "squared_error", masked)
  h0_shape = (5,) if layout == "unbatched" else (3, 5)
  h0 = jax.random.normal(jax.random.key(4), h0_shape, jnp.float64)
  _assert_hand_equals_autodiff(jrnn.forward, p, xs, h0, tg, loss="squared_error", mask=mask,
                               time_axis=ta, time_major=layout != "batch_major",
                               reverse=reverse, output_activation="sigmoid", unroll=2)


@pytest.mark.slow
def test_lengths_and_learnt_h0():
  p = _params(jax.random.key(5), 3, 4, 2)
  xs = jax.random.normal(jax.random.key(6), (6, 3, 3), jnp.float64)
  tg = _targets(jax.random.key(7), (6, 3), 2, "squared_error")
  lengths = jnp.array([6, 3, 0])
  mask = jrnn.validation.mask_from_lengths(lengths, 6, 3)
  grads = [jax.jit(jax.grad(lambda p, mode=mode: jrnn.squared_error(
      jrnn.forward(p, xs, lengths=lengths, grad=mode).ys, tg, mask)))(p)
           for mode in ("hand", "autodiff")]
  for g, w in zip(*grads):
    np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("num_layers,bidirectional,loss", [
    (1, True, "cross_entropy"), (2, False, "squared_error"), (2, True, "squared_error")])
def test_stacked_and_bidirectional(num_layers, bidirectional, loss):
  p = _stacked(jax.random.key(8), 3, 4, 3, num_layers, bidirectional)
  xs, tg, mask, ta = _data(jax.random.key(9), "batch_major", 5, 2, 3, 3, loss)
  h0 = jax.random.normal(jax.random.key(10), (num_layers * (1 + bidirectional), 4), jnp.float64)
  _assert_hand_equals_autodiff(jrnn.stacked_forward, p, xs, None, tg, loss=loss, mask=mask,
                               time_axis=ta, time_major=False, activation="relu")
  _assert_hand_equals_autodiff(jrnn.stacked_forward, p, xs, h0, tg, loss=loss, mask=mask,
                               time_axis=ta, time_major=False)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["tanh", _softsign])
def test_check_grads_through_custom_vjp(activation):
  """Reverse mode through the hand VJP against finite differences, to second order."""
  p = _params(jax.random.key(11), 2, 3, 2)
  xs = jax.random.normal(jax.random.key(12), (4, 2, 2), jnp.float64)
  mask = jnp.array([[1, 1], [1, 0], [0, 1], [1, 1]], bool)

  def f(p, xs):
    out = jrnn.forward(p, xs, mask=mask, activation=activation, grad="hand")
    return jnp.sum(jnp.sin(out.ys)) + jnp.sum(out.h_last ** 2)

  check_grads(f, (p, xs), order=1, modes=["rev"])


@pytest.mark.slow
def test_check_grads_through_stacked_custom_vjp():
  p = _stacked(jax.random.key(13), 2, 3, 2, 2, True)
  xs = jax.random.normal(jax.random.key(14), (3, 2, 2), jnp.float64)

  def f(p, xs):
    out = jrnn.stacked_forward(p, xs, lengths=jnp.array([3, 2]), grad="hand")
    return jnp.sum(jnp.cos(out.ys)) + jnp.sum(out.h_last ** 2)

  check_grads(f, (p, xs), order=1, modes=["rev"])


@pytest.mark.slow
def test_gradient_of_hidden_states_and_final_state():
  """Cotangents on hs and h_last (not only through the readout) reach the hand VJP."""
  p = _params(jax.random.key(15), 2, 3, 2)
  xs = jax.random.normal(jax.random.key(16), (5, 2, 2), jnp.float64)
  w = jax.random.normal(jax.random.key(17), (5, 2, 3), jnp.float64)

  def f(p, xs, mode):
    out = jrnn.forward(p, xs, reverse=True, grad=mode)
    return jnp.sum(w * out.hs) + jnp.sum(jnp.tanh(out.h_last))

  got = jax.grad(f, argnums=(0, 1))(p, xs, "hand")
  want = jax.grad(f, argnums=(0, 1))(p, xs, "autodiff")
  chex.assert_trees_all_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@hypothesis.settings(max_examples=5, deadline=None)
@hypothesis.given(
    n_steps=st.integers(1, 6), n_batch=st.integers(1, 3), n_in=st.integers(1, 3),
    n_hidden=st.integers(1, 4), n_out=st.integers(1, 3), num_layers=st.integers(1, 2),
    bidirectional=st.booleans(), activation=st.sampled_from(ACTIVATIONS),
    loss=st.sampled_from(["squared_error", "cross_entropy"]), use_lengths=st.booleans(),
    seed=st.integers(0, 2 ** 16))
def test_random_sizes(n_steps, n_batch, n_in, n_hidden, n_out, num_layers, bidirectional,
                      activation, loss, use_lengths, seed):
  key = jax.random.key(seed)
  p = _stacked(key, n_in, n_hidden, n_out, num_layers, bidirectional)
  kx, kt, kl = jax.random.split(jax.random.fold_in(key, 3), 3)
  xs = jax.random.normal(kx, (n_steps, n_batch, n_in), jnp.float64)
  tg = _targets(kt, (n_steps, n_batch), n_out, loss)
  if use_lengths:
    lengths = jax.random.randint(kl, (n_batch,), 0, n_steps + 1)
    mask = jrnn.validation.mask_from_lengths(lengths, n_steps, n_batch)
  else:
    mask = jax.random.bernoulli(kl, 0.6, (n_steps, n_batch))
  _assert_hand_equals_autodiff(jrnn.stacked_forward, p, xs, None, tg, loss=loss, mask=mask,
                               time_axis=0, activation=activation)


@pytest.mark.parametrize("activation", ["tanh", _softsign])  # σ' from h_t; from a_t (custom)
@pytest.mark.parametrize("masked", [False, True])
def test_bias_inside_the_loop_changes_no_bit(activation, masked):
  """The hand layer's loop adds ``b_h`` inside its step (no ``(T, B, H)`` copy of ``z + b_h``):
  its states equal bit for bit the loop over ``u = z + b_h`` rounded first, as 0.2 computed it
  (the hand gradients are unchanged by construction: the backward rebuilds that ``u``)."""
  from jrnn import kernels  # pylint: disable=import-outside-toplevel
  act = jrnn.activations.get_activation(activation)
  rng = np.random.default_rng(3)
  t, b, h = 7, 3, 5
  z, w_hh, b_h, h0, g = (rng.normal(size=s).astype(np.float32)
                         for s in ((t, b, h), (h, h), (h,), (b, h), (t, b, h)))
  u = z + b_h  # rounded once, in NumPy
  mask = jnp.asarray(np.arange(t)[:, None] < np.array([7, 4, 1])[None]) if masked else None
  hs = jax.jit(lambda z, b_h: kernels.states("xla", w_hh, z, h0, mask, act, 1, b_h))(z, b_h)
  want = jax.jit(lambda u: kernels.states("xla", w_hh, u, h0, mask, act, 1))(u)
  np.testing.assert_array_equal(hs, want)
