"""The cost of ``--diagnose-every``: the main job (``jrnn-train``'s defaults) for ``--steps``
steps, without and with gradient-flow records, alternating, in one process.

    python scripts/benchmarks/bench_diagnose.py [--steps 600] [--every 100] [--repeats 2] \
      [--json FILE]
    python scripts/benchmarks/bench_diagnose.py --interleaved --steps 3000 [--every 100] \
      [--json FILE]
    python scripts/benchmarks/bench_diagnose.py --accuracy [--json FILE]

Each run writes to a fresh temporary directory. Reported per run: the wall time of the whole
run and of its steady part (``elapsed_s`` from the first log step to the last, which leaves out
compiling the train step and the first record's compilation); the overhead is the ratio of the
steady parts, ``with / without - 1``, over all repeats. Compilation of :func:`jrnn.training.flow.
measure` (once a process) is reported apart. The machine's ``uptime`` and CPU go beside it: on a
shared machine the ratio is rough.

``--interleaved`` measures the same cost inside one run, so that the machine's drift between
runs (on a 2-core machine the main job's time moves by 10% from run to run) cancels: the main
job with a record every ``--every`` steps and a log every ``--every / 4``, so that of every
four segments between log steps two are clean and two may pay for the record: the one that
ends at its step (the record is dispatched there, and the log step's sync waits for it) and
the next one (where a train step or the record's host thread may still wait). Per segment:
the training time (from ``tokens_per_s``, which leaves out the evaluation at the log step)
and the wall time between log steps (which includes it, about 0.75 s per segment at the main
job's size: reported as a check). The cost of one record is the mean time of the two kinds of
segment near a record minus twice that of a clean one; the overhead is that cost over the mean
training time of ``--every`` clean steps. Segment 1 (compilation) is left out.

``--accuracy`` checks the records' Lanczos estimate instead: ``jacobian_norm`` of one record of
the main job's initial parameters, at :data:`jrnn.training.flow.NUM_ITERS` iterations and at
20, against the exact norms (SVD of the explicit products ``∂h_T/∂h_{T-k}``, formed in float64
from the same trajectories, geometric mean over the probe sequences), per layer and lag, with
one record's time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import tempfile
import time

import jax
import numpy as np

from jrnn.training import flow, loop
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


def interleaved(steps: int, every: int) -> dict:
  """One run with a record every ``every`` steps and a log every ``every // 4`` (see the module
  docstring)."""
  seg = every // 4
  cfg = Config(steps=steps, log_every=seg, ckpt_every=steps, sample_len=0, diagnose_every=every)
  with tempfile.TemporaryDirectory() as out:
    loop.run(cfg, out, progress=False, log=lambda _: None, handle_signals=False)
    with open(f"{out}/{loop.METRICS_NAME}", encoding="utf-8") as f:
      rows = [json.loads(line) for line in f]
  task = loop.make_task(cfg, jax.random.fold_in(jax.random.key(cfg.seed), 1))
  kinds = {0: "ends_at_record", seg: "after_record"}
  segments = [
    {
      "end_step": row["step"],
      "kind": kinds.get(row["step"] % every, "clean"),
      "train_s": round(seg * task.tokens_per_step / row["tokens_per_s"], 4),
      "wall_s": round(row["elapsed_s"] - prev["elapsed_s"], 4),
    }
    for prev, row in zip(rows[:-1], rows[1:], strict=True)  # segment 1 (compilation) left out
  ]
  mean = {
    (kind, k): float(np.mean([s[k] for s in segments if s["kind"] == kind]))
    for kind in ("ends_at_record", "after_record", "clean")
    for k in ("train_s", "wall_s")
  }
  cost = {
    k: mean["ends_at_record", k] + mean["after_record", k] - 2 * mean["clean", k]
    for k in ("train_s", "wall_s")
  }
  per_every = 4 * mean["clean", "train_s"]
  return {
    "config": dataclasses.asdict(cfg),
    "segments": segments,
    "mean_s": {f"{kind}.{k}": round(v, 4) for (kind, k), v in mean.items()},
    "record_cost_s": round(cost["train_s"], 4),
    "record_cost_from_wall_s": round(cost["wall_s"], 4),
    "train_s_per_every_steps": round(per_every, 4),
    "overhead": round(cost["train_s"] / per_every, 4),
    "overhead_from_wall": round(cost["wall_s"] / per_every, 4),
  }


def _write_json(path, result: dict) -> None:
  """Writes ``result`` to ``path`` (which must not exist); nothing for ``None``."""
  if path:
    with open(path, "x", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
      f.write("\n")


def accuracy() -> dict:
  """The records' ``jacobian_norm`` against exact norms, on the main job's initial parameters."""
  cfg = Config(diagnose_every=100)
  task = loop.make_task(cfg, jax.random.fold_in(jax.random.key(cfg.seed), 1))
  params = loop.initial_state(cfg, task, loop.make_optimizer(cfg)).params
  probe = flow.probe_batch(task.batch(0), one_hot=task.one_hot)
  key = jax.random.fold_in(jax.random.key(cfg.seed), flow.FLOW_KEY)
  lags = flow.log_lags(int(probe.xs.shape[0]))
  layers = flow.recurrent_layers(params)
  inputs = jax.numpy.swapaxes(probe.xs, 0, 1)
  trajs, _ = flow._run_layers(layers, params.w_hy, params.b_y, inputs, "tanh")
  exact = []
  for tr in trajs:  # ∂h_T/∂h_{T-k} = J_T ⋯ J_{T-k+1}, J_t = diag(σ'(a_t)) W_hh (all steps valid)
    w = np.asarray(tr.w_hh, np.float64)
    per_seq = []
    for g in np.asarray(tr.gains, np.float64):
      prod, norms = np.eye(w.shape[0]), {}
      for k in range(1, len(g) + 1):
        prod = prod @ (g[-k][:, None] * w)
        if k in lags:
          norms[k] = np.linalg.norm(prod, 2)
      per_seq.append([norms[k] for k in lags])
    exact.append(np.exp(np.mean(np.log(per_seq), axis=0)))
  out = {"lags": list(lags), "exact": np.asarray(exact).tolist(), "estimates": {}}
  for iters in sorted({flow.NUM_ITERS, 20}):
    run = lambda iters=iters: flow.measure(
      params, probe, key, lags=lags, loss_kind=task.loss_kind, num_iters=iters
    )
    jax.block_until_ready(run())
    t0 = time.perf_counter()
    got = np.asarray(jax.block_until_ready(run())["jacobian_norm"], np.float64)
    out["estimates"][str(iters)] = {
      "record_s": round(time.perf_counter() - t0, 4),
      "jacobian_norm": got.tolist(),
      "relative_error": (got / np.asarray(exact) - 1).tolist(),
      "max_abs_relative_error": float(np.max(np.abs(got / np.asarray(exact) - 1))),
    }
    print(
      f"{iters} iterations: one record {out['estimates'][str(iters)]['record_s']} s, "
      f"|estimate / exact - 1| <= {out['estimates'][str(iters)]['max_abs_relative_error']:.2e}"
    )
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--every", type=int, default=100, help="--diagnose-every of the second run")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--json", help="also write the results to this file (must not exist)")
  p.add_argument("--accuracy", action="store_true", help="check the Lanczos estimate instead")
  p.add_argument(
    "--interleaved", action="store_true", help="one run, segments with and without a record"
  )
  args = p.parse_args()
  if args.interleaved and (args.every < 4 or args.every % 4):
    p.error(f"--interleaved needs --every divisible by 4 (segments of --every/4), got {args.every}")
  if args.interleaved:
    before = _uptime()
    result = {
      **interleaved(args.steps, args.every),
      "cpu": _cpu(),
      "uptime_before": before,
      "uptime_after": _uptime(),
    }
    print(
      f"one record {result['record_cost_s']:.3f} s (from wall times "
      f"{result['record_cost_from_wall_s']:.3f} s) against {result['train_s_per_every_steps']:.3f}"
      f" s per {args.every} training steps: --diagnose-every {args.every} costs "
      f"{result['overhead']:+.1%} ({result['overhead_from_wall']:+.1%}); {result['cpu']}; "
      f"{result['uptime_after']}"
    )
    _write_json(args.json, result)
    return
  if args.accuracy:
    result = {**accuracy(), "cpu": _cpu(), "uptime_after": _uptime()}
    _write_json(args.json, result)
    return
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
  _write_json(args.json, result)


if __name__ == "__main__":
  main()
