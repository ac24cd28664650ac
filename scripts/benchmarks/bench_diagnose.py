"""The cost of ``--diagnose-every``: the main job (``jrnn-train``'s defaults) for ``--steps``
steps, without and with gradient-flow records, alternating, in one process.

    python scripts/benchmarks/bench_diagnose.py [--steps 600] [--every 100] [--repeats 2] \
      [--json FILE]

Each run writes to a fresh temporary directory. Reported per run: the wall time of the whole
run and of its steady part (``elapsed_s`` from the first log step to the last, which leaves out
compiling the train step and the first record's compilation); the overhead is the ratio of the
steady parts, ``with / without - 1``, over all repeats. Compilation of :func:`jrnn.training.flow.
measure` (once a process) is reported apart. The machine's ``uptime`` and CPU go beside it: on a
shared machine the ratio is rough.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import tempfile
import time

from jrnn.training import loop
from jrnn.training.config import Config


def _uptime() -> str:
  try:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
  except OSError:
    return "unknown"


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def one_run(cfg: Config) -> dict:
  with tempfile.TemporaryDirectory() as out:
    t0 = time.monotonic()
    loop.run(cfg, out, progress=False, log=lambda _: None, handle_signals=False)
    wall = time.monotonic() - t0
    with open(f"{out}/{loop.METRICS_NAME}", encoding="utf-8") as f:
      rows = [json.loads(line) for line in f]
  steady = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
  return {"diagnose_every": cfg.diagnose_every, "wall_s": round(wall, 2), "steady_s": steady}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--every", type=int, default=100, help="--diagnose-every of the second run")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--json", help="also write the results to this file (must not exist)")
  args = p.parse_args()
  base = Config(steps=args.steps, log_every=100, ckpt_every=args.steps, sample_len=0)
  variants = [base, dataclasses.replace(base, diagnose_every=args.every)]
  runs = []
  before = _uptime()
  for r in range(args.repeats):
    for cfg in variants if r % 2 == 0 else variants[::-1]:
      runs.append(one_run(cfg))
      print(json.dumps(runs[-1]), flush=True)
  steady = {
    v: sum(x["steady_s"] for x in runs if x["diagnose_every"] == v) for v in (0, args.every)
  }
  result = {
    "config": dataclasses.asdict(base),
    "every": args.every,
    "runs": runs,
    "overhead_steady": round(steady[args.every] / steady[0] - 1, 4),
    "uptime_before": before,
    "uptime_after": _uptime(),
    "cpu": _cpu(),
  }
  print(
    f"--diagnose-every {args.every}: {result['overhead_steady']:+.1%} training time "
    f"(steady part, {args.repeats} repeats); {result['cpu']}; {result['uptime_after']}"
  )
  if args.json:
    with open(args.json, "x", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
      f.write("\n")


if __name__ == "__main__":
  main()
