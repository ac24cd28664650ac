"""Predictability enables parallelization (Gonzalez et al. 2025), reproduced for jrnn's DEER.

The claim: Newton's method on the whole trajectory (DEER) converges in a number of iterations
governed by the largest Lyapunov exponent (LLE) λ₁ of the dynamics. When λ₁ < 0 (a predictable,
contracting RNN) the count grows like ``log T`` at most; when λ₁ > 0 (chaos) it grows like ``T``
and parallel evaluation is useless.

Experiment (as in the paper): a tanh RNN with ``H = 100``, ``W_hh ~ N(0, g²/H)`` for gains
``g ∈ [0.5, 2]``, driven by i.i.d. inputs ``u_t ~ N(0, 0.5²)`` (per unit), ``h_0 = 0``, float64,
``T`` from 10 to 10,000. For each ``(g, T)`` the script counts DEER iterations from the zero
guess until the relative residual (:class:`jrnn.parallel.SolveInfo`) is at most the float64
default tolerance ``1e-12``, with a cap of ``--max-iter`` (default 200; DEER always converges
within ``T`` iterations in exact arithmetic, so the cap binds only for ``T > 200``). It
measures λ₁ on the longest trajectory with :func:`jrnn.diagnostics.lyapunov_exponents`.

DEER's iterates do not depend on how each linear recurrence ``h_t = J_t h_{t-1} + b_t`` is
evaluated, only its rounding does. To keep the full run within ~10 minutes on a 2-core CPU,
the Newton iteration (:func:`jrnn.parallel.newton.iterate`, the library's own) solves each
linear recurrence with a sequential scan (``T`` matrix-vector products instead of the
associative scan's ``~2T`` ``H × H`` matrix products). ``--verify-T`` reruns the library's
parallel DEER (:func:`jrnn.parallel.solve`) at one ``T`` for every ``g`` and records both counts.

Writes ``predictability.png``, ``predictability.md`` and ``predictability.json`` into ``--out``
(the command, the machine and the time taken included).

  nice python scripts/experiments/predictability.py --out docs/parallel     # full run, ~10 min
  nice python scripts/experiments/predictability.py --out /tmp/pred --quick # T ≤ 1000, 4 gains,
                                                                            # H = 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jrnn  # noqa: E402
import jrnn.diagnostics  # noqa: E402
import jrnn.parallel as par  # noqa: E402
import jrnn.reference  # noqa: E402
from jrnn.activations import get_activation  # noqa: E402
from jrnn.parallel import newton  # noqa: E402

TANH = get_activation("tanh")


def machine() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("Model name"))
    return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
  except Exception:  # noqa: BLE001 (no lscpu: say what Python knows)
    return platform.processor() or platform.machine()


def _sequential_linear_step(w_hh, mask, hs, lin, damping=None):
  """DEER's linear recurrence ``h_t = φ_t + J_t (h_{t-1} − h⁽ⁱ⁾_{t-1})`` by a sequential scan
  (``J_t x = σ'(a_t) ⊙ W_hh x``, never stored): the same iterate as the associative scan's."""

  def body(h, inp):
    phi, gain, prev = inp
    h = phi + gain * ((h - prev) @ w_hh.T)
    return h, h

  return jax.lax.scan(body, lin.prev[0], (lin.phi, lin.gain, lin.prev))[1]


@jax.jit
def deer_count(w_hh, u, h0, tol, max_iter):
  """``SolveInfo`` of DEER from the zero guess, linear solves by :func:`_sequential_linear_step`."""
  return newton.iterate(
    _sequential_linear_step, w_hh, u, h0, None, TANH, tol=tol, max_iter=max_iter
  )[1]


def lle(w_hh, u, burn_in: int) -> float:
  """λ₁ of the driven RNN along its trajectory (``jrnn.diagnostics.lyapunov_exponents``)."""
  n_hidden = w_hh.shape[0]
  layer = jrnn.LayerParams(
    jnp.eye(n_hidden, dtype=w_hh.dtype), w_hh, jnp.zeros(n_hidden, w_hh.dtype)
  )
  traj = jrnn.reference.trajectory(layer, u[:, 0, :])
  return float(jrnn.diagnostics.lyapunov_exponents(traj, num_exponents=1, burn_in=burn_in)[0])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="folder for the figure, table and JSON")
  ap.add_argument("--quick", action="store_true", help="T ≤ 1000, 4 gains, H = 32 (~1 min)")
  ap.add_argument("--hidden", type=int, default=None, help="H (default 100; 32 with --quick)")
  ap.add_argument("--max-iter", type=int, default=200, help="iteration cap per solve")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument(
    "--verify-T",
    type=int,
    default=None,
    help="rerun the library's parallel DEER at this T for every g (default 100; 0 skips)",
  )
  args = ap.parse_args(argv)
  start = time.time()
  n_hidden = args.hidden or (32 if args.quick else 100)
  gains = [0.5, 1.0, 1.5, 2.0] if args.quick else [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
  lengths = [10, 30, 100, 300, 1000] if args.quick else [10, 30, 100, 300, 1000, 3000, 10000]
  verify_t = 100 if args.verify_T is None else args.verify_T
  tol = par.DEFAULT_TOL[jnp.dtype(jnp.float64)]
  k_w, k_u = jax.random.split(jax.random.key(args.seed))
  base = jax.random.normal(k_w, (n_hidden, n_hidden), jnp.float64) / np.sqrt(n_hidden)
  u_all = 0.5 * jax.random.normal(k_u, (max(lengths), 1, n_hidden), jnp.float64)
  h0 = jnp.zeros((1, n_hidden), jnp.float64)

  rows = []
  for g in gains:
    w = g * base
    lam = lle(w, u_all, burn_in=min(500, max(lengths) // 10))
    for n_steps in lengths:
      t0 = time.time()
      info = deer_count(w, u_all[:n_steps], h0, tol, args.max_iter)
      row = dict(
        g=g,
        T=n_steps,
        lle=lam,
        iterations=int(info.iterations),
        converged=bool(info.converged),
        diverged=bool(info.diverged),
        resets=int(info.resets),
        residual=float(info.residual),
        seconds=round(time.time() - t0, 2),
      )
      if n_steps == verify_t:
        solver = par.Solver(
          "deer", max_iter=min(args.max_iter, n_steps + 1), on_failure="ignore", memory_limit=None
        )
        pinfo = jax.jit(lambda w, u: par.solve(w, u, h0, solver=solver)[1])(w, u_all[:n_steps])
        row["parallel_iterations"] = int(pinfo.iterations)
        row["parallel_converged"] = bool(pinfo.converged)
      rows.append(row)
      print(json.dumps(row), flush=True)

  elapsed = time.time() - start
  args_given = sys.argv[1:] if argv is None else argv
  command = "python scripts/experiments/predictability.py " + " ".join(args_given)
  meta = dict(
    command=command,
    machine=machine(),
    jax=jax.__version__,
    seconds=round(elapsed, 1),
    hidden=n_hidden,
    gains=gains,
    lengths=lengths,
    max_iter=args.max_iter,
    tol=tol,
    input_std=0.5,
    seed=args.seed,
  )
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "predictability.json"), "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=1)
  with open(os.path.join(args.out, "predictability.md"), "w") as f:
    f.write(table(rows, gains, lengths, meta))
  figure(rows, gains, lengths, meta, os.path.join(args.out, "predictability.png"))
  print(f"done in {elapsed:.0f} s -> {args.out}")


def _cell(r, cap):
  resets = f" ({r['resets']} r.)" if r.get("resets") else ""
  if r["converged"]:
    return str(r["iterations"]) + resets
  if r["diverged"]:
    return f"diverged at {r['iterations']}"
  return f"> {cap}" + resets


def table(rows, gains, lengths, meta) -> str:
  by = {(r["g"], r["T"]): r for r in rows}
  lines = [
    "# Predictability enables parallelization: DEER iterations vs T and the LLE",
    "",
    f"Command: `{meta['command']}`  ",
    f"Machine: {meta['machine']}; jax {meta['jax']}; {meta['seconds']:.0f} s in all.  ",
    f"tanh RNN, H = {meta['hidden']}, W_hh ~ N(0, g²/H), inputs N(0, {meta['input_std']}²), "
    f"h_0 = 0, float64; DEER from the zero guess until the relative residual ≤ "
    f"{meta['tol']:g}; cap {meta['max_iter']} iterations (\"> {meta['max_iter']}\": not "
    "converged within the cap; \"(k r.)\": in k iterations the linearised recurrence "
    "overflowed and its wild entries restarted from the previous iterate, see "
    "`jrnn.parallel.SolveInfo.resets`).",
    "",
    "| g | LLE λ₁ | " + " | ".join(f"T={t}" for t in lengths) + " |",
    "|---|---|" + "---|" * len(lengths),
  ]
  for g in gains:
    lam = by[(g, lengths[0])]["lle"]
    cells = [_cell(by[(g, t)], meta["max_iter"]) for t in lengths]
    lines.append(f"| {g:g} | {lam:+.3f} | " + " | ".join(cells) + " |")
  checked = [r for r in rows if "parallel_iterations" in r]
  if checked:
    t = checked[0]["T"]
    lines += [
      "",
      f"Check at T = {t}: iterations of the library's parallel DEER "
      "(`jrnn.parallel.solve`, associative scans) beside the count above (sequential "
      "linear solves):",
      "",
      "| g | sequential linear solves | associative scan |",
      "|---|---|---|",
    ]
    for r in checked:
      par_cell = str(r["parallel_iterations"]) + ("" if r["parallel_converged"] else " (not conv.)")
      lines.append(f"| {r['g']:g} | {_cell(r, meta['max_iter'])} | {par_cell} |")
  return "\n".join(lines) + "\n"


def figure(rows, gains, lengths, meta, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cap = meta["max_iter"]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
  cmap = plt.get_cmap("coolwarm")
  for i, g in enumerate(gains):
    rs = [r for r in rows if r["g"] == g]
    color = cmap(i / max(1, len(gains) - 1))
    ts = [r["T"] for r in rs]
    its = [r["iterations"] if r["converged"] else cap for r in rs]
    ax1.plot(ts, its, "-", color=color, label=f"g={g:g} (λ₁={rs[0]['lle']:+.2f})")
    for r, it in zip(rs, its, strict=True):
      ax1.plot(r["T"], it, "o" if r["converged"] else "x", color=color)
  ax1.plot(lengths, [min(t, cap) for t in lengths], "k:", label=f"min(T, cap {cap}): DEER's bound")
  ax1.set(
    xscale="log",
    yscale="log",
    xlabel="sequence length T",
    ylabel="DEER iterations to converge",
    title="Iterations vs T (x: not converged)",
  )
  ax1.legend(fontsize=7)
  cmap_t = plt.get_cmap("viridis")
  for j, t in enumerate(lengths):
    rs = sorted((r for r in rows if r["T"] == t), key=lambda r: r["lle"])
    color = cmap_t(j / max(1, len(lengths) - 1))
    ax2.plot(
      [r["lle"] for r in rs],
      [r["iterations"] if r["converged"] else cap for r in rs],
      "-",
      color=color,
      label=f"T={t}",
    )
    for r in rs:
      ax2.plot(
        r["lle"],
        r["iterations"] if r["converged"] else cap,
        "o" if r["converged"] else "x",
        color=color,
      )
  ax2.axvline(0, color="k", lw=0.8, ls="--")
  ax2.set(
    yscale="log",
    xlabel="largest Lyapunov exponent λ₁ (per step)",
    ylabel="DEER iterations to converge",
    title="Iterations vs the LLE",
  )
  ax2.legend(fontsize=7)
  fig.suptitle(
    f"tanh RNN, H={meta['hidden']}, float64: DEER converges fast iff λ₁ < 0", fontsize=10
  )
  fig.tight_layout()
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  main()
