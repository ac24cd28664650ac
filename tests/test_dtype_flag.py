"""``jrnn-train --dtype float64``: the whole run in float64 (parameters, optimiser state, data,
gradient-flow records), resumable bit for bit; refused where it cannot work."""
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn.training import checkpoint, cli, loop
from jrnn.training.config import Config, check_config

SINE = ["--task", "sine", "--hidden", "6", "--seq-len", "8", "--batch-size", "4", "--val-batch",
        "4", "--schedule", "constant", "--lr", "1e-2", "--ema", "0.9", "--log-every", "2",
        "--ckpt-every", "2", "--no-progress", "--dtype", "float64"]


def _rows(out):
  with open(os.path.join(out, loop.METRICS_NAME), encoding="utf-8") as f:
    return [{k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "tokens_per_s")}
            for line in f]


def test_float64_run_resumed_equals_the_uninterrupted_one(tmp_path, monkeypatch):
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  cli.train_from_args(SINE + ["--steps", "7", "--out", straight])
  # Stopped by SIGINT after step 5 (one float64 loss pending since the log at step 4), resumed.
  real_make_task = loop.make_task

  def make_task(cfg, key):
    task = real_make_task(cfg, key)

    def batch(step):
      if step == 4:
        signal.raise_signal(signal.SIGINT)  # caught while step 5 runs
      return task.batch(step)

    return task._replace(batch=batch)

  monkeypatch.setattr(loop, "make_task", make_task)
  assert cli.main(SINE + ["--steps", "7", "--out", split]) == 130
  monkeypatch.undo()
  meta = checkpoint.load_metadata(os.path.join(split, loop.CKPT_NAME))
  assert meta["step"] == 5 and len(meta["pending_losses"]) == 1
  assert cli.main(["--resume", split, "--no-progress"]) == 0
  assert _rows(split) == _rows(straight)
  assert checkpoint.same_state(os.path.join(split, loop.CKPT_NAME),
                               os.path.join(straight, loop.CKPT_NAME))
  with open(os.path.join(straight, "config.json"), encoding="utf-8") as f:
    cfg = Config(**json.load(f)["config"])
  assert cfg.dtype == "float64"
  task = loop.make_task(cfg, jax.random.fold_in(jax.random.key(cfg.seed), 1))
  state, _ = checkpoint.load(os.path.join(straight, loop.CKPT_NAME),
                             loop.initial_state(cfg, task, loop.make_optimizer(cfg)))
  for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state, state.ema)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == np.float64
  assert task.batch(0).xs.dtype == np.float64  # the data too, not only the parameters


def test_float64_is_refused_without_64_bit_jax_and_by_the_sweep(tmp_path):
  with pytest.raises(ValueError, match=r"--dtype must be one of float32, float64; got 'float16'"):
    check_config(Config(dtype="float16"))
  with jax.enable_x64(False):
    with pytest.raises(ValueError, match="--dtype float64 needs JAX's 64-bit mode"):
      loop.run(Config(task="sine", hidden=4, steps=1, dtype="float64"), str(tmp_path / "a"),
               progress=False, log=lambda _: None)
  assert not os.path.exists(tmp_path / "a")  # refused before anything was written
  with pytest.raises(SystemExit) as e:
    cli.train_from_args(SINE + ["--steps", "2", "--sweep", "seed=0:2", "--out",
                                str(tmp_path / "s")])
  assert e.value.code == 2
