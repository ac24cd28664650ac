"""``jrnn-train --online {rtrl,uoro,snap1}``: online gradients on the streaming task (charlm).

The first update of exact RTRL equals BPTT's gradient on the same window, UORO and SnAp-1 are
reproducible, a run stopped and resumed equals one run (so the online state is checkpointed),
and the combinations that cannot run are refused in one line before training.
"""
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jrnn import online
from jrnn.training import checkpoint, cli, loop, sharding, tasks
from jrnn.training import steps as jtrain

TINY = ["--task", "charlm", "--layers", "1", "--hidden", "4", "--seq-len", "4",
        "--batch-size", "2", "--log-every", "1", "--ema", "0", "--sample-len", "0",
        "--no-progress"]
TIMING = ("elapsed_s", "tokens_per_s")


def _rows(out):
  with open(os.path.join(out, loop.METRICS_NAME), encoding="utf-8") as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def _arrays(out):
  return load_file(os.path.join(out, loop.CKPT_NAME))


def _config(argv):
  return cli.config_from_args(cli.build_parser().parse_args(argv))


def _fail(capsys, argv):
  with pytest.raises(SystemExit) as e:
    cli.train_from_args(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2, err
  assert err.count("\n") == 1 and err.startswith("jrnn-train: error: "), err
  return err


@pytest.mark.slow
def test_rtrl_first_update_is_bptt_gradient_and_later_ones_are_not_truncated(tmp_path):
  # SGD with lr 1 and no clipping: θ₁ = θ₀ - g. From h = 0 over one window, exact RTRL's
  # gradient of the window's mean loss is BPTT's (float32 here, hence rtol 1e-4 on θ₀ - θ₁).
  argv = TINY + ["--online", "rtrl", "--optimizer", "sgd", "--schedule", "constant",
                 "--lr", "1", "--clip", "0"]
  out = str(tmp_path / "rtrl")
  summary = cli.train_from_args(argv + ["--steps", "1", "--out", out])
  cfg = _config(argv + ["--steps", "1"])
  task = tasks.make_task(cfg, jax.random.fold_in(jax.random.key(cfg.seed), 1))
  p0 = loop.initial_state(cfg, task, loop.make_optimizer(cfg)).params
  loss = jtrain.sequence_loss("cross_entropy", one_hot=task.n_in)
  value, grads = jax.value_and_grad(lambda p: loss(p, task.batch(0))[0])(p0)
  got = jax.tree_util.tree_map(lambda a, b: a - b, p0, summary["state"].params)
  for name, g in grads._asdict().items():
    if g is not None:
      np.testing.assert_allclose(getattr(got, name), g, rtol=1e-4, atol=1e-6, err_msg=name)
  assert float(np.abs(grads.w_hh).max()) > 1e-3  # the recurrent gradient is not trivially 0
  rows = _rows(out)
  assert [r["step"] for r in rows] == [1]
  np.testing.assert_allclose(rows[0]["train_loss"], float(value), rtol=1e-5)
  assert np.isfinite(rows[0]["val_bpc"])
  with open(os.path.join(out, loop.CONFIG_NAME), encoding="utf-8") as f:
    saved = json.load(f)["config"]
  assert saved["online"] == "rtrl" and saved["online_every"] == 0

  # Two windows: the first update is the same as truncated BPTT's, the second is not, because
  # RTRL's influence carries the gradient back into the first window.
  runs = {}
  for method in ("rtrl", "none"):
    flags = [f if f != "rtrl" else method for f in argv]
    runs[method] = cli.train_from_args(flags + ["--steps", "2", "--out",
                                                str(tmp_path / f"two_{method}")])
  a, b = runs["rtrl"]["state"].params.w_hh, runs["none"]["state"].params.w_hh
  step1 = summary["state"].params.w_hh
  assert not np.allclose(a - step1, b - step1, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_uoro_is_reproducible_and_resume_equals_one_run(tmp_path, capsys):
  argv = TINY + ["--online", "uoro", "--online-every", "2", "--schedule", "constant",
                 "--lr", "1e-2", "--ckpt-every", "100"]
  whole, again, part = (str(tmp_path / n) for n in ("whole", "again", "part"))
  cli.train_from_args(argv + ["--steps", "4", "--out", whole])
  cli.train_from_args(argv + ["--steps", "4", "--out", again])
  cli.train_from_args(argv + ["--steps", "2", "--out", part])
  cli.train_from_args(["--resume", part, "--steps", "4", "--no-progress"])
  rows = _rows(whole)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_bpc"]) for r in rows)
  assert _rows(again) == rows and _rows(part) == rows
  ref = _arrays(whole)
  assert ".carry.theta_tilde.w_hh" in ref  # UORO's state is in the checkpoint
  assert np.abs(ref[".carry.h_tilde"]).max() > 0
  for other in (again, part):
    arrays = _arrays(other)
    assert sorted(arrays) == sorted(ref)
    for k, v in ref.items():
      np.testing.assert_array_equal(arrays[k], v, err_msg=k)
  # The online method is part of the run: resuming with another is refused.
  err = _fail(capsys, ["--resume", part, "--online", "snap1", "--no-progress"])
  assert "--online 'uoro' (this run asks 'snap1')" in err


@pytest.mark.slow
def test_snap1_is_reproducible_and_learns(tmp_path):
  argv = TINY + ["--online", "snap1", "--online-every", "1", "--lr", "3e-2", "--steps", "6"]
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  cli.train_from_args(argv + ["--out", a])
  cli.train_from_args(argv + ["--out", b])
  rows = _rows(a)
  assert _rows(b) == rows
  for k, v in _arrays(a).items():
    np.testing.assert_array_equal(_arrays(b)[k], v, err_msg=k)
  assert rows[-1]["val_bpc"] < rows[0]["val_bpc"]  # every = 1: 24 updates move it


@pytest.mark.slow
def test_nan_stops_at_that_step_and_keeps_the_last_finite_online_state(tmp_path, capsys,
                                                                      monkeypatch):
  # The window of step k (1-based) holds a NaN input: the guard keeps the state of step k - 1,
  # the run stops at the next log step naming step k, and the checkpoint equals a clean run's.
  k, real_make_task = 3, loop.make_task

  def patched(nan_at):
    def make_task(cfg, key):
      task = real_make_task(cfg, key)

      def batch(step):  # the tokens one-hot encoded here, so that a NaN fits in them
        b = task.batch(step)
        xs = jax.nn.one_hot(b.xs, task.n_in, dtype=jnp.float32)
        return b._replace(xs=xs * np.float32(np.nan) if step == nan_at else xs)

      return task._replace(batch=batch, one_hot=None)
    return make_task

  argv = TINY + ["--online", "snap1", "--schedule", "constant", "--log-every", "5"]
  monkeypatch.setattr(loop, "make_task", patched(k - 1))
  out = str(tmp_path / "nan")
  err = _fail(capsys, argv + ["--steps", "8", "--out", out])
  assert f"diverged at step {k}: loss nan" in err and "--lr" in err, err
  assert checkpoint.load_metadata(os.path.join(out, loop.CKPT_NAME))["step"] == k - 1
  monkeypatch.setattr(loop, "make_task", patched(-1))
  clean = str(tmp_path / "clean")
  cli.train_from_args(argv + ["--steps", str(k - 1), "--out", clean])
  saved, want = _arrays(out), _arrays(clean)
  assert ".carry.influence.w_hh" in want and sorted(saved) == sorted(want)
  for name, v in want.items():
    np.testing.assert_array_equal(saved[name], v, err_msg=name)


def test_rtrl_too_big_names_the_estimate_and_the_flag(tmp_path, capsys):
  argv = TINY + ["--online", "rtrl", "--steps", "1", "--online-max-bytes", "1000"]
  err = _fail(capsys, argv + ["--out", str(tmp_path)])
  cfg = _config(argv)
  task = tasks.make_task(cfg, jax.random.key(0))
  need = loop.online_state_bytes(cfg, task)
  h, v = 4, task.n_in
  # h (H,) and the influence H × P, P = H² + H·V + H, float32, for 2 streams.
  assert need == 2 * 4 * (h + h * (h * h + h * v + h))
  assert re.search(rf"needs about {need} bytes .* above --online-max-bytes=1000", err), err
  assert "raise --online-max-bytes (0: no limit)" in err and "snap1" in err
  assert not os.path.exists(tmp_path / loop.METRICS_NAME)


@pytest.mark.parametrize("flags,message", [
    (["--online", "rtrl", "--layers", "2"], "pass --layers 1"),
    (["--online", "uoro", "--online-every", "3"], "--online-every 3 must divide --seq-len 4"),
    (["--online", "snap1", "--task", "copy"], "--task copy is not one"),
    (["--online", "rtrl", "--dropout", "0.1"], "without dropout"),
    (["--online", "rtrl", "--grad", "autodiff"], "--grad autodiff (BPTT's choices) would be "
                                                 "ignored"),
    (["--online-every", "2"], "--online-every 2 applies only with --online"),
    (["--online", "rtrl", "--online-every=-1"], "--online-every must be >= 0"),
    (["--online", "bptt"], "invalid choice"),
])
def test_refusals_are_one_line_before_training(tmp_path, capsys, flags, message):
  err = _fail(capsys, TINY + ["--steps", "1", "--out", str(tmp_path)] + flags)
  assert message in err, err
  assert not os.path.exists(tmp_path / loop.METRICS_NAME)


def test_help_documents_the_flags():
  text = " ".join(cli.build_parser().format_help().split())
  assert "--online {none,rtrl,uoro,snap1}" in text
  assert "--online-every" in text and "--online-max-bytes" in text and "docs/online.md" in text


@pytest.mark.slow
def test_reset_starts_fresh_streams():
  # Where the stream restarts (a new epoch of charlm), the online state is that of fresh
  # streams: a step with reset equals the same step from init_streams' state without it.
  cfg = _config(TINY + ["--online", "uoro", "--steps", "2"])
  task = tasks.make_task(cfg, jax.random.key(1))
  optimizer = loop.make_optimizer(cfg)
  init = loop.initial_state(cfg, task, optimizer)
  mesh = sharding.data_mesh()
  step = loop.make_loop_step(task, optimizer, cfg, mesh)
  key = sharding.replicate(jax.random.fold_in(init.key, loop.ONLINE_KEY), mesh)

  def run(i, params, opt_state, carry, reset):
    # Placed as run() places them (one compiled program for every call); copies, since the
    # step donates its state.
    params, opt_state = sharding.replicate((params, opt_state), mesh)
    state = loop.TrainState(params, opt_state, sharding.shard_batch(carry, mesh, batch_axis=0),
                            None, sharding.replicate(np.int32(-1), mesh))
    return step(state, sharding.shard_batch(task.batch(i), mesh), np.int32(i), np.float32(0),
                np.bool_(reset), key)[0]

  s1 = run(0, init.params, init.opt_state, init.carry, True)
  assert np.abs(np.asarray(s1.carry.h)).max() > 0
  fresh = online.init_streams(loop.make_online_method(cfg, task), s1.params, cfg.batch_size)
  with_reset = run(1, s1.params, s1.opt_state, s1.carry, True)
  from_fresh = run(1, s1.params, s1.opt_state, fresh, False)
  carried = run(1, s1.params, s1.opt_state, s1.carry, False)
  for a, b in zip(jax.tree_util.tree_leaves(with_reset[:3]),
                  jax.tree_util.tree_leaves(from_fresh[:3])):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(with_reset.params.w_hh, carried.params.w_hh)
