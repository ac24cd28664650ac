"""What every experiment script writes: a deterministic ``results.json`` and a ``timing.json``.

An experiment is a pure function of its command: run twice on the same machine, it must write
the same ``results.json``, byte for byte. So that file holds only what the command determines —
the results, the command, the git commit, package versions, a SHA-256 of every data split, the
seeds and the machine's model — and everything that differs between two runs of the same
command (wall and CPU seconds, load averages, the date) goes to ``timing.json`` beside it.

* :func:`digest`: the SHA-256 of arrays (dtype, shape and bytes), the data splits' fingerprint.
* :func:`provenance`: the command, commit, versions, machine, seeds and data digests.
* :func:`refuse_existing`: the ``--overwrite`` rule shared by the scripts.
* :func:`add_kernel_flag`: the ``--kernel`` flag shared by the scripts (default ``xla``).
* :func:`write`: ``results.json`` and ``timing.json`` (strict JSON: non-finite floats as null).

Standard library, NumPy and ``benchlib`` only.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import shlex
import subprocess
import time
from typing import Any, Dict, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from common import benchlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The packages whose versions can change an experiment's numbers.
PACKAGES = ("jrnn", "jax", "jaxlib", "numpy", "optax", "chex", "mnist1d")


def digest(*arrays) -> str:
  """SHA-256 (hex) of the arrays' dtypes, shapes and bytes, in order."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(f"{a.dtype.str}{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def git_commit() -> Dict[str, object]:
  """The checkout's commit and whether tracked files differ from it (``None`` outside git)."""

  def git(*args):
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else None

  commit = git("rev-parse", "HEAD")
  dirty = git("status", "--porcelain", "--untracked-files=no")
  return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


# Flags that choose where and how a run happens but not its numbers: left out of the command that
# results.json records (timing.json keeps the exact one). Value: whether the flag takes a value.
RUN_ONLY_FLAGS = {
  "--out": True,
  "--workers": True,
  "--cache-dir": True,
  "--overwrite": False,
  "--no-plot": False,
}


def result_command(script: str, argv: Sequence[str]) -> str:
  """``python scripts/<script> <argv>`` without :data:`RUN_ONLY_FLAGS` (``script``: a path under
  ``scripts/``)."""
  kept, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    name = arg.split("=", 1)[0]
    if name in RUN_ONLY_FLAGS:
      skip = RUN_ONLY_FLAGS[name] and "=" not in arg
      continue
    kept.append(arg)
  return shlex.join(["python", f"scripts/{script}", *kept])


def provenance(
  script: str, argv: Sequence[str], *, seeds: Iterable[int], data: Mapping[str, str]
) -> Dict[str, object]:
  """What ``results.json`` records besides the results.

  Args:
    script: the script's file name under ``scripts/``.
    argv: its arguments, as given (recorded without :data:`RUN_ONLY_FLAGS`).
    seeds: the seeds the results come from.
    data: split name -> :func:`digest` of that split's arrays.
  """
  return {
    "command": result_command(script, argv),
    "command_note": "flags that do not change the results ("
    + ", ".join(RUN_ONLY_FLAGS)
    + ") are left out; timing.json has the exact command",
    "git": git_commit(),
    "versions": {name: benchlib.version(name) for name in PACKAGES},
    "machine": {"model_name": benchlib.cpu_model(), "cpus": os.cpu_count()},
    "seeds": list(seeds),
    "data_sha256": dict(data),
  }


def refuse_existing(out: pathlib.Path, overwrite: bool) -> Optional[str]:
  """The error to give when ``out`` already holds results and ``--overwrite`` was not passed."""
  if (out / "results.json").exists() and not overwrite:
    return f"{out} already holds results.json; pass another --out, or --overwrite to replace it"
  return None


class Clock(NamedTuple):
  """When an experiment started: wall and CPU seconds, and the load averages then."""

  wall: float
  cpu: float
  load: Tuple[float, float, float]


def add_kernel_flag(parser, choices: Sequence[str], uses: str = "") -> None:
  """``--kernel`` (``jrnn.forward``'s ``kernel=``, ``uses`` saying where), default ``xla``: the XLA
  loops made the committed results, so the documented commands keep making them; ``auto`` runs
  jrnn's CPU kernel where it applies (faster, other float32 bits)."""
  parser.add_argument(
    "--kernel",
    choices=list(choices),
    default="xla",
    help=f"jrnn.forward's kernel={uses} (default xla: the XLA loops, which made the committed "
    "results; 'auto' runs jrnn's CPU kernel where it applies: faster, other float32 bits)",
  )


def start_clock(announce: bool = True) -> Clock:
  """Starts an experiment's clock; with ``announce``, prints the machine and its load."""
  clock = Clock(time.perf_counter(), time.process_time(), os.getloadavg())
  if announce:
    print(
      f"machine: {benchlib.cpu_model()} ({os.cpu_count()} CPUs, load "
      f"{[round(x, 2) for x in clock.load]})",
      flush=True,
    )
  return clock


def settings(args: Any) -> Dict[str, object]:
  """``results.json``'s ``config``: the parsed arguments (an ``argparse.Namespace``) without the
  run-only ones (:data:`RUN_ONLY_FLAGS`), paths as strings."""
  run_only = {flag[2:].replace("-", "_") for flag in RUN_ONLY_FLAGS}
  return {
    k: (str(v) if isinstance(v, pathlib.PurePath) else v)
    for k, v in vars(args).items()
    if k not in run_only
  }


def timing(script: str, argv: Sequence[str], clock: Clock, **parts) -> Dict[str, object]:
  """What ``timing.json`` holds: the exact command, seconds since ``clock`` started, load
  averages at start and end, the date, and any per-part times (``parts``)."""
  return {
    "command": shlex.join(["python", f"scripts/{script}", *argv]),
    "wall_s": round(time.perf_counter() - clock.wall, 1),
    "cpu_s": round(time.process_time() - clock.cpu, 1),
    "loadavg_start": [round(x, 2) for x in clock.load],
    "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    **parts,
  }


def dumps(obj) -> str:
  """Strict, stable JSON text: non-finite floats as ``null``, one key per line."""
  return json.dumps(benchlib.json_safe(obj), indent=1, allow_nan=False) + "\n"


def write(out: pathlib.Path, results: Mapping, timing_info: Mapping) -> None:
  """Writes ``out/results.json`` (deterministic) and ``out/timing.json``."""
  out.mkdir(parents=True, exist_ok=True)
  (out / "results.json").write_text(dumps(results))
  (out / "timing.json").write_text(dumps(timing_info))


__all__ = (
  "RUN_ONLY_FLAGS",
  "Clock",
  "digest",
  "dumps",
  "git_commit",
  "provenance",
  "refuse_existing",
  "result_command",
  "settings",
  "start_clock",
  "timing",
  "write",
)
