"""Parallel-in-time solvers against the sequential scan: evaluation and a training step.

For a contracting tanh RNN (``W_hh ~ N(0, g²/H)``, ``g = 0.5``: largest Lyapunov exponent < 0,
measured and printed), float32, ``I = 4`` inputs, ``O = 1`` output, this times

* ``eval``: the forward pass (states and readout), and
* ``train``: ``value_and_grad`` of the mean squared readout with respect to every parameter,

for the sequential path (``solver="sequential"``, the hand BPTT over XLA's loops: the best
sequential path on a CPU; on a GPU see ``scripts/gpu/gpu_parallel.py``, which adds the Pallas
kernel) and each parallel solver (``deer``, ``quasi_deer``, ``elk``, ``quasi_elk``, default
:class:`jrnn.parallel.Solver` settings, ``on_failure="ignore"`` so the timing is the solver's
own; the iteration count and convergence come with each row). The training step uses the
default ``adjoint="sequential"``.

Grid: ``T ∈ {1e3, 1e4, 1e5}``, ``H ∈ {4, 16, 64}``, ``B ∈ {1, 16}``. A cell is skipped when a
full-Jacobian method would exceed its memory limit (the library's own check, reported as
``memory``) or when its time, extrapolated linearly in ``T`` from the previous ``T``, would
exceed ``--budget-s`` (``skipped``); ELK and quasi-ELK run only at ``B = 1`` and
``H <= --elk-max-hidden`` (``not run``: their compilation alone takes about a minute per row on
a loaded 2-core CPU). Each cell: compile, one warm-up call, then the median of up
to 5 calls (fewer when a call is slow). ``ratio = sequential / solver`` time: above 1 the
parallel solver is faster.

``--train-long`` instead trains a model end to end on a ``T = 10,000`` task with
``make_train_step`` and ``solver="quasi_deer"`` (and times the sequential step beside it).

  nice python scripts/benchmarks/bench_parallel.py --json docs/parallel/bench_cpu.json \
    --md /tmp/b.md
  nice python scripts/benchmarks/bench_parallel.py --quick
  nice python scripts/benchmarks/bench_parallel.py --train-long --json docs/parallel/train_long.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
import jrnn  # noqa: E402
import jrnn.diagnostics  # noqa: E402
import jrnn.parallel as par
import jrnn.reference
from common import benchlib  # noqa: E402

METHODS = ("sequential", "deer", "quasi_deer", "elk", "quasi_elk")
GAIN = 0.5


def machine() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("Model name"))
    return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
  except Exception:  # noqa: BLE001
    return platform.processor() or platform.machine()


def model(key, n_steps, n_batch, n_hidden, n_in=4):
  k1, k2, k3 = jax.random.split(key, 3)
  params = jrnn.init_params(k1, n_in, n_hidden, 1, scheme="glorot", dtype=jnp.float32)
  w = GAIN * jax.random.normal(k2, (n_hidden, n_hidden), jnp.float32) / n_hidden**0.5
  params = params._replace(w_hh=w)
  xs = jax.random.normal(k3, (n_steps, n_batch, n_in), jnp.float32)
  return params, xs


def lle(n_hidden, seed=0) -> float:
  params, xs = model(jax.random.key(seed), 2000, 1, n_hidden)
  traj = jrnn.reference.trajectory(params, xs[:, 0])
  return float(jrnn.diagnostics.lyapunov_exponents(traj, num_exponents=1, burn_in=200)[0])


def functions(method):
  """``(eval_fn, train_fn)``, jitted; ``eval_fn`` returns ``(ys, info or None)``."""
  solver = method if method == "sequential" else par.Solver(method, on_failure="ignore")

  def evaluate(params, xs):
    if method == "sequential":
      return jrnn.forward(params, xs, kernel="xla").ys, None
    out, info = par.parallel_forward(params, xs, solver=solver)
    return out.ys, info

  def loss(params, xs):
    ys = jrnn.forward(params, xs, kernel="xla", solver=solver).ys
    return jnp.mean(ys**2)

  return jax.jit(evaluate), jax.jit(jax.value_and_grad(loss))


def bench(lengths, hiddens, batches, methods, budget_s, elk_max_hidden):
  rows, last = [], {}
  for n_hidden in hiddens:
    for n_batch in batches:
      for n_steps in lengths:
        params, xs = model(jax.random.key(0), n_steps, n_batch, n_hidden)
        seq = {}
        for method in methods:
          eval_fn, train_fn = functions(method)
          for mode, fn in (("eval", eval_fn), ("train", train_fn)):
            row = dict(T=n_steps, H=n_hidden, B=n_batch, method=method, mode=mode)
            key = (n_hidden, n_batch, method, mode)
            if method in ("elk", "quasi_elk") and (n_hidden > elk_max_hidden or n_batch > 1):
              row["status"] = f"not run (ELK rows: H <= {elk_max_hidden}, B = 1)"
            elif key in last and last[key][1] * n_steps / last[key][0] > budget_s:
              row["status"] = (
                f"skipped (est. {last[key][1] * n_steps / last[key][0]:.0f} s > {budget_s:.0f} s)"
              )
              last[key] = (n_steps, last[key][1] * n_steps / last[key][0])
            else:
              try:
                t0 = time.perf_counter()
                compiled = fn.lower(params, xs).compile()
                row["compile_s"] = round(time.perf_counter() - t0, 2)
                row["seconds"] = benchlib.adaptive_seconds(compiled, params, xs)[0]
                row["status"] = "ok"
                last[key] = (n_steps, row["seconds"])
                if mode == "eval" and method != "sequential":
                  info = compiled(params, xs)[1]
                  row.update(iterations=int(info.iterations), converged=bool(info.converged))
              except ValueError as e:
                if "memory_limit" not in str(e):
                  raise
                row["status"] = "memory"
                last[key] = (n_steps, float("inf"))
            if method == "sequential" and "seconds" in row:
              seq[mode] = row["seconds"]
            if method != "sequential" and "seconds" in row and mode in seq:
              row["ratio"] = round(seq[mode] / row["seconds"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
  return rows


def markdown(rows, meta) -> str:
  lines = [
    f"Command: `{meta['command']}`  ",
    f"Machine: {meta['machine']}; jax {meta['jax']}; backend {meta['backend']}; "
    f"{meta['seconds']:.0f} s in all. LLE λ₁ of the benchmark RNNs (g = {GAIN}): "
    + ", ".join(f"H={h}: {v:+.2f}" for h, v in meta["lle"].items())
    + ".",
    "",
    "Times in ms (median); ratio = sequential / solver (> 1: the solver is faster); "
    "it = Newton iterations (\\* not converged).",
    "",
    "| T | H | B | mode | sequential | " + " | ".join(METHODS[1:]) + " |",
    "|---|---|---|---|---|" + "---|" * (len(METHODS) - 1),
  ]
  by = {(r["T"], r["H"], r["B"], r["method"], r["mode"]): r for r in rows}
  sizes = sorted({(r["T"], r["H"], r["B"]) for r in rows}, key=lambda s: (s[1], s[2], s[0]))
  for size in sizes:
    for mode in ("eval", "train"):
      cells = []
      for method in METHODS:
        r = by.get(size + (method, mode))
        if r is None:
          cells.append("")
        elif r["status"] != "ok":
          cells.append(r["status"].split(" (")[0])
        elif method == "sequential":
          cells.append(f"{1e3 * r['seconds']:.1f}")
        else:
          it = by.get(size + (method, "eval"), {})
          its = it.get("iterations")
          mark = "" if it.get("converged", True) else "\\*"
          its_s = f", it {its}{mark}" if its is not None else ""
          cells.append(f"{1e3 * r['seconds']:.1f} ({r.get('ratio', float('nan')):.2f}×{its_s})")
      lines.append(f"| {size[0]} | {size[1]} | {size[2]} | {mode} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _solve_report(params, xs, method, solver):
  """λ₁ of the model on its first sequence, and the solver's iterations on the batch."""
  traj = jrnn.reference.trajectory(params, xs[:2000, 0])
  rep = dict(lle=float(jrnn.diagnostics.lyapunov_exponents(traj, num_exponents=1, burn_in=200)[0]))
  if method != "sequential":
    info = jax.jit(lambda p: par.parallel_forward(p, xs, solver=solver)[1])(params)
    rep.update(
      iterations=int(info.iterations), converged=bool(info.converged), residual=float(info.residual)
    )
  return rep


def train_long(steps: int, n_steps: int = 10_000, n_hidden: int = 16, n_batch: int = 4):
  """Trains on a T = 10,000 task with make_train_step and a parallel solver, end to end.

  The task: predict an exponential moving average of the first input channel,
  ``y_t = 0.9 y_{t-1} + 0.1 x_t`` (a memory of ~10 steps that only the recurrence provides).
  """
  key = jax.random.key(1)
  xs = jax.random.normal(key, (n_steps, n_batch, 2), jnp.float32)

  def ema(c, x):
    c = 0.9 * c + 0.1 * x
    return c, c

  targets = 3 * jax.lax.scan(ema, jnp.zeros((n_batch, 1), jnp.float32), xs[..., :1])[1]
  batch = jrnn.training.Batch(xs, targets)
  out = {}
  for method in ("quasi_deer", "sequential"):
    params = jrnn.init_params(jax.random.key(2), 2, n_hidden, 1, scheme="glorot", dtype=jnp.float32)
    params = params._replace(w_hh=0.5 * params.w_hh)
    solver = method if method == "sequential" else par.Solver(method, on_failure="fallback")
    opt = optax.adam(3e-3)
    step = jrnn.training.make_train_step(
      # solver= takes a Solver too (engine.check_choices); sequence_loss annotates it as str.
      jrnn.training.sequence_loss("squared_error", solver=solver, kernel="xla"),  # type: ignore[arg-type]
      opt,
      has_aux=True,
    )
    state = opt.init(params)
    before = _solve_report(params, xs, method, solver)
    losses, times = [], []
    for _ in range(steps):
      t0 = time.perf_counter()
      params, state, metrics = step(params, state, batch)
      losses.append(float(metrics["loss"]))
      times.append(time.perf_counter() - t0)
    out[method] = dict(
      first_loss=losses[0],
      last_loss=losses[-1],
      losses=losses,
      step_ms_median=1e3 * statistics.median(times[1:]),
      initial=before,
      final=_solve_report(params, xs, method, solver),
    )
    print(method, json.dumps({k: v for k, v in out[method].items() if k != "losses"}), flush=True)
  return dict(T=n_steps, H=n_hidden, B=n_batch, steps=steps, results=out)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="T ≤ 1e4, H ∈ {4, 16}, B = 1")
  ap.add_argument("--methods", default=",".join(METHODS))
  ap.add_argument(
    "--budget-s", type=float, default=20.0, help="skip a cell whose extrapolated time exceeds this"
  )
  ap.add_argument(
    "--elk-max-hidden",
    type=int,
    default=16,
    help="run elk/quasi_elk only up to this H, and at B = 1 (their compile "
    "alone takes ~1 min per row on a loaded 2-core CPU)",
  )
  ap.add_argument("--json", help="write the rows and metadata here")
  ap.add_argument("--md", help="write the markdown table here")
  ap.add_argument(
    "--train-long",
    action="store_true",
    help="train end to end at T = 10,000 instead of timing the grid",
  )
  ap.add_argument("--steps", type=int, default=30, help="training steps for --train-long")
  args = ap.parse_args(argv)
  start = time.time()
  args_given = sys.argv[1:] if argv is None else argv
  command = "python scripts/benchmarks/bench_parallel.py " + " ".join(args_given)
  meta = dict(
    command=command, machine=machine(), jax=jax.__version__, backend=jax.default_backend()
  )
  if args.train_long:
    result = train_long(args.steps)
    meta["seconds"] = round(time.time() - start, 1)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(dict(meta=meta, **result), f, indent=1)
    return
  methods = [m for m in args.methods.split(",") if m]
  if methods[0] != "sequential":
    methods.insert(0, "sequential")
  lengths = [1000, 10_000] if args.quick else [1000, 10_000, 100_000]
  hiddens = [4, 16] if args.quick else [4, 16, 64]
  batches = [1] if args.quick else [1, 16]
  meta["lle"] = {h: round(lle(h), 3) for h in hiddens}
  print("LLE", meta["lle"], flush=True)
  rows = bench(lengths, hiddens, batches, methods, args.budget_s, args.elk_max_hidden)
  meta["seconds"] = round(time.time() - start, 1)
  md = markdown(rows, meta)
  print(md)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(meta=meta, rows=rows), f, indent=1)
  if args.md:
    with open(args.md, "w") as f:
      f.write(md)


if __name__ == "__main__":
  main()
