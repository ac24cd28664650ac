"""The task data modules: shapes, determinism, split disjointness, and sampling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.data import charlm, copy_task, sine
from jrnn.training.sample import sample_tokens


@pytest.fixture(scope="module")
def corpus():
  return charlm.load()


def test_charlm_corpus_and_split(corpus):
  text = charlm.load_text()
  assert len(corpus.vocab.chars) == len(set(text))
  assert list(corpus.vocab.chars) == sorted(set(text))
  tokens = charlm.encode(corpus.vocab, text)
  # The split is the two contiguous halves of one stream: disjoint and covering it.
  np.testing.assert_array_equal(np.concatenate([corpus.train, corpus.val]), tokens)
  assert len(corpus.val) == round(0.1 * len(text))
  assert charlm.decode(corpus.vocab, corpus.val[:50]) == text[len(corpus.train):][:50]
  again = charlm.load()
  assert again.vocab == corpus.vocab
  np.testing.assert_array_equal(again.train, corpus.train)


def test_charlm_windows_continue_the_streams(corpus):
  rows = charlm.streams(corpus.train, 4)
  assert rows.shape == (4, len(corpus.train) // 4)
  np.testing.assert_array_equal(rows[1], corpus.train[rows.shape[1]:2 * rows.shape[1]])
  x0, y0 = charlm.window(rows, 0, 7)
  x1, _ = charlm.window(rows, 1, 7)
  assert x0.shape == y0.shape == (7, 4) and x0.dtype == np.int32
  np.testing.assert_array_equal(y0[:-1], x0[1:])  # targets are the next characters
  np.testing.assert_array_equal(x1[0], y0[-1])  # window k + 1 continues window k
  np.testing.assert_array_equal(x0[:, 2], rows[2, :7])
  assert charlm.num_windows(rows, 7) == (rows.shape[1] - 1) // 7


def test_charlm_bad_input(corpus):
  with pytest.raises(ValueError, match="not in the vocabulary"):
    charlm.encode(charlm.Vocab("ab"), "abc")
  with pytest.raises(ValueError, match="val_fraction"):
    charlm.split(corpus.train, 1.5)
  with pytest.raises(ValueError, match="seq_len"):
    charlm.num_windows(charlm.streams(corpus.train, 4), 0)
  with pytest.raises(ValueError, match="too short"):
    charlm.num_windows(charlm.streams(corpus.train[:40], 4), 20)
  assert charlm.bits_per_char(np.log(2.0)) == pytest.approx(1.0)


def test_copy_task_layout():
  key = jax.random.key(3)
  n_sym, length, delay, b = 5, 4, 3, 6
  bt = copy_task.batch(key, b, n_symbols=n_sym, length=length, delay=delay)
  t = copy_task.num_steps(length, delay)
  assert bt.xs.shape == (t, b, n_sym + 2) and bt.targets.shape == bt.mask.shape == (t, b)
  np.testing.assert_array_equal(jnp.sum(bt.xs, -1), 1.0)  # one-hot
  inputs = np.argmax(bt.xs, -1)
  # The answer steps reproduce the symbols read at the start; only they are scored.
  np.testing.assert_array_equal(bt.targets[bt.mask].reshape(length, b), inputs[:length])
  assert np.all(np.asarray(bt.mask).sum(0) == length)
  assert np.all(inputs[length + delay] == n_sym + 1)  # go
  assert np.all(inputs[length:length + delay] == n_sym)  # blank
  assert np.all(inputs[:length] < n_sym)
  again = copy_task.batch(key, b, n_symbols=n_sym, length=length, delay=delay)
  np.testing.assert_array_equal(again.xs, bt.xs)
  train_key, val_key = copy_task.split_keys(key)
  tr = copy_task.batch(train_key, 64, length=8)
  va = copy_task.batch(val_key, 64, length=8)
  seqs = lambda x: {tuple(c) for c in np.argmax(np.asarray(x.xs), -1)[:8].T.tolist()}  # noqa: E731
  assert not seqs(tr) & seqs(va)
  with pytest.raises(ValueError, match="n_symbols"):
    copy_task.batch(key, 2, n_symbols=1)


def test_sine_task():
  key = jax.random.key(0)
  bt = sine.batch(key, 5, 12, freq_range=(0.05, 0.05), amp_range=(1.0, 1.0))
  assert bt.xs.shape == bt.targets.shape == (12, 5, 1)
  np.testing.assert_array_equal(bt.targets[:-1], bt.xs[1:])
  # Each column is sin(2π f t + φ) with the drawn phase.
  phase = np.arcsin(np.clip(np.asarray(bt.xs[0, :, 0], np.float64), -1, 1))
  got = np.asarray(bt.xs[:, :, 0], np.float64)
  assert np.max(np.abs(got)) <= 1.0 + 1e-6
  np.testing.assert_allclose(got[0], np.sin(phase), atol=1e-6)
  np.testing.assert_array_equal(sine.batch(key, 5, 12).xs, sine.batch(key, 5, 12).xs)
  tr_key, va_key = sine.split_keys(key)
  assert not np.allclose(sine.batch(tr_key, 5, 12).xs, sine.batch(va_key, 5, 12).xs)
  with pytest.raises(ValueError, match="seq_len"):
    sine.batch(key, 2, 0)
  with pytest.raises(ValueError, match="freq_range"):
    sine.batch(key, 2, 3, freq_range=(0.0, 0.1))


def _tiny_lm(key, v=7, h=5):
  return jrnn.init_params(key, v, h, v, scheme="glorot", dtype=jnp.float64)


def test_sample_low_temperature_is_greedy():
  params = _tiny_lm(jax.random.key(1))
  prime = jnp.asarray([1, 2, 3], jnp.int32)
  got = sample_tokens(params, jax.random.key(5), prime, 6, temperature=1e-4)
  # The greedy chain, stepped in a Python loop.
  h = jnp.zeros(5)
  for c in prime:
    h, y = jrnn.step(params, h, jax.nn.one_hot(c, 7, dtype=jnp.float64))
  want = []
  for _ in range(6):
    c = int(jnp.argmax(y))
    want.append(c)
    h, y = jrnn.step(params, h, jax.nn.one_hot(c, 7, dtype=jnp.float64))
  assert got.shape == (6,)
  np.testing.assert_array_equal(got, want)


def test_sample_temperature_and_bad_input():
  params = _tiny_lm(jax.random.key(2))
  prime = jnp.asarray([0], jnp.int32)
  a = sample_tokens(params, jax.random.key(0), prime, 200, temperature=1.0)
  b = sample_tokens(params, jax.random.key(0), prime, 200, temperature=1.0)
  np.testing.assert_array_equal(a, b)
  assert 0 <= int(a.min()) and int(a.max()) < 7
  assert len(set(np.asarray(a).tolist())) > 1
  with pytest.raises(ValueError, match="temperature"):
    sample_tokens(params, jax.random.key(0), prime, 3, temperature=0.0)
  with pytest.raises(ValueError, match="prime"):
    sample_tokens(params, jax.random.key(0), jnp.zeros((0,), jnp.int32), 3)
  with pytest.raises(ValueError, match="I == O"):
    sample_tokens(jrnn.init_params(jax.random.key(0), 3, 4, 5), jax.random.key(0), prime, 3)


@pytest.mark.slow
def test_sample_stacked_low_temperature_is_greedy():
  v = 6
  params = jrnn.init_stacked(jax.random.key(4), v, 5, v, num_layers=2, scheme="glorot",
                             dtype=jnp.float64)
  prime = jnp.asarray([2, 0], jnp.int32)
  got = sample_tokens(params, jax.random.key(1), prime, 5, temperature=1e-4)
  seq = [int(c) for c in prime]
  for _ in range(5):  # greedy by re-running the whole sequence each time
    ys = jrnn.stacked_forward(params, jax.nn.one_hot(jnp.asarray(seq), v, dtype=jnp.float64)).ys
    seq.append(int(jnp.argmax(ys[-1])))
  np.testing.assert_array_equal(got, seq[2:])
