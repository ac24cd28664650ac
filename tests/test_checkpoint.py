"""Checkpoints: round trip, atomic writes, mismatched configs, and bit-for-bit resume."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

import jrnn
from jrnn.training import checkpoint, cli, loop, optimizers


def _state(key=0, h=4):
  params = jrnn.init_params(jax.random.key(key), 3, h, 2, scheme="glorot", learn_h0=True)
  opt = optimizers.make_optimizer("adam", 1e-3, clip_norm=1.0)
  opt_state = opt.init(params)
  # Non-trivial optimiser moments, so the round trip cannot pass by returning zeros.
  opt_state = jax.tree_util.tree_map(lambda x: x + 0.5 if jnp.issubdtype(x.dtype, jnp.floating)
                                     else x + 3, opt_state)
  return {"params": params, "opt_state": opt_state, "key": jax.random.key(7 + key),
          "carry": jnp.arange(8.0).reshape(2, 4)}


def _assert_same(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(la, lb):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def test_round_trip(tmp_path):
  path = str(tmp_path / "ck.safetensors")
  state = _state()
  checkpoint.save(path, state, {"step": 12, "config": {"hidden": 4}})
  template = _state(key=1)  # same structure, other values
  loaded, meta = checkpoint.load(path, template)
  _assert_same(loaded, state)
  assert meta == {"step": 12, "config": {"hidden": 4}}
  assert checkpoint.load_metadata(path)["step"] == 12
  np.testing.assert_array_equal(jax.random.uniform(loaded["key"], (3,)),
                                jax.random.uniform(state["key"], (3,)))


def test_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
  path = str(tmp_path / "ck.safetensors")
  old = _state(0)
  checkpoint.save(path, old, {"step": 1})

  def crash(src, dst):
    raise OSError("simulated crash before the rename")

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(OSError, match="simulated crash"):
    checkpoint.save(path, _state(1), {"step": 2})
  monkeypatch.undo()
  loaded, meta = checkpoint.load(path, _state(2))
  _assert_same(loaded, old)
  assert meta["step"] == 1


def test_mismatched_template_fails(tmp_path):
  path = str(tmp_path / "ck.safetensors")
  checkpoint.save(path, _state(h=4), {"step": 0})
  with pytest.raises(ValueError, match=r"w_xh has shape \(4, 3\) .*expects \(5, 3\)"):
    checkpoint.load(path, _state(h=5))
  params_only = {"params": _state()["params"]}
  with pytest.raises(ValueError, match="holds arrays this configuration does not"):
    checkpoint.load(path, params_only)
  missing = dict(_state(), extra=jnp.zeros(2))
  with pytest.raises(ValueError, match=r"no array \['extra'\]"):
    checkpoint.load(path, missing)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    checkpoint.load(str(tmp_path / "none.safetensors"), params_only)


def test_not_a_jrnn_checkpoint(tmp_path):
  from safetensors.numpy import save_file
  path = str(tmp_path / "other.safetensors")
  save_file({"a": np.zeros(2, np.float32)}, path)
  with pytest.raises(ValueError, match="not a jrnn checkpoint"):
    checkpoint.load_metadata(path)


TINY = ["--hidden", "8", "--seq-len", "8", "--batch-size", "4", "--log-every", "2",
        "--ckpt-every", "3", "--no-progress", "--sample-len", "0", "--steps", "6",
        "--dropout", "0.1", "--ema", "0.9"]


def _final(out):
  with open(os.path.join(out, loop.CKPT_NAME), "rb") as f:
    return f.read()


@pytest.mark.slow
def test_resume_is_bit_for_bit(tmp_path, monkeypatch):
  straight = str(tmp_path / "straight")
  cli.train_from_args(TINY + ["--out", straight])

  # Interrupt a second run after step 4: its last checkpoint is step 3's.
  crashed = str(tmp_path / "crashed")
  helpers.train_crashing_at(monkeypatch, TINY + ["--out", crashed], 4)
  assert checkpoint.load_metadata(os.path.join(crashed, loop.CKPT_NAME))["step"] == 3

  summary = cli.train_from_args(["--resume", crashed, "--no-progress"])
  assert summary["step"] == 6
  # Same arrays and same metadata: the resumed run is the uninterrupted one.
  assert _final(crashed) != _final(straight)  # each directory has its own run id
  assert checkpoint.same_state(os.path.join(crashed, loop.CKPT_NAME),
                               os.path.join(straight, loop.CKPT_NAME))
  with open(os.path.join(crashed, loop.METRICS_NAME), encoding="utf-8") as f:
    assert [line.split(",")[0] for line in f] == ['{"step": 2', '{"step": 4', '{"step": 6']


@pytest.mark.slow
def test_resume_with_other_config_fails(tmp_path, capsys):
  out = str(tmp_path / "run")
  cli.train_from_args(TINY + ["--steps", "1", "--out", out])
  with pytest.raises(SystemExit):
    cli.train_from_args(["--resume", out, "--hidden", "16"])
  err = capsys.readouterr().err
  assert "--hidden 8 (this run asks 16)" in err and "Drop those flags" in err
  with pytest.raises(SystemExit):
    cli.train_from_args(["--resume", out, "--steps", "10"])  # cosine schedule spans --steps
  assert "--steps 1 (this run asks 10)" in capsys.readouterr().err
