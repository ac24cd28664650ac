"""Truncated BPTT against autodiff of the same computation written out with stop_gradient."""
import functools

import hypothesis
import hypothesis.strategies as st
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from helpers import random_params
from jrnn.training import truncated

RTOL, ATOL = 1e-10, 1e-12


_params = random_params


def _data(key, n_steps, n_batch, n_in, n_out, loss="squared_error"):
  kx, kt, km = jax.random.split(key, 3)
  xs = jax.random.normal(kx, (n_steps, n_batch, n_in), jnp.float64)
  if loss == "squared_error":
    tg = jax.random.normal(kt, (n_steps, n_batch, n_out), jnp.float64)
  else:
    tg = jax.random.randint(kt, (n_steps, n_batch), 0, n_out)
  mask = jax.random.bernoulli(km, 0.8, (n_steps, n_batch))
  return xs, tg, mask


def _reference_loss(params, xs, tg, mask, *, k1, k2, loss="squared_error", reduction="sum",
                    activation="tanh"):
  """BPTT(k1, k2) spelt out: a Python loop over windows and steps, frozen window starts."""
  n_steps, n_batch = mask.shape
  h_init = jnp.broadcast_to(params.h0, (n_batch, params.h0.shape[0]))
  hs = jrnn.forward(params, xs, mask=mask, activation=activation, grad="autodiff").hs
  fn = jrnn.squared_error if loss == "squared_error" else jrnn.softmax_cross_entropy
  total = 0.0
  n_win = -(-n_steps // k1)
  for n in range(n_win):
    end = (n + 1) * k1
    start = end - k2
    h = h_init if start <= 0 else jax.lax.stop_gradient(hs[start - 1])
    for t in range(max(start, 0), min(end, n_steps)):
      h_new, y = jrnn.step(params, h, xs[t], activation=activation)
      h = jnp.where(mask[t][:, None], h_new, h)
      if t >= n * k1:
        total = total + fn(y[None], tg[t][None], mask[t][None], reduction="sum")
  norm = {"sum": 1, "batch_mean": n_batch, "mean": jnp.maximum(jnp.sum(mask), 1)}[reduction]
  return total / norm


def _full_loss(params, xs, tg, mask, loss="squared_error", reduction="sum"):
  ys = jrnn.forward(params, xs, mask=mask, grad="autodiff").ys
  fn = jrnn.squared_error if loss == "squared_error" else jrnn.softmax_cross_entropy
  return fn(ys, tg, mask, reduction=reduction)


def _assert_trees_close(actual, expected):
  chex.assert_trees_all_close(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("n_steps,k1,k2,loss", [
    (7, 2, 2, "squared_error"), (7, 3, 5, "cross_entropy"), (6, 2, 3, "squared_error"),
    (5, 1, 4, "cross_entropy"), (4, 4, 9, "squared_error")])
def test_truncated_matches_stop_gradient_reference(n_steps, k1, k2, loss):
  p = _params(jax.random.key(0), n_out=3)
  xs, tg, mask = _data(jax.random.key(1), n_steps, 2, 2, 3, loss)
  # The references under jit: one compiled program each, not a compile per op of the Python
  # loops (the same arithmetic).
  want_loss, want = jax.jit(jax.value_and_grad(functools.partial(
      _reference_loss, k1=k1, k2=k2, loss=loss, reduction="mean")))(p, xs, tg, mask)
  got = jax.jit(functools.partial(truncated.truncated_bptt, k1=k1, k2=k2, loss=loss,
                                  reduction="mean"))(p, xs, tg, mask=mask)
  np.testing.assert_allclose(got.loss, want_loss, rtol=RTOL)
  full_loss, h_last = jax.jit(lambda p, xs, tg, mask: (
      _full_loss(p, xs, tg, mask, loss, "mean"), jrnn.forward(p, xs, mask=mask).h_last))(
          p, xs, tg, mask)
  np.testing.assert_allclose(got.loss, full_loss, rtol=RTOL)
  _assert_trees_close(got.grads, want)
  np.testing.assert_allclose(got.h_last, h_last, rtol=RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("n_steps,k,grad", [(7, 3, "autodiff"), (7, 3, "hand"), (3, 8, "hand")])
def test_chunked_equals_truncated_with_k1_equal_k2(n_steps, k, grad):
  p = _params(jax.random.key(2))
  xs, tg, mask = _data(jax.random.key(3), n_steps, 3, 2, 2)
  kw = dict(reduction="batch_mean", grad=grad, activation="relu")
  chunked = jax.jit(functools.partial(truncated.chunked_bptt, chunk_length=k, **kw))(
      p, xs, tg, mask=mask)
  windows = jax.jit(functools.partial(truncated.truncated_bptt, k1=k, **kw))(p, xs, tg, mask=mask)
  want = jax.jit(jax.grad(functools.partial(_reference_loss, k1=k, k2=k, reduction="batch_mean",
                                            activation="relu")))(p, xs, tg, mask)
  _assert_trees_close(chunked, windows)
  _assert_trees_close(chunked.grads, want)


@pytest.mark.slow
def test_whole_sequence_window_is_full_bptt_and_shorter_is_not():
  p = _params(jax.random.key(4))
  xs, tg, mask = _data(jax.random.key(5), 6, 2, 2, 2)
  full = jax.grad(_full_loss)(p, xs, tg, mask)
  _assert_trees_close(truncated.truncated_bptt(p, xs, tg, mask=mask, k1=6).grads, full)
  _assert_trees_close(truncated.chunked_bptt(p, xs, tg, mask=mask, chunk_length=6).grads, full)
  cut = truncated.chunked_bptt(p, xs, tg, mask=mask, chunk_length=2).grads
  assert not np.allclose(cut.w_hh, full.w_hh, rtol=1e-6)
  # the readout sees no recurrence, so truncation leaves its gradient exact
  np.testing.assert_allclose(cut.w_hy, full.w_hy, rtol=RTOL)


@pytest.mark.slow
def test_streaming_chunks_equal_chunked():
  """Calling bptt_chunk per chunk, feeding h_last back, sums to chunked_bptt's gradient."""
  p = _params(jax.random.key(6))
  xs, tg, mask = _data(jax.random.key(7), 6, 2, 2, 2)
  h, total, grads = None, 0.0, None
  for c in range(3):
    sl = slice(2 * c, 2 * c + 2)
    r = truncated.bptt_chunk(p, xs[sl], tg[sl], h0=h, mask=mask[sl])
    h, total = r.h_last, total + r.loss
    grads = r.grads if grads is None else jax.tree_util.tree_map(jnp.add, grads, r.grads)
  want = truncated.chunked_bptt(p, xs, tg, mask=mask, chunk_length=2)
  np.testing.assert_allclose(total, want.loss, rtol=RTOL)
  np.testing.assert_allclose(h, want.h_last, rtol=RTOL)
  _assert_trees_close(grads, want.grads)


@pytest.mark.slow
def test_layouts_unbatched_and_batch_major():
  p = _params(jax.random.key(8), learn_h0=False)
  xs, tg, mask = _data(jax.random.key(9), 5, 2, 2, 2)
  base = truncated.truncated_bptt(p, xs, tg, mask=mask, k1=2, k2=3)
  bm = truncated.truncated_bptt(p, jnp.swapaxes(xs, 0, 1), jnp.swapaxes(tg, 0, 1),
                                mask=mask.T, k1=2, k2=3, time_major=False)
  _assert_trees_close(bm, base)
  one = truncated.chunked_bptt(p, xs[:, 0], tg[:, 0], lengths=jnp.array(4), chunk_length=2)
  ref = truncated.chunked_bptt(p, xs[:, :1], tg[:, :1], lengths=jnp.array([4]), chunk_length=2)
  assert one.h_last.shape == (3,)
  _assert_trees_close(one, ref._replace(h_last=ref.h_last[0]))


@pytest.mark.slow
@hypothesis.settings(max_examples=5, deadline=None)
@hypothesis.given(n_steps=st.integers(1, 7), k1=st.integers(1, 4), extra=st.integers(0, 3),
                  n_batch=st.integers(1, 2), seed=st.integers(0, 2 ** 16))
def test_random_windows(n_steps, k1, extra, n_batch, seed):
  p = _params(jax.random.key(seed))
  xs, tg, mask = _data(jax.random.fold_in(jax.random.key(seed), 1), n_steps, n_batch, 2, 2)
  k2 = k1 + extra
  want = jax.jit(jax.grad(functools.partial(_reference_loss, k1=k1, k2=k2)))(p, xs, tg, mask)
  got = jax.jit(functools.partial(truncated.truncated_bptt, k1=k1, k2=k2))(p, xs, tg, mask=mask)
  _assert_trees_close(got.grads, want)


def test_bad_inputs():
  p = _params(jax.random.key(10))
  xs, tg, _ = _data(jax.random.key(11), 4, 2, 2, 2)
  with pytest.raises(ValueError, match="k2 must be at least k1"):
    truncated.truncated_bptt(p, xs, tg, k1=3, k2=2)
  with pytest.raises(ValueError, match="k1 must be a positive int, got 0"):
    truncated.truncated_bptt(p, xs, tg, k1=0)
  with pytest.raises(ValueError, match="chunk_length must be a positive int"):
    truncated.chunked_bptt(p, xs, tg, chunk_length=2.0)
  with pytest.raises(ValueError, match="reduction must be one of"):
    truncated.chunked_bptt(p, xs, tg, chunk_length=2, reduction="none")
  with pytest.raises(ValueError, match=r"targets must have shape"):
    truncated.bptt_chunk(p, xs, tg[:, :1])
  with pytest.raises(ValueError, match=r"h0 must have shape"):
    truncated.bptt_chunk(p, xs, tg, h0=jnp.zeros((2, 4), jnp.float64))
