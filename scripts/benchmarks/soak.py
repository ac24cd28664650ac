"""Soak test of ``jrnn-train``: a long run with checkpoints every few steps, killed at random
moments (SIGKILL, and some SIGINT/SIGTERM) and resumed, against the same run left alone.

Checks, and prints as JSON:

* ``identical``: the killed-and-resumed run's final checkpoint equals the uninterrupted run's
  bit for bit in every array and in its metadata, the run id aside
  (:func:`jrnn.training.checkpoint.same_state`), and its ``metrics.jsonl`` equals it row for
  row (timing fields aside);
* ``rss_flat``: the resident memory of the uninterrupted training process, sampled as it runs,
  grows by less than ``--rss-tolerance`` (a fraction, or 32 MB, whichever is larger) from the
  first third of training to the last third.

Kills land anywhere: a quarter of the SIGKILLs during start-up, the rest at a random moment (up
to ``--max-delay`` seconds) after the process writes a checkpoint: between steps, in the middle
of a checkpoint or metrics write. ``--signals`` cycles through the signals sent (default
``KILL,KILL,INT,KILL,TERM``); a run stopped by SIGINT or SIGTERM must checkpoint, print how to
resume and exit with 128 + the signal (130, 143), or the soak fails. A run killed before its
first checkpoint starts again with ``--overwrite``; every other one continues with
``--resume``.

Usage::

  python scripts/benchmarks/soak.py                     # 3000 steps, a checkpoint every 5, 20 kills
  python scripts/benchmarks/soak.py --steps 40 --ckpt-every 3 --log-every 4 --kills 2 \
    --signals KILL,INT

Exit status 0 when every check passes, 1 otherwise. The children share a JAX compilation
cache (``$JAX_COMPILATION_CACHE_DIR``, else ``WORK/jax_cache``), so a resume costs its
start-up, not a recompilation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
CKPT, METRICS = "checkpoint.safetensors", "metrics.jsonl"
# A small stateful model: the carried state, the epoch restarts, dropout keys and the parameter
# average all pass through the checkpoints.
MODEL = [
  "--task",
  "charlm",
  "--hidden",
  "16",
  "--layers",
  "2",
  "--seq-len",
  "8",
  "--batch-size",
  "4",
  "--dropout",
  "0.1",
  "--ema",
  "0.99",
  "--schedule",
  "constant",
  "--sample-len",
  "0",
  "--no-progress",
]


def _rss_bytes(pid: int) -> Optional[int]:
  try:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _mtime(path: str) -> int:
  try:
    return os.stat(path).st_mtime_ns
  except OSError:
    return 0


def _env(work: str) -> Dict[str, str]:
  return dict(
    os.environ,
    JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
    JAX_COMPILATION_CACHE_DIR=os.environ.get(
      "JAX_COMPILATION_CACHE_DIR", os.path.join(work, "jax_cache")
    ),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )


def _launch(args: List[str], work: str) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, TRAIN, *args],
    env=_env(work),
    cwd=work,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _flags(opts, out: str) -> List[str]:
  return MODEL + [
    "--steps",
    str(opts.steps),
    "--ckpt-every",
    str(opts.ckpt_every),
    "--log-every",
    str(opts.log_every),
    "--seed",
    str(opts.seed),
    "--out",
    out,
  ]


def straight_run(opts, work: str) -> Dict[str, object]:
  """The uninterrupted run, its RSS sampled every ``--rss-every`` seconds once it trains."""
  out = os.path.join(work, "straight")
  proc = _launch(_flags(opts, out), work)
  samples = []  # RSS once the first metrics row exists (compiled, training)
  while proc.poll() is None:
    if os.path.exists(os.path.join(out, METRICS)) and os.path.getsize(os.path.join(out, METRICS)):
      rss = _rss_bytes(proc.pid)
      if rss:
        samples.append(rss)
    time.sleep(opts.rss_every)
  _, err = proc.communicate()
  if proc.returncode != 0:
    raise RuntimeError(f"the uninterrupted run failed:\n{err[-3000:]}")
  result: Dict[str, object] = {"rss_samples": len(samples)}
  if len(samples) >= 6:
    third = len(samples) // 3
    early, late = statistics.median(samples[:third]), statistics.median(samples[-third:])
    allowed = max(opts.rss_tolerance * early, 32 * 2**20)
    result.update(
      rss_early_mb=round(early / 2**20, 1),
      rss_late_mb=round(late / 2**20, 1),
      rss_flat=late - early <= allowed,
    )
  else:
    result["rss_flat"] = None  # too short a run to judge
  return result


def killed_run(opts, work: str) -> Dict[str, object]:
  """The same run, SIGKILLed ``--kills`` times at random moments and resumed each time."""
  rng = random.Random(opts.seed)
  out = os.path.join(work, "killed")
  ckpt = os.path.join(out, CKPT)
  kills = launches = graceful = 0
  while True:
    fresh = not os.path.exists(ckpt)
    args = _flags(opts, out) + ["--overwrite"] if fresh else ["--resume", out, "--no-progress"]
    proc = _launch(args, work)
    launches += 1
    if kills < opts.kills:
      sig = signal.Signals["SIG" + opts.signals[kills % len(opts.signals)]]
      if sig == signal.SIGKILL and rng.random() < 0.25:  # during start-up
        time.sleep(rng.uniform(0.0, 1.0))
      else:  # during training: once this process has written a checkpoint
        before = _mtime(ckpt)
        while proc.poll() is None and _mtime(ckpt) == before:
          time.sleep(0.01)
        time.sleep(rng.uniform(0.0, opts.max_delay))
      if proc.poll() is None:
        proc.send_signal(sig)
        stdout, err = proc.communicate()
        kills += 1
        if sig != signal.SIGKILL:  # must checkpoint, say how to resume, exit 128 + signal
          if proc.returncode != 128 + sig or f"--resume {out}" not in stdout:
            raise RuntimeError(
              f"{sig.name} gave status {proc.returncode}:\n{stdout[-1000:]}\n{err[-2000:]}"
            )
          graceful += 1
        continue
    _, err = proc.communicate()
    if proc.returncode != 0:
      raise RuntimeError(
        f"launch {launches} ({' '.join(args[:2])}…) failed with status "
        f"{proc.returncode}:\n{err[-3000:]}"
      )
    return {"kills": kills, "graceful_stops": graceful, "launches": launches}


def _rows(path: str) -> List[Dict[str, object]]:
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in rows]


def main(argv: Optional[List[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--ckpt-every", type=int, default=5)
  p.add_argument("--log-every", type=int, default=50)
  p.add_argument("--kills", type=int, default=20)
  p.add_argument(
    "--signals",
    type=lambda v: v.upper().split(","),
    default="KILL,KILL,INT,KILL,TERM",
    help="the signals sent, in turn (KILL, INT, TERM): after INT or TERM the run "
    "must checkpoint and exit with 128 + the signal",
  )
  p.add_argument(
    "--max-delay",
    type=float,
    default=2.0,
    help="seconds: a kill lands uniformly in [0, this] after training resumes",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--rss-every", type=float, default=0.5, help="seconds between RSS samples")
  p.add_argument("--rss-tolerance", type=float, default=0.10)
  p.add_argument("--work", help="working directory (default: a new temporary one)")
  opts = p.parse_args(argv)
  work = opts.work or tempfile.mkdtemp(prefix="jrnn-soak-")
  os.makedirs(work, exist_ok=True)
  t0 = time.monotonic()
  summary: Dict[str, object] = {"steps": opts.steps, "ckpt_every": opts.ckpt_every, "work": work}
  summary.update(straight_run(opts, work))
  summary.update(killed_run(opts, work))
  from jrnn.training.checkpoint import same_state  # pylint: disable=import-outside-toplevel

  same_ckpt = same_state(os.path.join(work, "straight", CKPT), os.path.join(work, "killed", CKPT))
  same_rows = _rows(os.path.join(work, "straight", METRICS)) == _rows(
    os.path.join(work, "killed", METRICS)
  )
  summary.update(
    identical=same_ckpt and same_rows,
    same_checkpoint=same_ckpt,
    same_metrics=same_rows,
    wall_s=round(time.monotonic() - t0, 1),
  )
  print(json.dumps(summary))
  return 0 if summary["identical"] and summary["rss_flat"] is not False else 1


if __name__ == "__main__":
  sys.exit(main())
