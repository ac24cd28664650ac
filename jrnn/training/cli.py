"""``jrnn-train``: the training job (``python scripts/train.py`` runs the same ``main``).

With no arguments it trains a character-level language model on ``pydoc_data.topics`` (see
:mod:`jrnn.data.charlm`) with truncated BPTT over carried state, prints the validation bits per
character as it goes and a sample at the end. ``--task`` picks a task of
:mod:`jrnn.training.tasks`; ``jrnn-train --help`` lists every flag.

Writes to ``--out DIR`` (default ``runs/<task>``; a directory that already holds a run is
refused unless ``--overwrite``):

* ``metrics.jsonl``: one JSON object per logged step (``step``, ``train_loss``, the validation
  metric — ``val_bpc``, ``val_accuracy``, ``val_mse`` — ``elapsed_s``, ``tokens_per_s``);
* ``checkpoint.safetensors``: params, optimiser state, carried state, PRNG key, step, data
  position and config (:mod:`jrnn.training.checkpoint`), every ``--ckpt-every`` steps, on
  SIGINT/SIGTERM and at the end;
* ``config.json``: the run's config; ``loss.png``: the training loss and validation metric;
* ``diagnostics.jsonl`` with ``--diagnose-every N``: gradient flow every ``N`` steps
  (:mod:`jrnn.training.flow`); ``sample.txt``: the char-LM's sample at the end.

``jrnn-report DIR`` (:mod:`jrnn.training.run_report`) turns a run directory into one
self-contained HTML page with its figures.

``--resume DIR`` continues from ``DIR/checkpoint.safetensors`` with that run's config (flags
may change only ``--steps`` of a constant-rate run and the logging/output flags) and reaches
the same parameters and metrics as an uninterrupted run (:mod:`jrnn.training.loop`).

Exit status: 0 when done; 2 with one line ``jrnn-train: error: ...`` for any failure (bad
flags, unusable ``--out`` or checkpoint, a model too large for memory, divergence, a missing
optional package, a parallel solve that fails, an unreachable ``--coordinator``); 130 or 143
after SIGINT or SIGTERM, once the checkpoint is saved.

A checkpoint must carry its sha256 and belong to the run in its directory (the run id in
``config.json`` and in the checkpoint, a step that agrees with ``metrics.jsonl``);
``--allow-unverified-checkpoint`` accepts one written without a sha256.

Sweeps: ``--sweep "lr=1e-3,3e-3;seed=0:5"`` trains every configuration of the grid as one
compiled program (:mod:`jrnn.training.sweep_run`; axes separated by ``;``, values by ``,``,
``a:b`` an integer range ``a..b-1``) and writes ``sweep.json``, ``sweep.md``,
``sweep_metrics.jsonl``, ``sweep.png`` and its checkpoint; ``--resume DIR`` continues a sweep.

Online gradients: on the streaming task (charlm), ``--online rtrl|uoro|snap1`` replaces
truncated BPTT over each window by one of :mod:`jrnn.online`'s methods, which carry the
influence of the parameters on the state across windows and update the parameters every
``--online-every`` steps (``--layers 1``; exact RTRL is refused above ``--online-max-bytes``).
See docs/online.md.

Several processes: ``--coordinator HOST:PORT --num-processes N --process-id I`` (or
``--distributed`` to take them from the cluster's environment) join ``jax.distributed``
before anything else; a process other than 0 that cannot reach the coordinator within
``--coordinator-timeout`` seconds (default 20) stops with an error naming its host and port.
See the README's "Several hosts" section.

The default configuration was tuned for validation bits per character within a few CPU
minutes. The corpus is small (418k training characters), so every model over-fits it after a
few epochs; what helped most, in order: a running average of the parameters for evaluation
(``--ema``, about -0.1 bpc), two stacked Elman layers instead of one (about -0.1 bpc at the same
step count), and small batches (more updates per epoch). Weight decay and readout dropout
did not help within the budget; wider single layers (384, 512) over-fit sooner.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import sys
from typing import Any, Dict, Optional, Sequence

import jax

from jrnn.parallel import SolverError
from jrnn.training import checkpoint, distributed, loop, sweep, sweep_run
from jrnn.training.config import HELP, Config, choices, flag

_DISTRIBUTED_FLAGS = ("coordinator", "num_processes", "process_id", "distributed")


class _Parser(argparse.ArgumentParser):
  """argparse with its errors on one line (no usage block): ``jrnn-train: error: ...``."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
  """The flags: one per :class:`Config` field, then the run's own (``--out``, ``--resume``…).

  Choices (tasks, solvers, kernels…) are read now, so ones registered after import count."""
  p = _Parser(
    prog="jrnn-train",
    description="Train an Elman RNN with jrnn. With no flags: the "
    "character-level language model on pydoc_data.topics, in under 5 minutes on 2 CPU "
    "cores.",
    argument_default=argparse.SUPPRESS,
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  d, allowed = Config(), choices()
  for field in dataclasses.fields(Config):
    default = getattr(d, field.name)
    text = HELP.get(field.name)
    kwargs: Dict[str, Any] = {
      "type": type(default),
      "help": f"{text} (default {default})" if text else f"(default {default})",
    }
    if field.name in allowed:
      kwargs["choices"] = tuple(allowed[field.name])
    p.add_argument(flag(field.name), dest=field.name, **kwargs)
  p.add_argument("--out", help="output directory (default runs/<task>, or the --resume DIR)")
  p.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR")
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="replace the run already in --out (its checkpoint and metrics are lost)",
  )
  p.add_argument(
    "--time-budget",
    type=float,
    metavar="SECONDS",
    help="stop (and checkpoint) at the first log step after this many seconds",
  )
  p.add_argument(
    "--sweep",
    metavar="SPEC",
    help="train a grid of configurations as one compiled program, e.g. "
    "'lr=1e-3,3e-3;seed=0:5': axes separated by ';', values by ',', a:b an integer range "
    "(a..b-1); axes: seed, lr, init_scale, clip, weight_decay. Writes sweep.json, sweep.md, "
    "sweep_metrics.jsonl, sweep.png and a checkpoint into --out (default runs/<task>-sweep); "
    "--resume DIR continues a sweep",
  )
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument(
    checkpoint.UNVERIFIED_FLAG,
    action="store_true",
    help="with --resume: accept a checkpoint that has no sha256 (written before "
    "checksums existed); nothing then detects a corrupted or edited file",
  )
  g = p.add_argument_group("several processes (jax.distributed)")
  g.add_argument(
    "--coordinator", metavar="HOST:PORT", help="address of process 0, which coordinates the group"
  )
  g.add_argument("--num-processes", type=int, metavar="N", help="processes in the group")
  g.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 to N-1")
  g.add_argument(
    "--coordinator-timeout",
    type=float,
    metavar="SECONDS",
    help="how long to wait for the coordinator and the group to form (default "
    f"{distributed.DEFAULT_TIMEOUT:g})",
  )
  g.add_argument(
    "--distributed",
    action="store_true",
    help="join the group the cluster's environment describes (SLURM, Open MPI, "
    "JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID)",
  )
  return p


def config_from_args(args: argparse.Namespace) -> Config:
  """Flags given override the defaults, or with ``--resume`` the checkpoint's config."""
  given = {
    f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)
  }
  base = dataclasses.asdict(Config())
  resume = getattr(args, "resume", None)
  if resume is not None:
    path = os.path.join(resume, loop.CKPT_NAME)
    if not os.path.exists(path):
      loop.check_resumable(Config(), resume)  # raises the message that fits the directory
    # Verified first: an edited config is reported as a modified file, not taken as the run's.
    saved = checkpoint.verify(
      path, allow_unverified=getattr(args, "allow_unverified_checkpoint", False)
    ).get("config")
    if not isinstance(saved, dict):
      raise checkpoint.CheckpointError(
        f"{path} has no config in its metadata: it was not written by jrnn-train"
      )
    base.update(saved)
  base.update(given)
  names = {f.name for f in dataclasses.fields(Config)}
  unknown = sorted(set(base) - names)
  if unknown:
    raise ValueError(
      f"checkpoint config has unknown fields {unknown}: it was written by "
      "another version of jrnn-train"
    )
  return Config(**base)


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return text or type(e).__name__


def _check_run_flags(args: argparse.Namespace) -> None:
  """The checks of the flags that are not :class:`Config` fields."""
  for name in ("out", "resume"):
    value = getattr(args, name, None)
    if value is not None and not value.strip():
      raise ValueError(f"--{name} must name a directory, got {value!r}")
  budget = getattr(args, "time_budget", None)
  if budget is not None and not (math.isfinite(budget) and budget >= 0):
    raise ValueError(f"--time-budget must be a finite number of seconds >= 0, got {budget}")
  timeout = getattr(args, "coordinator_timeout", None)
  if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
    raise ValueError(f"--coordinator-timeout must be a positive number of seconds, got {timeout}")
  if timeout is not None and not _joins_group(args):
    raise ValueError("--coordinator-timeout applies only with --coordinator or --distributed")
  if getattr(args, "allow_unverified_checkpoint", False) and getattr(args, "resume", None) is None:
    raise ValueError(f"{checkpoint.UNVERIFIED_FLAG} applies only with --resume DIR")


def _joins_group(args: argparse.Namespace) -> bool:
  given = [getattr(args, name, None) for name in _DISTRIBUTED_FLAGS]
  return not all(v is None or v is False for v in given)


def _join_group(args: argparse.Namespace) -> None:
  if not _joins_group(args):
    return
  distributed.initialize(
    getattr(args, "coordinator", None),
    getattr(args, "num_processes", None),
    getattr(args, "process_id", None),
    timeout=getattr(args, "coordinator_timeout", distributed.DEFAULT_TIMEOUT),
  )


# Optional packages a task imports, and the extra that installs each.
_EXTRAS = {"mnist1d": "mnist1d"}


def _missing_package(e: ImportError) -> str:
  """The one line for an ``ImportError``: the package and the extra that installs it."""
  names = [getattr(x, "name", None) for x in (e, e.__cause__, e.__context__)]
  text = " ".join(str(x) for x in (e, e.__cause__) if x is not None)
  for module, extra in _EXTRAS.items():
    if module in names or module in text:
      return (
        f"--task {module} needs the optional package {module!r}, which is not installed "
        f'here: pip install "jrnn[{extra}]"'
      )
  name = next((n for n in names if n), None)
  return (
    f"a package jrnn-train needs is missing ({name or _one_line(e)}): install it, or reinstall jrnn"
  )


def _solver_failure(solver: str, text: str) -> str:
  """The one line for a parallel solve that failed: its first sentence and the flag to change."""
  text = text.rsplit("SolverError:", 1)[-1]
  first = " ".join(text.split()).split(". ")[0][:200]
  others = " or ".join(f"--solver {s}" for s in ("sequential", "elk") if s != solver)
  return (
    f"--solver {solver}: the parallel solve failed during training ({first}); train with "
    f"{others} (sequential is exact and always converges)"
  )


class _DropSolverTracebacks(logging.Filter):
  """JAX logs the traceback of an exception raised in a host callback before re-raising it;
  a :class:`SolverError` is reported in one line instead."""

  def filter(self, record):
    return not (record.exc_info and isinstance(record.exc_info[1], SolverError))


@contextlib.contextmanager
def _quiet_solver_errors():
  loggers = [logging.getLogger(n) for n in ("jax._src.debugging", "jax._src.callback")]
  f = _DropSolverTracebacks()
  for logger in loggers:
    logger.addFilter(f)
  try:
    yield
  finally:
    for logger in loggers:
      logger.removeFilter(f)


def _sweep_from_args(args: argparse.Namespace) -> Dict[str, Any]:
  """``--sweep SPEC`` (or ``--resume`` of a sweep's directory): :func:`sweep_run.run_sweep`."""
  given = {
    f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)
  }
  spec, resume = getattr(args, "sweep", None), getattr(args, "resume", None)
  allow = getattr(args, "allow_unverified_checkpoint", False)
  if resume is not None:
    cfg, axes = sweep_run.resume_config(resume, given, allow_unverified=allow)
    if spec is not None:
      axes = sweep.parse_sweep(spec)  # run_sweep refuses one other than the saved spec
  else:
    cfg, axes = Config(**given), sweep.parse_sweep(spec)  # type: ignore[arg-type]
  out = getattr(args, "out", None) or resume or os.path.join("runs", f"{cfg.task}-sweep")
  return sweep_run.run_sweep(
    cfg,
    axes,
    out,
    resume=resume,
    overwrite=getattr(args, "overwrite", False),
    time_budget=getattr(args, "time_budget", None),
    allow_unverified=allow,
  )


def train_from_args(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Parses ``argv`` and runs; returns :func:`jrnn.training.loop.run`'s summary.

  Any failure exits (``SystemExit``) with status 2 and one line ``jrnn-train: error: ...``.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  solver = "?"
  try:
    _check_run_flags(args)
    _join_group(args)  # before any other JAX call
    resume = getattr(args, "resume", None)
    if getattr(args, "sweep", None) is not None or (
      resume is not None and sweep_run.is_sweep_dir(resume)
    ):
      return _sweep_from_args(args)
    cfg = config_from_args(args)
    if cfg.dtype == "float64":  # before the run makes any array
      jax.config.update("jax_enable_x64", True)
    solver = cfg.solver
    out = (
      getattr(args, "out", None) or getattr(args, "resume", None) or os.path.join("runs", cfg.task)
    )
    with _quiet_solver_errors():
      return loop.run(
        cfg,
        out,
        resume=getattr(args, "resume", None),
        overwrite=getattr(args, "overwrite", False),
        time_budget=getattr(args, "time_budget", None),
        progress=not getattr(args, "no_progress", False),
        allow_unverified=getattr(args, "allow_unverified_checkpoint", False),
      )
  except SolverError as e:  # raised eagerly (outside jit)
    parser.exit(2, f"jrnn-train: error: {_solver_failure(solver, str(e))}\n")
  except ImportError as e:
    parser.exit(2, f"jrnn-train: error: {_missing_package(e)}\n")
  except (
    ValueError,
    TypeError,
    OSError,
    FloatingPointError,
    MemoryError,
    jax.errors.JaxRuntimeError,
  ) as e:
    text = _one_line(e)
    if "SolverError:" in text:  # raised in a host callback; the runtime re-raises it wrapped
      parser.exit(2, f"jrnn-train: error: {_solver_failure(solver, str(e))}\n")
    if not isinstance(e, jax.errors.JaxRuntimeError):
      parser.exit(2, f"jrnn-train: error: {text}\n")
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
      text = (
        "out of memory on the device; lower --hidden, --layers, --batch-size or "
        f"--seq-len ({text[:200]})"
      )
    parser.exit(2, f"jrnn-train: error: {text}\n")
  except KeyboardInterrupt:
    parser.exit(
      130,
      "jrnn-train: interrupted before training started (or by a second "
      "signal); the last checkpoint written, if any, is intact\n",
    )
  return {}  # unreachable: parser.exit raises


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The console script ``jrnn-train``: 0 when done, 128 + the signal after SIGINT/SIGTERM."""
  summary = train_from_args(argv)
  return 128 + summary["signal"] if "signal" in summary else 0


if __name__ == "__main__":
  sys.exit(main())
