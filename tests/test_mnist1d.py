"""The last-valid-step classification loss (always) and the MNIST-1D data (when installed)."""
import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

import jrnn
from jrnn.data import mnist1d
from jrnn.training import classification as cls

# find_spec, not mnist1d.available(): importing the package (and its plotting dependencies) at
# collection cost every xdist worker ~3 s, also when the worker runs none of these tests.
NEEDS_MNIST1D = pytest.mark.skipif(importlib.util.find_spec("mnist1d") is None,
                                   reason="mnist1d is not installed (pip install jrnn[mnist1d])")

F64 = jnp.float64
T, B, I, H, O = 7, 4, 3, 5, 6
LENGTHS = np.array([7, 3, 1, 0])


def _problem(garbage):
  """Sequences whose padded steps hold ``garbage`` (the loss must not see it)."""
  # NumPy draws: eager jax.random calls would compile op by op.
  rng = np.random.default_rng(0)
  params = jrnn.RNNParams(*(jnp.asarray(rng.normal(0, 0.5, shape)) for shape in
                            ((H, I), (H, H), (H,), (O, H))),
                          jnp.arange(O, dtype=F64) / 10)  # a length-0 sequence reads b_y
  xs = rng.normal(size=(T, B, I))
  valid = np.arange(T)[:, None] < LENGTHS[None, :]
  xs = np.where(valid[..., None], xs, garbage)
  labels = np.array([1, 5, 0, 2])
  return params, cls.LabelledBatch(jnp.asarray(xs), jnp.asarray(labels), jnp.asarray(LENGTHS))


def _reference_loss(params, batch):
  """Each sequence cut to its length and run alone, step by step with jrnn.step."""
  total = 0.0
  for b in range(B):
    h = jnp.zeros((H,), F64)
    for t in range(int(LENGTHS[b])):  # Python ints: the loop unrolls under jit
      h, _ = jrnn.step(params, h, batch.xs[t, b])
    z = params.w_hy @ h + params.b_y
    total += jax.nn.logsumexp(z) - z[batch.labels[b]]
  return total / B


_REFERENCE = jax.jit(jax.value_and_grad(_reference_loss))
_LOSS = cls.classification_loss(activation="tanh")


@pytest.mark.slow
def test_last_step_loss_respects_lengths():
  params, batch = _problem(garbage=0.0)
  _, noisy = _problem(garbage=1e3)
  value_and_grad = jax.jit(jax.value_and_grad(_LOSS))
  want_value, want_grads = _REFERENCE(params, batch)
  for b in (batch, noisy):
    value, grads = value_and_grad(params, b)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    for g, w in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want_grads)):
      np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)


@pytest.mark.slow  # eager: every primitive compiles on first use
def test_last_step_loss_without_jit():
  params, noisy = _problem(garbage=1e3)
  want, _ = _REFERENCE(params, _problem(garbage=0.0)[1])
  np.testing.assert_allclose(_LOSS(params, noisy), want, rtol=1e-12)


def test_logits_accuracy_and_full_length_default():
  params, batch = _problem(garbage=0.0)
  logits_fn = jax.jit(cls.last_step_logits)
  logits = logits_fn(params, batch.xs, lengths=batch.lengths)
  assert logits.shape == (B, O)
  np.testing.assert_allclose(logits[3], params.b_y, rtol=0, atol=0)  # length 0: h0 = 0
  full = logits_fn(params, batch.xs, lengths=jnp.full((B,), T))
  np.testing.assert_allclose(full[0], logits[0], rtol=1e-12)  # LENGTHS[0] == T
  want = np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(batch.labels))
  assert float(jax.jit(cls.accuracy)(params, batch)) == pytest.approx(want)
  stacked = jax.eval_shape(lambda: jrnn.init_stacked(jax.random.key(2), I, H, O, num_layers=2,
                                                      dtype=F64))
  shape = jax.eval_shape(cls.last_step_logits, stacked, batch.xs, lengths=batch.lengths).shape
  assert shape == (B, O)


def test_logits_bad_arguments():
  params, batch = _problem(garbage=0.0)
  with pytest.raises(ValueError, match=r"xs must be time-major with shape \(T, B, I\)"):
    cls.last_step_logits(params, batch.xs[:, 0])
  bi = jax.eval_shape(lambda: jrnn.init_stacked(jax.random.key(2), I, H, O, bidirectional=True,
                                                 dtype=F64))
  with pytest.raises(ValueError, match="unidirectional StackedParams with a readout"):
    cls.last_step_logits(bi, batch.xs)
  with pytest.raises(TypeError, match="params must be RNNParams or StackedParams"):
    cls.last_step_logits(params.layer, batch.xs)


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "mnist1d", None)  # makes `import mnist1d` fail
  assert not mnist1d.available()
  with pytest.raises(ImportError, match=r"pip install jrnn\[mnist1d\]"):
    mnist1d.load(cache_dir=tmp_path)


@pytest.mark.slow
def test_import_jrnn_does_not_import_mnist1d():
  code = ("import sys, jrnn; assert 'mnist1d' not in sys.modules; "
          "assert 'jrnn.data.mnist1d' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_train_batch_visits_each_example_once_per_epoch():
  x = jnp.arange(10 * 4, dtype=jnp.float32).reshape(10, 4)
  y = jnp.arange(10)
  key = jax.random.key(0)
  draw = jax.jit(mnist1d.train_batch, static_argnums=4)
  seen = [np.asarray(draw(key, k, x, y, 3)[1]) for k in range(3)]
  epoch = np.concatenate(seen)
  assert len(set(epoch.tolist())) == 9  # 3 batches of 3 from 10: one left out, none repeated
  assert not np.array_equal(np.asarray(draw(key, 3, x, y, 3)[1]), seen[0])  # a new epoch
  xs, labels = draw(key, 0, x, y, 3)
  assert xs.shape == (4, 3, 1)
  np.testing.assert_array_equal(xs[:, :, 0], np.asarray(x)[np.asarray(labels)].T)
  with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, N=10\]"):
    mnist1d.train_batch(key, 0, x, y, 11)


@NEEDS_MNIST1D
def test_generated_data(tmp_path):
  state = np.random.get_state()
  data = mnist1d.load(cache_dir=tmp_path)
  np.testing.assert_array_equal(np.random.get_state()[1], state[1])  # caller's RNG untouched
  assert data.x_train.shape == (mnist1d.N_TRAIN, mnist1d.SEQ_LEN)
  assert data.x_test.shape == (mnist1d.N_TEST, mnist1d.SEQ_LEN)
  assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
  assert set(np.unique(data.y_train)) == set(range(mnist1d.N_CLASSES))
  assert abs(float(np.concatenate([data.x_train, data.x_test]).std()) - 1.0) < 0.01
  cached = mnist1d.load(cache_dir=tmp_path)  # read back from the .npz, not regenerated
  for a, b in zip(data, cached):
    np.testing.assert_array_equal(a, b)
  seqs = mnist1d.sequences(data.x_test)
  assert seqs.shape == (mnist1d.SEQ_LEN, mnist1d.N_TEST, 1)
  np.testing.assert_array_equal(seqs[:, 5, 0], data.x_test[5])


@pytest.mark.slow
@NEEDS_MNIST1D
def test_mnist1d_experiment_quick_mode_is_reproducible(tmp_path):
  """Run twice (one and two worker threads): the same results.json, byte for byte."""
  mod = helpers.load_script("mnist1d_experiment")
  texts = []
  for workers in ("1", "2"):
    out = tmp_path / f"w{workers}"
    mod.main(["--out", str(out), "--quick", "--variants", "plain", "shuffled", "--workers",
              workers] + (["--no-plot"] if workers == "2" else []))
    texts.append((out / "results.json").read_text())
  helpers.assert_same_results(*texts)
  out = tmp_path / "w1"
  results = json.loads(texts[0])
  plain, shuffled = results["variants"]
  assert [s["seed"] for s in plain["seeds"]] == [0, 1]
  assert all(0 <= a <= 1 for a in plain["test_accuracy"] + plain["val_accuracy"])
  assert plain["seeds"][0]["curve"]["step"] == [10, 20]
  assert "test_accuracy" not in plain["seeds"][0]["curve"]  # the test set is read once
  # Provenance: the command without run-only flags, the commit, versions, one hash per split.
  assert results["command"] == ("python scripts/experiments/mnist1d_experiment.py --quick --variants plain "
                                "shuffled")
  assert results["versions"]["mnist1d"] and results["git"]["commit"]
  assert sorted(results["data_sha256"]) == sorted(f"{v}/{p}" for v in ("plain", "shuffled")
                                                  for p in ("train", "val", "test"))
  assert len(set(results["data_sha256"].values())) == 6
  timing = json.loads((out / "timing.json").read_text())
  assert "--workers 1" in timing["command"] and timing["wall_s"] > 0
  assert "| plain |" in (out / "results.md").read_text()
  assert (out / "curves.png").stat().st_size > 0
  with pytest.raises(SystemExit):  # a second run into the same --out is refused
    mod.main(["--out", str(out), "--quick"])


@pytest.mark.slow
@NEEDS_MNIST1D
def test_jrnn_train_task_mnist1d_logs_validation_accuracy(tmp_path):
  from jrnn.training import cli  # pylint: disable=import-outside-toplevel
  out = tmp_path / "run"
  cli.train_from_args(["--task", "mnist1d", "--layers", "1", "--hidden", "8", "--batch-size", "8",
                       "--steps", "3", "--log-every", "1", "--no-progress", "--out", str(out)])
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3]
  # val_accuracy: 500 validation sequences (a multiple of 1/500); no test score in the metrics.
  for r in rows:
    assert 0 <= r["val_accuracy"] <= 1 and abs(r["val_accuracy"] * 500 - round(
        r["val_accuracy"] * 500)) < 1e-3
    assert np.isfinite(r["train_loss"])
    assert not any(k.startswith("test") for k in r)
  # The test split is read once, at the end: 1,000 sequences.
  test = json.loads((out / "test.json").read_text())
  assert test["step"] == 3 and set(test) == {"step", "test_accuracy"}
  assert abs(test["test_accuracy"] * 1000 - round(test["test_accuracy"] * 1000)) < 1e-3


def _fake_data(n_train=40, n_test=10):
  rng = np.random.default_rng(0)
  return mnist1d.MNIST1D(rng.normal(size=(n_train, 40)).astype(np.float32),
                         np.arange(n_train, dtype=np.int32) % 10,
                         rng.normal(size=(n_test, 40)).astype(np.float32),
                         np.arange(n_test, dtype=np.int32) % 10)


def test_split_is_disjoint_complete_and_fixed_by_its_seed():
  data = _fake_data()
  s = mnist1d.split(data, n_val=7, seed=3)
  assert s.x_val.shape == (7, 40) and s.x_train.shape == (33, 40) and s.y_val.shape == (7,)
  # Rows are distinct random vectors: identify each by its first value.
  tr, va = set(s.x_train[:, 0].tolist()), set(s.x_val[:, 0].tolist())
  assert not tr & va and tr | va == set(data.x_train[:, 0].tolist())
  np.testing.assert_array_equal(s.x_test, data.x_test)  # the test split is untouched
  again = mnist1d.split(data, n_val=7, seed=3)
  for a, b in zip(s, again):
    np.testing.assert_array_equal(a, b)
  other = mnist1d.split(data, n_val=7, seed=4)
  assert set(other.x_val[:, 0].tolist()) != va
  # Labels travel with their rows.
  for x, y in ((s.x_train, s.y_train), (s.x_val, s.y_val)):
    idx = [int(np.flatnonzero(data.x_train[:, 0] == v)[0]) for v in x[:, 0]]
    np.testing.assert_array_equal(y, data.y_train[idx])


@pytest.mark.parametrize("kwargs, match", [(dict(n_val=0), "n_val"), (dict(n_val=40), "n_val"),
                                           (dict(n_val=True), "n_val"),
                                           (dict(n_val=7, seed=-1), "seed"),
                                           (dict(n_val=7, seed=1.5), "seed")])
def test_split_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mnist1d.split(_fake_data(), **kwargs)


@pytest.mark.slow
@NEEDS_MNIST1D
def test_generation_on_threads_gives_the_same_data():
  """make_dataset reseeds NumPy's global generator: two threads used to interleave draws."""
  import concurrent.futures  # pylint: disable=import-outside-toplevel
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    a, b = pool.map(lambda v: mnist1d.load(shuffle_seq=v), (False, True))
  np.testing.assert_array_equal(a.x_train, mnist1d.load().x_train)
  np.testing.assert_array_equal(b.x_train, mnist1d.load(shuffle_seq=True).x_train)
