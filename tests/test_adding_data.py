"""The adding problem's data, and a smoke test of scripts/adding_experiment.py."""
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn.data import adding

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


def test_adding_experiment_script_smoke(tmp_path):
  spec = importlib.util.spec_from_file_location(
      "adding_experiment", ROOT / "scripts" / "adding_experiment.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  mod.main(["--out", str(tmp_path), "--lengths", "6", "--steps", "3", "--hidden", "4",
            "--batch", "4", "--test-size", "8", "--seeds", "0", "--log-every", "2",
            "--inits", "irnn"])
  results = json.loads((tmp_path / "results.json").read_text())
  assert len(results["runs"]) == 2  # clipping on/off × 1 init × 1 length × 1 seed
  assert [r["clip"] for r in results["runs"]] == [False, True]
  for run in results["runs"]:
    assert run["steps"] == 3 and run["seed"] == 0 and run["seq_len"] == 6
    assert run["test_mse"] is None or run["test_mse"] >= 0
  table = (tmp_path / "results.md").read_text()
  assert "| T |" in table and "irnn" in table
