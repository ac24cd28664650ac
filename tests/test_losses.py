"""Sequence losses against plain Python loops over steps, for every reduction and mask."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

T, B, O = 4, 3, 5


def _data(shape_lead, seed=0):
  rng = np.random.default_rng(seed)
  ys = rng.normal(size=shape_lead + (O,))
  targets = rng.normal(size=shape_lead + (O,))
  labels = rng.integers(0, O, size=shape_lead)
  mask = rng.random(size=shape_lead) < 0.7
  return ys, targets, labels, mask


def _loop_reduce(terms, mask, reduction, time_axis):
  """``terms``/``mask`` are dicts ``index -> value``; reduce them by hand."""
  valid = [k for k in terms if mask is None or mask[k]]
  total = sum(terms[k] for k in valid)
  if reduction == "sum":
    return total
  if reduction == "mean":
    return total / max(len(valid), 1)
  # batch_mean: divide by the number of sequences (indices along the non-time axes).
  n_seq = len({k[:time_axis] + k[time_axis + 1:] for k in terms}) if len(next(iter(terms))) > 1 \
      else 1
  return total / n_seq


def _se_terms(ys, targets):
  terms = {}
  for k in np.ndindex(ys.shape[:-1]):
    terms[k] = sum((ys[k][o] - targets[k][o]) ** 2 for o in range(O))
  return terms


def _ce_terms(logits, labels):
  terms = {}
  for k in np.ndindex(logits.shape[:-1]):
    row = logits[k]
    m = max(row)
    terms[k] = m + math.log(sum(math.exp(v - m) for v in row)) - row[labels[k]]
  return terms


LAYOUTS = [((T,), 0), ((T, B), 0), ((B, T), 1)]


@pytest.mark.slow
@pytest.mark.parametrize("lead,time_axis", LAYOUTS)
@pytest.mark.parametrize("reduction", ["sum", "batch_mean", "mean", "none"])
@pytest.mark.parametrize("masked", [False, True])
def test_losses_match_python_loops(lead, time_axis, reduction, masked):
  ys, targets, labels, mask = _data(lead)
  mask = mask if masked else None
  ax = time_axis % len(lead)
  for fn, terms in ((jrnn.squared_error, _se_terms(ys, targets)),
                    (jrnn.softmax_cross_entropy, _ce_terms(ys, labels))):
    second = targets if fn is jrnn.squared_error else labels
    got = fn(jnp.asarray(ys), jnp.asarray(second), mask, reduction=reduction,
             time_axis=time_axis)
    if reduction == "none":
      assert got.shape == lead
      for k, v in terms.items():
        want = v if mask is None or mask[k] else 0.0
        np.testing.assert_allclose(got[k], want, rtol=1e-12, atol=1e-14)
    else:
      assert got.shape == ()
      np.testing.assert_allclose(got, _loop_reduce(terms, mask, reduction, ax), rtol=1e-12)


def test_negative_time_axis_counts_from_the_end():
  ys, targets, _, mask = _data((B, T), seed=7)
  np.testing.assert_allclose(
      jrnn.squared_error(ys, targets, mask, reduction="batch_mean", time_axis=-1),
      jrnn.squared_error(ys, targets, mask, reduction="batch_mean", time_axis=1), rtol=1e-15)


def test_numeric_masks_mean_the_same_as_boolean():
  ys, targets, labels, mask = _data((T, B), seed=1)
  for reduction in ("sum", "mean"):
    want = jrnn.squared_error(ys, targets, mask, reduction=reduction)
    for m in (mask.astype(np.float64), mask.astype(np.int32), 3.0 * mask):
      np.testing.assert_allclose(jrnn.squared_error(ys, targets, m, reduction=reduction), want,
                                 rtol=1e-14)


def test_padded_steps_may_hold_anything():
  ys, targets, labels, mask = _data((T, B), seed=2)
  ys_bad = np.where(mask[..., None], ys, np.nan)
  labels_bad = np.where(mask, labels, -1)
  want = jrnn.softmax_cross_entropy(ys, labels, mask)
  got = jrnn.softmax_cross_entropy(ys_bad, labels_bad, mask)
  np.testing.assert_allclose(got, want, rtol=1e-14)
  g = jax.grad(lambda y: jrnn.softmax_cross_entropy(y, labels_bad, mask))(jnp.asarray(ys_bad))
  assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~mask] == 0)
  np.testing.assert_allclose(jrnn.squared_error(ys_bad, targets, mask),
                             jrnn.squared_error(ys, targets, mask), rtol=1e-14)


def test_fully_masked_mean_is_zero_not_nan():
  ys, targets, labels, _ = _data((T, B), seed=3)
  mask = np.zeros((T, B), bool)
  assert float(jrnn.squared_error(ys, targets, mask, reduction="mean")) == 0.0
  assert float(jrnn.softmax_cross_entropy(ys, labels, mask, reduction="mean")) == 0.0


def test_traced_out_of_range_label_gives_nan():
  ys, _, labels, _ = _data((T, B), seed=4)
  labels = labels.copy()
  labels[1, 2] = O
  loss = jax.jit(jrnn.softmax_cross_entropy)(jnp.asarray(ys), jnp.asarray(labels))
  assert np.isnan(loss)


@pytest.mark.parametrize("reduction", ["sum", "batch_mean", "mean"])
def test_losses_under_jit_and_grad(reduction):
  ys, targets, labels, mask = _data((T, B), seed=5)
  se = functools.partial(jrnn.squared_error, reduction=reduction)
  ce = functools.partial(jrnn.softmax_cross_entropy, reduction=reduction)
  np.testing.assert_allclose(jax.jit(se)(ys, targets, mask), se(ys, targets, mask), rtol=1e-14)
  np.testing.assert_allclose(jax.jit(ce)(ys, labels, mask), ce(ys, labels, mask), rtol=1e-14)
  # d/dy of the squared error is 2 (y - ŷ) at valid steps, divided as the reduction divides.
  scale = {"sum": 1.0, "batch_mean": 1.0 / B, "mean": 1.0 / mask.sum()}[reduction]
  g = jax.grad(se)(jnp.asarray(ys), targets, mask)
  np.testing.assert_allclose(g, 2 * (ys - targets) * mask[..., None] * scale, rtol=1e-12)
  # d/dlogits of the cross-entropy is softmax - onehot at valid steps.
  g = jax.grad(ce)(jnp.asarray(ys), labels, mask)
  want = (jax.nn.softmax(ys, axis=-1) - jax.nn.one_hot(labels, O)) * mask[..., None] * scale
  np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-15)


def test_float32_losses_keep_their_dtype():
  ys, targets, labels, mask = _data((T, B), seed=6)
  ys32, t32 = ys.astype(np.float32), targets.astype(np.float32)
  assert jrnn.squared_error(ys32, t32, mask).dtype == jnp.float32
  assert jrnn.softmax_cross_entropy(ys32, labels, mask, reduction="mean").dtype == jnp.float32
  np.testing.assert_allclose(jrnn.squared_error(ys32, t32, mask),
                             jrnn.squared_error(ys, targets, mask), rtol=1e-5)
