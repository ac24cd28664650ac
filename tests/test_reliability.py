"""jrnn-train never loses a run: used --out, divergence, signals, torn metrics, bad checkpoints,
and one-line errors for every failure a user can reach (docs/reliability.md lists them)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jrnn.training import checkpoint, cli, loop

TINY = ["--hidden", "8", "--seq-len", "8", "--batch-size", "4", "--no-progress",
        "--sample-len", "0", "--layers", "1"]
SINE = TINY + ["--task", "sine", "--val-batch", "4", "--schedule", "constant", "--lr", "1e-2"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fail(capsys, argv):
  """Runs the CLI expecting a failure; returns its stderr (one line, status 2)."""
  with pytest.raises(SystemExit) as e:
    cli.train_from_args(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2, err
  assert err.count("\n") == 1 and err.startswith("jrnn-train: error: "), err
  return err


def _rows(out):
  with open(os.path.join(out, loop.METRICS_NAME), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _arrays(out):
  return load_file(os.path.join(out, loop.CKPT_NAME))


def test_used_out_refuses_then_overwrite(run_dir, tmp_path, capsys):
  out = str(tmp_path / "run")
  shutil.copytree(run_dir, out)
  before = _arrays(out)
  err = _fail(capsys, SINE + ["--steps", "2", "--out", out])
  assert f"--resume {out}" in err and "fresh --out" in err and "--overwrite" in err
  err = _fail(capsys, SINE + ["--steps", "2", "--hidden", "9", "--out", out])
  assert "another configuration: --hidden 8 (this run asks 9)" in err
  after = _arrays(out)  # the refused runs touched nothing
  assert all(np.array_equal(before[k], after[k]) for k in before)
  assert len(_rows(out)) == 3
  cli.train_from_args(SINE + ["--steps", "1", "--log-every", "1", "--out", out, "--overwrite"])
  assert [r["step"] for r in _rows(out)] == [1]


def test_out_is_a_file_unwritable_or_model_too_large(tmp_path, capsys):
  path = tmp_path / "file"
  path.write_text("x")
  assert "is a file, not a directory" in _fail(capsys, SINE + ["--out", str(path)])
  err = _fail(capsys, SINE + ["--out", str(path / "sub")])  # a directory under a file
  assert "Not a directory" in err or "exists" in err
  err = _fail(capsys, SINE + ["--out", "/proc/jrnn-cannot-write-here"])
  assert "jrnn-cannot-write-here" in err
  err = _fail(capsys, SINE + ["--hidden", "300000", "--out", str(tmp_path / "big")])
  assert "bytes per device" in err and "lower --hidden" in err
  assert not os.path.exists(tmp_path / "big")


def test_nan_at_step_k_stops_there_and_keeps_the_last_finite_checkpoint(tmp_path, capsys,
                                                                        monkeypatch):
  k = 3  # the 3rd update (batch index 2) sees NaN inputs; the run logs only every 5 steps
  real_make_task = loop.make_task

  def make_task(cfg, key):
    task = real_make_task(cfg, key)

    def batch(step):
      b = task.batch(step)
      return b._replace(xs=b.xs * np.nan) if step == k - 1 else b

    return task._replace(batch=batch)

  monkeypatch.setattr(loop, "make_task", make_task)
  out = str(tmp_path / "nan")
  err = _fail(capsys, SINE + ["--steps", "20", "--log-every", "5", "--out", out])
  assert f"diverged at step {k}: loss nan" in err and "--lr" in err and "--clip" in err
  assert checkpoint.load_metadata(os.path.join(out, loop.CKPT_NAME))["step"] == k - 1
  monkeypatch.undo()
  saved = _arrays(out)
  assert all(np.isfinite(a).all() for a in saved.values() if a.dtype.kind == "f")
  # The state on disk is that of a clean run stopped after k - 1 steps.
  clean = str(tmp_path / "clean")
  cli.train_from_args(SINE + ["--steps", str(k - 1), "--log-every", "5", "--out", clean])
  want = _arrays(clean)
  assert all(np.array_equal(saved[n], want[n]) for n in want)


def test_save_refuses_non_finite_arrays(tmp_path):
  path = str(tmp_path / "ck.safetensors")
  with pytest.raises(FloatingPointError, match=r"\['w'\] holds NaN or inf"):
    checkpoint.save(path, {"w": np.array([1.0, np.inf], np.float32)}, {"step": 1})
  assert not os.path.exists(path)


def test_metrics_after_a_crash_and_a_torn_line_equal_an_uninterrupted_run(run_dir, tmp_path,
                                                                          monkeypatch):
  crashed = str(tmp_path / "crashed")
  real_make_task = loop.make_task

  def make_task(cfg, key):
    task = real_make_task(cfg, key)

    def batch(step):
      if step == 5:  # after step 5 (1-based), whose checkpoint at step 4 holds step 4's loss
        raise RuntimeError("simulated crash")
      return task.batch(step)

    return task._replace(batch=batch)

  monkeypatch.setattr(loop, "make_task", make_task)
  with pytest.raises(RuntimeError, match="simulated crash"):
    cli.train_from_args(RUN + ["--out", crashed])
  monkeypatch.undo()
  with open(os.path.join(crashed, loop.METRICS_NAME), "a", encoding="utf-8") as f:
    f.write('{"step": 6, "train_lo')  # a crash in the middle of a write
  cli.train_from_args(["--resume", crashed, "--no-progress"])

  def strip(rows):
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in rows]

  assert strip(_rows(crashed)) == strip(_rows(run_dir))  # run_dir ran uninterrupted
  assert [r["step"] for r in _rows(crashed)] == [3, 6, 7]
  assert checkpoint.same_state(os.path.join(crashed, loop.CKPT_NAME),
                               os.path.join(run_dir, loop.CKPT_NAME))


def test_sigterm_in_process_saves_and_returns_143(tmp_path, monkeypatch, capsys):
  real_make_task = loop.make_task

  def make_task(cfg, key):
    task = real_make_task(cfg, key)

    def batch(step):
      if step == 3:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while step 4 is being dispatched
      return task.batch(step)

    return task._replace(batch=batch)

  monkeypatch.setattr(loop, "make_task", make_task)
  out = str(tmp_path / "term")
  before = signal.getsignal(signal.SIGTERM)
  assert cli.main(SINE + ["--steps", "50", "--log-every", "10", "--out", out]) == 143
  assert checkpoint.load_metadata(os.path.join(out, loop.CKPT_NAME))["step"] == 4
  assert f"jrnn-train --resume {out}" in capsys.readouterr().out
  assert signal.getsignal(signal.SIGTERM) is before  # the run's handler is gone again


def test_sigint_at_a_log_step_keeps_that_row_and_resumes_to_the_same_metrics(
    run_dir, tmp_path, monkeypatch):
  # The soak's flake: a signal caught in the iteration that ends at a log step stopped the run
  # before that step's row was written, so the resumed run lost the row and averaged the next
  # one over twice the steps (the checkpoint still equal). RUN logs at steps 3 and 6.
  real_make_task = loop.make_task

  def make_task(cfg, key):
    task = real_make_task(cfg, key)

    def batch(step):
      if step == 2:
        signal.raise_signal(signal.SIGINT)  # caught while step 3 (a log step) runs
      return task.batch(step)

    return task._replace(batch=batch)

  monkeypatch.setattr(loop, "make_task", make_task)
  out = str(tmp_path / "int")
  assert cli.main(RUN + ["--out", out]) == 130
  monkeypatch.undo()
  assert [r["step"] for r in _rows(out)] == [3]
  assert checkpoint.load_metadata(os.path.join(out, loop.CKPT_NAME))["pending_losses"] == []
  assert cli.main(["--resume", out, "--no-progress"]) == 0

  def strip(rows):
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in rows]

  assert strip(_rows(out)) == strip(_rows(run_dir))
  assert checkpoint.same_state(os.path.join(out, loop.CKPT_NAME),
                               os.path.join(run_dir, loop.CKPT_NAME))


@pytest.mark.slow
def test_soak_short_form_sigkill_and_sigint(tmp_path):
  """scripts/benchmarks/soak.py in small: a SIGKILL and a SIGINT (sent to the real process, which must
  checkpoint, print how to resume and exit 130), each resumed, end bit-identical to an
  uninterrupted run."""
  work = str(tmp_path / "soak")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "benchmarks", "soak.py"), "--steps",
                         "40", "--ckpt-every", "3", "--log-every", "4", "--kills", "2",
                         "--signals", "KILL,INT", "--max-delay", "0.3", "--work", work],
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["identical"] and summary["kills"] == 2 and summary["graceful_stops"] == 1


RUN = SINE + ["--steps", "7", "--log-every", "3", "--ckpt-every", "2"]


@pytest.fixture(name="run_dir", scope="module")
def _run_dir(tmp_path_factory):
  """An uninterrupted run of ``RUN``; tests copy it before changing anything."""
  out = str(tmp_path_factory.mktemp("ck") / "run")
  cli.train_from_args(RUN + ["--out", out])
  return out


def _corrupt_copy(run_dir, tmp_path, how):
  out = str(tmp_path / how)
  shutil.copytree(run_dir, out)
  path = os.path.join(out, loop.CKPT_NAME)
  with open(path, "rb") as f:
    data = bytearray(f.read())
  if how == "flipped":
    data[-5] ^= 0xFF  # a bit flip in the last array's bytes
  elif how == "truncated":
    data = data[:len(data) // 2]
  elif how == "foreign":
    data = b"this is not a checkpoint\n"
  with open(path, "wb") as f:
    f.write(bytes(data))
  if how == "other_safetensors":
    save_file({"a": np.zeros(2, np.float32)}, path)
  return out


@pytest.mark.parametrize("how,message", [
    ("flipped", "is corrupted: its contents do not match the sha256"),
    ("truncated", "is not a readable checkpoint"),
    ("foreign", "is not a readable checkpoint"),
    ("other_safetensors", "not a jrnn checkpoint"),
])
def test_corrupted_checkpoints_are_refused_in_one_line(run_dir, tmp_path, capsys, how, message):
  out = _corrupt_copy(run_dir, tmp_path, how)
  err = _fail(capsys, ["--resume", out, "--no-progress"])
  assert message in err and loop.CKPT_NAME in err
  assert "fresh run with a new --out" in err or "start a fresh run" in err


def test_checkpoint_of_another_run_is_detected_without_flags(run_dir, tmp_path, capsys):
  out = str(tmp_path / "mixed")
  shutil.copytree(run_dir, out)
  # A valid checkpoint (checksum and all) of the same model trained with another seed.
  path = os.path.join(out, loop.CKPT_NAME)
  cfg = loop.Config(**checkpoint.load_metadata(path)["config"])
  template = loop.initial_state(cfg, loop.make_task(cfg, jax.random.key(0)),
                                loop.make_optimizer(cfg))
  state, meta = checkpoint.load(path, template)
  meta["config"]["seed"] = 5
  checkpoint.save(path, state, meta)
  err = _fail(capsys, ["--resume", out, "--no-progress"])
  assert "belongs to another configuration" in err and "--seed 5 in the checkpoint, 0 in" in err


def test_resume_without_checkpoint_says_what_to_do(tmp_path, capsys):
  out = tmp_path / "early"
  out.mkdir()
  (out / loop.CONFIG_NAME).write_text("{}")
  err = _fail(capsys, ["--resume", str(out)])
  assert "stopped before its first checkpoint" in err and "--overwrite" in err


def test_damaged_middle_metrics_line_is_named(run_dir, tmp_path, capsys):
  out = str(tmp_path / "bad_metrics")
  shutil.copytree(run_dir, out)
  path = os.path.join(out, loop.METRICS_NAME)
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  with open(path, "w", encoding="utf-8") as f:
    f.write("garbage\n" + "\n".join(lines) + "\n")
  err = _fail(capsys, ["--resume", out, "--no-progress"])
  assert "line 1 is not a metrics row" in err


@pytest.mark.parametrize("flags,message", [
    (["--grad", "bogus"], "invalid choice"),
    (["--grad", "autodiff", "--kernel", "pallas"], "grad='autodiff' differentiates"),
    (["--num-processes", "0"], "--num-processes must be >= 1"),
    (["--coordinator", "nohostport"], "--coordinator must be HOST:PORT"),
])
def test_flag_errors_are_one_line(tmp_path, capsys, flags, message):
  argv = SINE + ["--steps", "1", "--out", str(tmp_path / "r")] + flags
  with pytest.raises(SystemExit) as e:
    cli.train_from_args(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2 and message in err and "Traceback" not in err
