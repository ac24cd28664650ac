"""Red-team probes of the ``jrnn-train`` surface: every bad input or broken run directory ends in
status 2 and one short line ``jrnn-train: error: ...`` naming the flag or file, and nothing is
lost (docs/reliability.md's fault table). One table: (label, setup, fragments); ``setup(tmp)``
prepares what it needs and returns the argv."""
import json
import os
import pathlib
import shutil
import socket
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from jrnn.parallel import SolverError
from jrnn.training import checkpoint, cli, loop

TINY = ["--hidden", "8", "--seq-len", "8", "--batch-size", "4", "--no-progress",
        "--sample-len", "0", "--layers", "1"]
SINE = TINY + ["--task", "sine", "--val-batch", "4", "--schedule", "constant", "--lr", "1e-2"]
# Logs at 3, 6, 7; checkpoints at 2, 4, 6 and 7: the final one is at step 7, pending [].
RUN = SINE + ["--steps", "7", "--log-every", "3", "--ckpt-every", "2"]
LONG_SOLVER_MESSAGE = ("parallel solver 'deer' did not reach tol=2e-05 within max_iter=100: 100 "
                       "iterations, relative residual 2.8e-05. Raise max_iter, try "
                       "method='elk' (damped) for unstable dynamics, pass "
                       "Solver(on_failure='fallback') " + "x" * 1500)


@pytest.fixture(name="runs", scope="module")
def _runs(tmp_path_factory):
  """Two finished runs of RUN: ``a`` and ``b`` (seed 0), and ``c`` with ``--seed 5``."""
  base = tmp_path_factory.mktemp("faults")
  out = {}
  for name, extra in (("a", []), ("b", []), ("c", ["--seed", "5"])):
    out[name] = str(base / name)
    cli.train_from_args(RUN + extra + ["--out", out[name]])
  return out


def _copy(runs, name, tmp):
  dst = str(tmp / f"copy_{name}")
  shutil.copytree(runs[name], dst)
  return dst


def _ckpt(d):
  return os.path.join(d, loop.CKPT_NAME)


def _resave(d, edit, *, digest=True):
  """Rewrites ``d``'s checkpoint with ``edit(metadata)`` applied, with a valid sha256 (or none)."""
  path = _ckpt(d)
  meta = checkpoint.load_metadata(path)
  cfg = loop.Config(**meta["config"])
  template = loop.initial_state(cfg, loop.make_task(cfg, jax.random.key(0)),
                                loop.make_optimizer(cfg))
  state, meta = checkpoint.load(path, template)
  edit(meta)
  checkpoint.save(path, state, meta)
  if not digest:  # a checkpoint as written before checksums: the same file without "sha256"
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    from safetensors.numpy import load_file, save_file  # pylint: disable=import-outside-toplevel
    with safe_open(path, framework="numpy") as f:
      header = json.loads(f.metadata()[checkpoint.META_KEY])
    del header["sha256"]
    save_file(load_file(path), path, metadata={checkpoint.META_KEY: json.dumps(header)})
  return d


def _set(key, value):
  return lambda meta: meta.__setitem__(key, value)


def _no_sha(runs, tmp):
  return ["--resume", _resave(_copy(runs, "a", tmp), lambda m: None, digest=False)]


def _unverified_step(step):
  def setup(runs, tmp):
    d = _resave(_copy(runs, "a", tmp), _set("step", step), digest=False)
    return ["--resume", d, "--allow-unverified-checkpoint", "--no-progress"]
  return setup


def _step(step):
  return lambda runs, tmp: ["--resume", _resave(_copy(runs, "a", tmp), _set("step", step)),
                            "--no-progress"]


def _pending(value):
  return lambda runs, tmp: ["--resume", _resave(_copy(runs, "a", tmp),
                                                _set("pending_losses", value)), "--no-progress"]


def _seed_digit_edited(runs, tmp):
  """One digit of the seed changed in the checksummed header, in place (same length)."""
  d = _copy(runs, "a", tmp)
  with open(_ckpt(d), "rb") as f:
    data = f.read()
  assert data.count(b'\\"seed\\": 0') == 1
  with open(_ckpt(d), "wb") as f:
    f.write(data.replace(b'\\"seed\\": 0', b'\\"seed\\": 5'))
  return ["--resume", d, "--no-progress"]


def _copied(files, source):
  def setup(runs, tmp):
    d = _copy(runs, "a", tmp)
    for name in files:
      shutil.copy(os.path.join(runs[source], name), os.path.join(d, name))
    return ["--resume", d, "--no-progress"]
  return setup


def _id_only_in_config(runs, tmp):
  d = _resave(_copy(runs, "a", tmp), lambda m: m.pop("run_id"))
  return ["--resume", d, "--no-progress"]


def _dead_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]  # nothing listens once the socket is closed


def _unreachable(runs, tmp):
  del runs
  return SINE + ["--out", str(tmp / "r"), "--coordinator", f"127.0.0.1:{_PORT}",
                 "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "0.5"]


_PORT = _dead_port()


def _no_mnist1d(runs, tmp, monkeypatch):
  del runs
  monkeypatch.setitem(sys.modules, "mnist1d", None)  # `import mnist1d` now raises ImportError
  monkeypatch.setitem(sys.modules, "mnist1d.data", None)
  return TINY + ["--task", "mnist1d", "--steps", "1", "--out", str(tmp / "m")]


def _solver_fails(how):
  """``loop.run`` failing as a real parallel solve does: eagerly, or in a host callback under
  jit (the runtime then re-raises it wrapped, with the callback's traceback in its text)."""
  def setup(runs, tmp, monkeypatch):
    del runs

    def run(*args, **kwargs):
      del args, kwargs
      if how == "eager":
        raise SolverError(LONG_SOLVER_MESSAGE)

      def fail(x):
        raise SolverError(LONG_SOLVER_MESSAGE)

      f = jax.jit(lambda x: jax.pure_callback(fail, jax.ShapeDtypeStruct((), jnp.bool_), x))
      return f(jnp.ones(())).block_until_ready()

    monkeypatch.setattr(loop, "run", run)
    return SINE + ["--solver", "deer", "--out", str(tmp / "s")]
  return setup


def _plain(flags):
  return lambda runs, tmp: SINE + ["--steps", "1", "--out", str(tmp / "p")] + flags


CASES = [
    # the command line
    ("out_empty", _plain(["--out", ""]), ["--out must name a directory, got ''"]),
    ("out_blank", _plain(["--out", "  "]), ["--out must name a directory"]),
    ("resume_empty", _plain(["--resume", ""]), ["--resume must name a directory"]),
    ("budget_nan", _plain(["--time-budget", "nan"]), ["--time-budget must be a finite", "nan"]),
    ("budget_inf", _plain(["--time-budget", "inf"]), ["--time-budget must be a finite", "inf"]),
    ("budget_negative", _plain(["--time-budget", "-1"]), ["--time-budget", ">= 0, got -1"]),
    ("budget_text", _plain(["--time-budget", "soon"]), ["--time-budget", "invalid float"]),
    ("coord_timeout_zero", _plain(["--coordinator-timeout", "0"]),
     ["--coordinator-timeout must be a positive number"]),
    ("coord_timeout_nan", _plain(["--coordinator-timeout", "nan"]),
     ["--coordinator-timeout must be a positive number"]),
    ("coord_timeout_alone", _plain(["--coordinator-timeout", "5"]),
     ["--coordinator-timeout applies only with --coordinator or --distributed"]),
    ("unverified_without_resume", _plain(["--allow-unverified-checkpoint"]),
     ["--allow-unverified-checkpoint applies only with --resume"]),
    ("coordinator_no_port", _plain(["--coordinator", "host:"]),
     ["--coordinator must be HOST:PORT"]),
    ("coordinator_no_host", _plain(["--coordinator", ":1234"]),
     ["--coordinator must be HOST:PORT"]),
    ("coordinator_unreachable", _unreachable,
     ["cannot reach the coordinator at host 127.0.0.1 port", "within 0.5 s",
      "--coordinator-timeout"]),
    ("mnist1d_missing", _no_mnist1d,
     ["--task mnist1d needs the optional package 'mnist1d'", 'pip install "jrnn[mnist1d]"']),
    ("solver_fails_eagerly", _solver_fails("eager"),
     ["--solver deer: the parallel solve failed", "did not reach tol=2e-05",
      "--solver sequential"]),
    ("solver_fails_in_callback", _solver_fails("callback"),
     ["--solver deer: the parallel solve failed", "did not reach tol=2e-05",
      "--solver sequential"]),
    # resume
    ("no_sha256", _no_sha, ["has no sha256", "--allow-unverified-checkpoint"]),
    ("step_negative", _unverified_step(-1), ["its step must be an integer >= 0, got -1"]),
    ("step_bool", _unverified_step(True), ["its step must be an integer >= 0, got True"]),
    ("step_behind_metrics", _step(3),
     ["(step 3, last logged step 3) does not match", "the checkpoint recorded"]),
    ("step_zero", _step(0), ["(step 0, last logged step 0) does not match",
                             "it has no row at or before step 0"]),
    ("step_between_log_steps", _step(5),
     ["(step 5, last logged step 5) does not match", "last row at or before step 5 is step 3"]),
    ("pending_too_long", _pending([1.0] * 8), ["pending_losses must be at most step=7 finite"]),
    ("pending_nan", _pending([float("nan")]), ["pending_losses must be at most"]),
    ("pending_text", _pending(["1.0"]), ["pending_losses must be at most"]),
    ("pending_not_list", _pending(3), ["pending_losses must be at most"]),
    ("pending_shifts_log_step", _pending([1.0]), ["(step 7, last logged step 6) does not match"]),
    ("seed_digit_edited", _seed_digit_edited,
     ["is corrupted: its contents do not match the sha256"]),
    ("checkpoint_and_config_of_another_seed", _copied([loop.CKPT_NAME, loop.CONFIG_NAME], "c"),
     ["does not match", "has train_loss", "come from another run"]),
    ("checkpoint_of_an_identical_run", _copied([loop.CKPT_NAME], "b"),
     ["belongs to another run than the one in", "run id", "copied from another run"]),
    ("checkpoint_without_run_id", _id_only_in_config, ["belongs to another run", "run id None"]),
]


def _files(d):
  return {n: pathlib.Path(d, n).read_bytes() for n in loop.RUN_FILES}


@pytest.mark.slow
@pytest.mark.parametrize("label,setup,fragments", CASES, ids=[c[0] for c in CASES])
def test_cli_fault_is_one_line_with_status_2(runs, tmp_path, capsys, monkeypatch, label, setup,
                                             fragments):
  del label
  needs_patch = setup.__code__.co_argcount == 3
  argv = setup(runs, tmp_path, monkeypatch) if needs_patch else setup(runs, tmp_path)
  resumed = argv[argv.index("--resume") + 1] if "--resume" in argv else None
  before = _files(resumed) if resumed and os.path.isdir(resumed) else None
  capsys.readouterr()
  t0 = time.monotonic()
  with pytest.raises(SystemExit) as e:
    cli.train_from_args(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2, err
  assert err.startswith("jrnn-train: error: ") and err.count("\n") == 1, err
  assert len(err.replace(str(tmp_path), "DIR")) < 400 and "Traceback" not in err, err
  for fragment in fragments:
    assert fragment in err, (fragment, err)
  assert time.monotonic() - t0 < 30
  if before is not None:  # a refused resume touches nothing
    assert before == _files(resumed)


def test_unverified_checkpoint_resumes_when_asked_by_name(runs, tmp_path):
  d = _resave(_copy(runs, "a", tmp_path), lambda m: None, digest=False)
  summary = cli.train_from_args(["--resume", d, "--steps", "9", "--allow-unverified-checkpoint",
                                 "--no-progress"])
  assert summary["step"] == 9
  assert "sha256" in json.loads(_header_text(_ckpt(d)))  # written again with its digest


def _header_text(path):
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  with safe_open(path, framework="numpy") as f:
    return f.metadata()[checkpoint.META_KEY]


def test_run_id_is_written_once_and_kept_on_resume(runs, tmp_path):
  ids = {name: checkpoint.load_metadata(_ckpt(d))["run_id"] for name, d in runs.items()}
  assert len(set(ids.values())) == 3 and all(len(i) == 32 for i in ids.values())
  with open(os.path.join(runs["a"], loop.CONFIG_NAME), encoding="utf-8") as f:
    assert json.load(f)["run_id"] == ids["a"]
  with open(os.path.join(runs["a"], loop.METRICS_NAME), encoding="utf-8") as f:
    assert "run_id" not in f.read()  # an identity, not a metric
  d = _copy(runs, "a", tmp_path)
  cli.train_from_args(["--resume", d, "--steps", "9", "--no-progress"])
  assert checkpoint.load_metadata(_ckpt(d))["run_id"] == ids["a"]


def test_run_made_before_run_ids_resumes_and_gets_one(runs, tmp_path):
  d = _resave(_copy(runs, "a", tmp_path), lambda m: m.pop("run_id"))
  path = os.path.join(d, loop.CONFIG_NAME)
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  del saved["run_id"]
  with open(path, "w", encoding="utf-8") as f:
    json.dump(saved, f)
  cli.train_from_args(["--resume", d, "--steps", "9", "--no-progress"])
  new = checkpoint.load_metadata(_ckpt(d))["run_id"]
  with open(path, encoding="utf-8") as f:
    assert len(new) == 32 and json.load(f)["run_id"] == new


def test_step_past_steps_names_the_flag(runs, tmp_path, capsys):
  d = _copy(runs, "a", tmp_path)
  with pytest.raises(SystemExit):
    cli.train_from_args(["--resume", d, "--steps", "5", "--no-progress"])
  assert "past --steps=5; raise --steps" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.shipped_xla
def test_real_failed_deer_solve_is_one_line(tmp_path, capsys):
  """The reproduction: plain SGD at lr 5 makes the Newton (DEER) solve stall within a few steps."""
  argv = ["--task", "sine", "--solver", "deer", "--hidden", "8", "--layers", "1", "--seq-len",
          "64", "--batch-size", "4", "--val-batch", "4", "--steps", "6", "--log-every", "3",
          "--lr", "5", "--clip", "0", "--optimizer", "sgd", "--schedule", "constant",
          "--no-progress", "--sample-len", "0", "--out", str(tmp_path / "deer")]
  with pytest.raises(SystemExit) as e:
    cli.train_from_args(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.count("\n") == 1 and len(err) < 420, err
  assert "--solver deer: the parallel solve failed" in err and "--solver sequential" in err


def test_coordinator_timeout_reaches_jax(monkeypatch):
  """Process 0 is the coordinator (no socket check); JAX gets the timeout in whole seconds."""
  from jrnn.training import distributed  # pylint: disable=import-outside-toplevel
  seen = {}

  def fake(coordinator_address=None, num_processes=None, process_id=None,
           initialization_timeout=300):
    seen.update(process_id=process_id, initialization_timeout=initialization_timeout)
    del coordinator_address, num_processes

  monkeypatch.setattr(jax.distributed, "initialize", fake)
  distributed.initialize("127.0.0.1:1", 2, 0, timeout=7.5)
  assert seen["initialization_timeout"] == 8 and seen["process_id"] == 0
  with pytest.raises(ValueError, match="--coordinator-timeout must be a positive number"):
    distributed.initialize("127.0.0.1:1", 2, 0, timeout=float("inf"))
