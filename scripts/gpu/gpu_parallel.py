"""GPU check of the parallel-in-time solvers: T = 100,000, H = 16, B = 1, one JSON on stdout.

The goal (issue 12): against the best sequential path, DEER or quasi-DEER at least 10× faster
for evaluation and 5× for a training step (forward + gradient) of a contracting tanh RNN
(``W_hh ~ N(0, g²/H)``, ``g = 0.5``), float32 at full precision
(``jax_default_matmul_precision="highest"``: TF32 would change every path's rounding, and
Newton's tolerance is set for IEEE float32).

Rows (in this order, each compiled, warmed up, then timed as the median of up to 20 calls or
~2 s): the sequential hand BPTT over XLA's loops (``kernel="xla"``, unrolled 32 steps as
``kernel="auto"`` does on a GPU) and over the Pallas kernel (``kernel="pallas"``, where it
applies), then ``quasi_deer`` and ``deer`` (evaluation; training with ``adjoint="parallel"``, the
reverse recursion as a reverse associative scan: with the sequential adjoint the backward pass
alone is as slow as the sequential path), then ``quasi_deer`` training with the sequential
adjoint, ``quasi_elk`` and ``elk`` evaluation. Each parallel row carries its Newton iterations,
whether it converged, and its largest deviation from the sequential states (evaluation) or
relative deviation of the gradient (training). Rows that would start past ``--deadline-s``
(default 60 s from the start) are skipped, so the whole script fits in ~90 s on an H100; the
JSON is rewritten to ``$OUT/gpu_parallel.json`` after every row, so a timeout keeps what was
measured.

  python scripts/gpu/gpu_parallel.py                 # the check (JSON on stdout; $OUT/… too)
  python scripts/gpu/gpu_parallel.py --T 2000        # smoke run, any backend
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402

import jrnn  # noqa: E402
import jrnn.parallel as par  # noqa: E402
from jrnn import kernels  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
from common import benchlib  # noqa: E402

GAIN = 0.5


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--T", type=int, default=100_000)
  ap.add_argument("--H", type=int, default=16)
  ap.add_argument("--B", type=int, default=1)
  ap.add_argument("--deadline-s", type=float, default=60.0)
  ap.add_argument("--out", default=os.environ.get("OUT"), help="also write gpu_parallel.json here")
  args = ap.parse_args(argv)
  start = time.time()
  n_steps, n_hidden, n_batch, n_in = args.T, args.H, args.B, 4
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = jrnn.init_params(k1, n_in, n_hidden, 1, scheme="glorot", dtype=jnp.float32)
  params = params._replace(
    w_hh=GAIN * jax.random.normal(k2, (n_hidden, n_hidden), jnp.float32) / n_hidden**0.5
  )
  xs = jax.random.normal(k3, (n_steps, n_batch, n_in), jnp.float32)
  on_gpu = jax.default_backend() in ("gpu", "cuda")
  pallas_ok = on_gpu and kernels.pallas_supported(
    n_hidden, n_batch, jnp.float32, jax.default_backend(), activation="tanh"
  )

  def seq_eval(kernel, unroll):
    return jax.jit(lambda p, x: jrnn.forward(p, x, kernel=kernel, unroll=unroll).hs)

  def par_eval(solver):
    return jax.jit(lambda p, x: par.parallel_forward(p, x, solver=solver))

  def train(**choice):
    def loss(p, x):
      return jnp.mean(jrnn.forward(p, x, **choice).ys ** 2)

    return jax.jit(jax.grad(loss))

  unroll = kernels.GPU_XLA_UNROLL if on_gpu else 1
  solver = lambda m, **kw: par.Solver(m, on_failure="ignore", **kw)
  rows = [
    ("sequential_xla", "eval", seq_eval("xla", unroll)),
    ("sequential_xla", "train", train(kernel="xla", unroll=unroll)),
  ]
  if pallas_ok:
    rows += [
      ("sequential_pallas", "eval", seq_eval("pallas", 1)),
      ("sequential_pallas", "train", train(kernel="pallas")),
    ]
  rows += [
    ("quasi_deer", "eval", par_eval(solver("quasi_deer"))),
    ("deer", "eval", par_eval(solver("deer"))),
    ("deer", "train", train(solver=solver("deer", adjoint="parallel"))),
    ("quasi_deer", "train", train(solver=solver("quasi_deer", adjoint="parallel"))),
    ("quasi_deer_seq_adjoint", "train", train(solver=solver("quasi_deer"))),
    ("quasi_elk", "eval", par_eval(solver("quasi_elk"))),
    ("elk", "eval", par_eval(solver("elk"))),
  ]

  results, ref = [], {}

  def report(results, finished):
    text = json.dumps(
      dict(
        T=n_steps,
        H=n_hidden,
        B=n_batch,
        gain=GAIN,
        dtype="float32",
        matmul_precision="highest",
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.devices()],
        jax=jax.__version__,
        pallas_applies=pallas_ok,
        finished=finished,
        rows=results,
        summary=_summary(results),
        seconds=round(time.time() - start, 1),
      ),
      indent=1,
    )
    if finished:
      print(text)
    if args.out:  # rewritten after every row: a timeout keeps what was measured
      os.makedirs(args.out, exist_ok=True)
      with open(os.path.join(args.out, "gpu_parallel.json"), "w") as f:
        f.write(text)

  for name, mode, fn in rows:
    row = dict(name=name, mode=mode)
    if time.time() - start > args.deadline_s:
      row["status"] = "skipped (deadline)"
      results.append(row)
      continue
    try:
      t0 = time.perf_counter()
      compiled = fn.lower(params, xs).compile()
      row["compile_s"] = round(time.perf_counter() - t0, 2)
      row["ms"], row["calls"] = benchlib.adaptive_seconds(
        compiled, params, xs, max_calls=20, target_s=2.0
      )
      row["ms"] = round(1e3 * row["ms"], 3)
      out = compiled(params, xs)
      if name.startswith("sequential"):
        ref.setdefault(mode, out)
      elif mode == "eval":
        res, info = out
        row.update(
          iterations=int(info.iterations),
          converged=bool(info.converged),
          resets=int(info.resets),
          residual=float(info.residual),
        )
        if "eval" in ref:
          row["max_abs_dev_states"] = float(jnp.max(jnp.abs(res.hs - ref["eval"])))
      else:
        method = name.replace("_seq_adjoint", "")
        ev = next((r for r in results if r["name"] == method and r["mode"] == "eval"), {})
        row.update(iterations=ev.get("iterations"), converged=ev.get("converged"))
      if mode == "train" and not name.startswith("sequential") and "train" in ref:
        num = max(
          float(jnp.max(jnp.abs(a - b)))
          for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref["train"]), strict=True)
        )
        den = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(ref["train"]))
        row["grad_rel_dev"] = num / den
      row["status"] = "ok"
    except Exception as e:  # noqa: BLE001 (one failing row must not lose the others)
      row["status"] = f"error: {type(e).__name__}: {str(e)[:300]}"
    results.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
    report(results, finished=False)

  report(results, finished=True)


def _summary(results):
  def best(prefix, mode, parallel):
    times = [
      r["ms"]
      for r in results
      if r["mode"] == mode
      and r.get("status") == "ok"
      and r["name"].startswith(prefix) == (not parallel)
      and (not parallel or r.get("converged", False))
    ]
    return min(times) if times else None

  summary = {}
  for mode, goal in (("eval", 10.0), ("train", 5.0)):
    s, p = best("sequential", mode, False), best("sequential", mode, True)
    summary[mode] = dict(
      best_sequential_ms=s,
      best_parallel_ms=p,
      goal=goal,
      speedup=None if not (s and p) else round(s / p, 2),
      goal_met=bool(s and p and s / p >= goal),
    )
  return summary


if __name__ == "__main__":
  main()
