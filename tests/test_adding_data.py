"""The adding problem's data, and a smoke test of scripts/experiments/adding_experiment.py."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

from jrnn.data import adding



@pytest.mark.slow
@pytest.mark.parametrize("seq_len", [2, 3, 17, 50])
def test_shapes_markers_and_targets(seq_len):
  batch = adding.batch(jax.random.key(0), 64, seq_len)
  assert batch.xs.shape == (seq_len, 64, 2) and batch.targets.shape == (64,)
  assert batch.xs.dtype == jnp.float32 and batch.targets.dtype == jnp.float32
  values, markers = np.asarray(batch.xs[..., 0]), np.asarray(batch.xs[..., 1])
  assert np.all((values >= 0) & (values <= 1))
  assert set(np.unique(markers)) <= {0.0, 1.0}
  half = seq_len // 2
  np.testing.assert_array_equal(markers[:half].sum(0), 1)  # one marker in the first half
  np.testing.assert_array_equal(markers[half:].sum(0), 1)  # one in the second
  for b in range(64):
    marked = values[markers[:, b] == 1, b]
    np.testing.assert_allclose(batch.targets[b], marked.sum(), rtol=1e-6)


@pytest.mark.slow
def test_deterministic_from_key_and_jittable():
  a = adding.batch(jax.random.key(1), 8, 20)
  b = adding.batch(jax.random.key(1), 8, 20)
  c = adding.batch(jax.random.key(2), 8, 20)
  np.testing.assert_array_equal(a.xs, b.xs)
  np.testing.assert_array_equal(a.targets, b.targets)
  assert not np.array_equal(a.xs, c.xs)
  d = jax.jit(adding.batch, static_argnums=(1, 2))(jax.random.key(1), 8, 20)
  np.testing.assert_array_equal(a.xs, d.xs)
  assert adding.batch(jax.random.key(1), 4, 6, dtype=jnp.float64).xs.dtype == jnp.float64


def test_mean_prediction_has_baseline_mse():
  batch = adding.batch(jax.random.key(3), 20000, 10, dtype=jnp.float64)
  mse = float(jnp.mean((batch.targets - 1.0) ** 2))
  assert abs(mse - adding.BASELINE_MSE) < 0.005  # standard error ≈ 0.0015 at this size
  marker_steps = np.argmax(np.asarray(batch.xs[:5, :, 1]), axis=0)
  assert len(np.unique(marker_steps)) == 5  # the first marker is spread over the first half


def test_bad_arguments():
  with pytest.raises(ValueError, match="seq_len must be an integer >= 2, got 1"):
    adding.batch(jax.random.key(0), 4, 1)
  with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
    adding.batch(jax.random.key(0), 0, 5)
  with pytest.raises(TypeError, match="dtype must be a floating dtype"):
    adding.batch(jax.random.key(0), 2, 5, dtype=jnp.int32)


@pytest.mark.slow
def test_adding_experiment_script_smoke(tmp_path):
  mod = helpers.load_script("adding_experiment")
  mod.main(["--out", str(tmp_path), "--lengths", "6", "--steps", "3", "--hidden", "4",
            "--batch", "4", "--test-size", "8", "--val-size", "6", "--seeds", "0", "5",
            "--eval-every", "2", "--inits", "irnn", "--clip-threshold", "1e-6", "--no-plot"])
  results = json.loads((tmp_path / "results.json").read_text())
  runs = results["runs"]
  assert len(runs) == 4  # clipping off/on × 2 seeds, one vmapped program
  assert [(r["clip"], r["seed"]) for r in runs] == [(False, 0), (False, 5), (True, 0), (True, 5)]
  for run in runs:
    assert run["steps"] == 3 and run["seq_len"] == 6
    assert run["curve"]["step"] == [2, 3]  # a chunk of 2, then the last step
    assert set(run["curve"]) == {"step", "val_mse", "train_mse", "max_grad_norm"}
    assert run["test_mse"] is None or run["test_mse"] >= 0
    assert run["val_mse"] == run["curve"]["val_mse"][-1]
  assert [c["seeds"] for c in results["cells"]] == [2, 2]
  # Clipping lives in each member's optimiser state: θ = 1e-6 clips every step of the clipped
  # runs, none of the others; a seed's two runs share init and data, so only clipping differs.
  assert [r["clipped_steps"] for r in runs] == [0, 0, 3, 3]
  assert runs[0]["curve"]["val_mse"][0] != runs[2]["curve"]["val_mse"][0]
  assert results["machine"]["model_name"] and set(results["data_sha256"]) == {
      "T=6/train_first_batches", "T=6/val", "T=6/test"}
  assert json.loads((tmp_path / "timing.json").read_text())["wall_s"] > 0
  table = (tmp_path / "results.md").read_text()
  assert "| T | init |" in table and "irnn" in table and "Machine:" in table
  # A second run into the same directory is refused before it trains; --overwrite allows it.
  with pytest.raises(SystemExit):
    mod.main(["--out", str(tmp_path), "--lengths", "6"])
  assert json.loads((tmp_path / "results.json").read_text()) == results


@pytest.mark.slow
def test_adding_experiment_clipping_on_only(tmp_path):
  results = helpers.load_script("adding_experiment").main([
      "--out", str(tmp_path), "--lengths", "6", "--steps", "2", "--hidden", "4", "--batch", "4",
      "--test-size", "8", "--val-size", "6", "--seeds", "0", "1", "--eval-every", "2",
      "--inits", "irnn", "--clipping", "on", "--no-plot"])
  assert [(r["clip"], r["seed"]) for r in results["runs"]] == [(True, 0), (True, 1)]


@pytest.mark.slow
def test_adding_experiment_quick_mode_is_reproducible(tmp_path):
  """The same command twice, on one and on two worker threads: the same results.json bytes."""
  # One init (not the three): two groups (one per T) still run at once on the two threads, and
  # each group is a compiled program of its own (the test's cost), so two instead of six.
  mod = helpers.load_script("adding_experiment")
  texts = []
  for workers in ("1", "2"):
    out = tmp_path / f"w{workers}"
    results = mod.main(["--out", str(out), "--quick", "--lengths", "10", "12", "--inits", "seed",
                        "--workers", workers])
    texts.append((out / "results.json").read_text())
  helpers.assert_same_results(*texts)
  assert len(results["runs"]) == 2 * 1 * 2 * 2  # lengths × inits × clipping × seeds
  assert results["command"] == ("python scripts/experiments/adding_experiment.py --quick "
                                "--lengths 10 12 --inits seed")
  assert (tmp_path / "w2" / "curves.png").stat().st_size > 0
