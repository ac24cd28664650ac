"""Checkpointed BPTT: the same loss and gradients as the plain path, with less memory."""
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
from jrnn.training.checkpointed import checkpointed_loss, default_segment_length

RTOL, ATOL = 1e-10, 1e-12



def _params(key, n_in=2, n_hidden=3, n_out=3, learn_h0=True):
  return random_params(key, n_in, n_hidden, n_out, learn_h0)


def _data(key, lead, n_in, n_out, loss):
  kx, kt, km = jax.random.split(key, 3)
  xs = jax.random.normal(kx, lead + (n_in,), jnp.float64)
  if loss == "squared_error":
    tg = jax.random.normal(kt, lead + (n_out,), jnp.float64)
  else:
    tg = jax.random.randint(kt, lead, 0, n_out)
  return xs, tg, jax.random.bernoulli(km, 0.75, lead)


def _plain_loss(params, xs, h0, tg, *, loss, reduction, mask, time_major=True, **kw):
  ys = jrnn.forward(params, xs, h0=h0, mask=mask, time_major=time_major, grad="autodiff",
                    **kw).ys
  fn = jrnn.squared_error if loss == "squared_error" else jrnn.softmax_cross_entropy
  return fn(ys, tg, mask, reduction=reduction, time_axis=0 if time_major else 1)


def _ckpt_loss(params, xs, h0, tg, **kw):
  return checkpointed_loss(params, xs, tg, h0=h0, **kw)


def _assert_same(params, xs, h0, tg, **kw):
  argnums = (0, 1) if h0 is None else (0, 1, 2)
  seg = {k: kw.pop(k) for k in ("segment_length", "grad") if k in kw}
  want = jax.jit(jax.value_and_grad(functools.partial(_plain_loss, **kw), argnums=argnums))(
      params, xs, h0, tg)
  got = jax.jit(jax.value_and_grad(functools.partial(_ckpt_loss, **kw, **seg), argnums=argnums))(
      params, xs, h0, tg)
  chex.assert_trees_all_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("n_steps,k,grad", [
    (12, 3, "hand"), (11, 4, "autodiff"), (7, 1, "hand"), (5, 9, "hand"), (10, None, "hand")])
def test_equals_plain_path(n_steps, k, grad):
  p = _params(jax.random.key(0))
  xs, tg, mask = _data(jax.random.key(1), (n_steps, 2), 2, 3, "squared_error")
  _assert_same(p, xs, None, tg, loss="squared_error", reduction="mean", mask=mask,
               segment_length=k, grad=grad)


@pytest.mark.slow
@pytest.mark.parametrize("layout,loss", [("unbatched", "cross_entropy"),
                                         ("batch_major", "squared_error")])
def test_layouts_losses_explicit_h0(layout, loss):
  p = _params(jax.random.key(2), learn_h0=False)
  lead = (9,) if layout == "unbatched" else (2, 9)
  xs, tg, mask = _data(jax.random.key(3), lead, 2, 3, loss)
  h0 = jax.random.normal(jax.random.key(4), (3,) if layout == "unbatched" else (2, 3),
                         jnp.float64)
  _assert_same(p, xs, h0, tg, loss=loss, reduction="batch_mean", mask=mask,
               time_major=layout != "batch_major", activation="softplus",
               output_activation="sigmoid", segment_length=4)


@pytest.mark.slow
def test_lengths_and_no_mask():
  p = _params(jax.random.key(5))
  xs, tg, _ = _data(jax.random.key(6), (10, 3), 2, 3, "squared_error")
  lengths = jnp.array([10, 4, 0])

  def plain(p):
    ys = jrnn.forward(p, xs, lengths=lengths, grad="autodiff").ys
    return jrnn.squared_error(ys, tg, jrnn.validation.mask_from_lengths(lengths, 10, 3))

  want = jax.jit(jax.grad(plain))(p)
  got = jax.jit(jax.grad(functools.partial(checkpointed_loss, lengths=lengths,
                                           segment_length=3)))(p, xs, tg)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
  # no mask at all, segment length not dividing T: the padding must not count
  _assert_same(p, xs, None, tg, loss="squared_error", reduction="mean", mask=None,
               segment_length=4)


@pytest.mark.slow
def test_check_grads_through_checkpoint():
  p = _params(jax.random.key(7))
  xs, tg, mask = _data(jax.random.key(8), (5, 2), 2, 3, "squared_error")
  f = functools.partial(checkpointed_loss, mask=mask, segment_length=2)
  check_grads(lambda p, xs: f(p, xs, tg), (p, xs), order=1, modes=["rev"])


def test_eager_equals_jit():
  p = _params(jax.random.key(9))
  xs, tg, mask = _data(jax.random.key(10), (6, 2), 2, 3, "cross_entropy")
  f = functools.partial(checkpointed_loss, loss="cross_entropy", mask=mask, segment_length=4)
  np.testing.assert_allclose(f(p, xs, tg), jax.jit(f)(p, xs, tg), rtol=RTOL)


def test_uses_less_memory_than_the_plain_path():
  """XLA's buffer assignment (deterministic): checkpointing shrinks the scratch memory."""
  f32 = jnp.float32
  params = jax.eval_shape(functools.partial(jrnn.init_params, n_in=4, n_hidden=32, n_out=4,
                                            dtype=f32), jax.random.key(0))
  xs = jax.ShapeDtypeStruct((400, 4, 4), f32)
  tg = jax.ShapeDtypeStruct((400, 4, 4), f32)

  def temp(fn):
    return jax.jit(jax.grad(fn)).lower(params, xs, tg).compile().memory_analysis() \
        .temp_size_in_bytes

  plain = temp(lambda p, x, y: jrnn.squared_error(jrnn.forward(p, x).ys, y))
  ckpt = temp(checkpointed_loss)
  states = 400 * 4 * 32 * 4  # the bytes of all hidden states, which the plain path keeps
  assert plain >= states
  assert ckpt < states / 2


def test_default_segment_length():
  assert [default_segment_length(t) for t in (1, 2, 4, 5, 9, 10, 1000)] == [
      1, 2, 2, 3, 3, 4, 32]


@pytest.mark.slow
@hypothesis.settings(max_examples=5, deadline=None)
@hypothesis.given(n_steps=st.integers(1, 9), k=st.integers(1, 5), n_batch=st.integers(1, 2),
                  activation=st.sampled_from(["tanh", "relu", "sigmoid"]),
                  seed=st.integers(0, 2 ** 16))
def test_random_segments(n_steps, k, n_batch, activation, seed):
  p = _params(jax.random.key(seed))
  xs, tg, mask = _data(jax.random.fold_in(jax.random.key(seed), 1), (n_steps, n_batch), 2, 3,
                       "squared_error")
  _assert_same(p, xs, None, tg, loss="squared_error", reduction="sum", mask=mask,
               activation=activation, segment_length=k)


def test_bad_inputs():
  p = _params(jax.random.key(11))
  xs, tg, _ = _data(jax.random.key(12), (4, 2), 2, 3, "squared_error")
  with pytest.raises(ValueError, match="segment_length must be a positive int or None, got 0"):
    checkpointed_loss(p, xs, tg, segment_length=0)
  with pytest.raises(ValueError, match="loss must be one of"):
    checkpointed_loss(p, xs, tg, loss="l1")
  with pytest.raises(ValueError, match=r"targets must have shape"):
    checkpointed_loss(p, xs, tg[..., :2])
  with pytest.raises(ValueError, match="grad must be one of"):
    checkpointed_loss(p, xs, tg, grad="magic")
