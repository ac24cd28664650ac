"""Where a training step's time goes: jrnn's hand-BPTT step cut into its parts, each part timed
alone and set beside the same GEMMs run standalone (XLA and NumPy's BLAS), at the CPU anchor
sizes. One run, one table per size; the issue-22 breakdown in BENCHMARKS.md comes from here.

Parts of one step of ``L = Σ_t ‖W_hy h_t + b_y - ŷ_t‖² / B`` (tanh, float32, sizes
``(B, T, I, H, O)``), in the order the step runs them:

* ``input projection``: ``u = xs W_xhᵀ + b_h``, one ``(T·B, I) × (I, H)`` GEMM;
* ``recurrence forward``: ``T`` steps of ``h_t = tanh(h_{t-1} W_hhᵀ + u_t)``, each a
  ``(B, H) × (H, H)`` GEMM (:func:`jrnn.loops.scan_recurrence`);
* ``readout + loss``: ``ys = hs W_hyᵀ + b_y``, the loss, and its cotangent back to ``hs``
  (``(T·B, H) × (H, O)`` and ``(T·B, O) × (O, H)``);
* ``recurrence backward``: ``T`` steps of ``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)``
  (:func:`jrnn.loops.reverse_deltas`), a ``(B, H) × (H, H)`` GEMM each;
* ``weight gradients``: ``∂L/∂W_hh``, ``∂L/∂W_xh``, ``∂L/∂W_hy`` and the biases: three GEMMs
  over ``T·B`` rows.

Each part is its own jitted program on inputs made beforehand, so the sum of the parts differs
from the whole step by what XLA fuses across them and by the per-call overhead (printed).
Beside the two loops: the same ``T`` GEMMs in a ``lax.scan`` with nothing else (``XLA loop
GEMM``), one ``(B, H) × (H, H)`` GEMM called alone ``T`` times (``XLA GEMM × T``), the same in
NumPy with its BLAS (``BLAS GEMM × T``), and all ``T`` at once as one ``(T·B, H) × (H, H)``
GEMM (``one big GEMM``: the rate the loop would reach if the steps were independent).

Where ``kernel="auto"`` runs the loops on a kernel (jrnn's C++ kernel on a CPU where it is built,
:mod:`jrnn.kernels.cpu_ffi`), the two loops are timed on it too (``recurrence forward (cpu
kernel)``, ``recurrence backward (cpu kernel)``: the same loops as the XLA rows, so the two
pairs compare like with like), ``whole step`` is the step as users get it (on the kernel) and
``whole step (XLA loops)`` the same step with ``kernel="xla"``: before and after in one run.

Run on a quiet machine (``uptime`` first)::

  python scripts/benchmarks/bench_parts.py                 # the three CPU anchor sizes
  python scripts/benchmarks/bench_parts.py --json out.json --sizes 32,128,64,256,64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
import jrnn  # noqa: E402
from common import benchlib  # noqa: E402
from jrnn import kernels, loops  # noqa: E402
from jrnn.activations import get_activation  # noqa: E402

TANH = get_activation("tanh")


def loop_kernel(size: benchlib.Size) -> str:
  """The kernel ``kernel="auto"`` picks for the loops at this size (float32, tanh)."""
  b, _, _, h, _ = size
  return kernels.resolve_kernel(
    "auto", n_hidden=h, n_batch=b, dtype=jnp.float32, act=TANH, unroll=1
  )[0]


def _parts(size: benchlib.Size) -> Dict[str, Callable[[], object]]:
  """Each part of one hand-BPTT step as a thunk on fixed inputs (float32)."""
  b, t, n_in, h, o = size
  params = jrnn.init_params(jax.random.key(0), n_in, h, o, scheme="orthogonal")
  k = jax.random.split(jax.random.key(1), 3)
  xs = jax.random.normal(k[0], (t, b, n_in), jnp.float32)
  target = jax.random.normal(k[1], (t, b, o), jnp.float32)
  h0 = jnp.zeros((b, h), jnp.float32)

  project = jax.jit(lambda w, c, x: x @ w.T + c[None, None])
  forward = jax.jit(lambda w, u, h0: loops.scan_recurrence(w, u, h0, None, TANH, 1))

  def readout_loss(w_hy, b_y, hs, target):
    def loss(hs):
      return jnp.sum((hs @ w_hy.T + b_y[None, None] - target) ** 2) / b

    return jax.value_and_grad(loss)(hs)

  readout = jax.jit(readout_loss)
  backward = jax.jit(
    lambda w, hs, g: loops.reverse_deltas(w, hs, g, None, 1, TANH.deriv_from_output)
  )

  def weight_grads(deltas, hs, h0, xs, g_y):
    n = hs.shape[-1]
    d2 = deltas.reshape(-1, n)
    return (
      loops.recurrent_weight_grad(deltas, hs, h0),
      d2.T @ xs.reshape(d2.shape[0], -1),
      d2.sum(0),
      g_y.reshape(-1, g_y.shape[-1]).T @ hs.reshape(-1, n),
      g_y.sum((0, 1)),
    )

  grads = jax.jit(weight_grads)

  def whole_loss(p, kernel="auto"):
    ys = jrnn.forward(p, xs, grad="hand", kernel=kernel).ys
    return jnp.sum((ys - target) ** 2) / b

  whole = jax.jit(jax.value_and_grad(whole_loss))
  whole_xla = jax.jit(jax.value_and_grad(lambda p: whole_loss(p, "xla")))
  kern = loop_kernel(size)

  u = project(params.w_xh, params.b_h, xs)
  hs = forward(params.w_hh, u, h0)
  _, g = readout(params.w_hy, params.b_y, hs, target)
  deltas, _ = backward(params.w_hh, hs, g)
  g_y = 2 * (hs @ params.w_hy.T + params.b_y[None, None] - target) / b
  parts = {
    "input projection": lambda: project(params.w_xh, params.b_h, xs),
    "recurrence forward": lambda: forward(params.w_hh, u, h0),
    "readout + loss": lambda: readout(params.w_hy, params.b_y, hs, target),
    "recurrence backward": lambda: backward(params.w_hh, hs, g),
    "weight gradients": lambda: grads(deltas, hs, h0, xs, g_y),
    "whole step": lambda: whole(params),
  }
  if kern != "xla":
    k_fwd = jax.jit(lambda w, u, h0: kernels.states(kern, w, u, h0, None, TANH, 1))
    # δ and ∂L/∂h_0 only: XLA drops the ∂L/∂W_hh GEMM, which "weight gradients" times.
    k_bwd = jax.jit(
      lambda w, hs, g: kernels.states_backward(kern, TANH, 1, w, None, h0, None, hs, g)[::2]
    )
    parts[f"recurrence forward ({kern} kernel)"] = lambda: k_fwd(params.w_hh, u, h0)
    parts[f"recurrence backward ({kern} kernel)"] = lambda: k_bwd(params.w_hh, hs, g)
    parts["whole step (XLA loops)"] = lambda: whole_xla(params)
  return parts


def _gemm_refs(size: benchlib.Size) -> Dict[str, Callable[[], object]]:
  """The recurrence's ``T`` GEMMs of ``(B, H) × (H, H)``, run without the RNN around them."""
  b, t, _, h, _ = size
  k = jax.random.split(jax.random.key(2), 3)
  w = jax.random.normal(k[0], (h, h), jnp.float32) / h**0.5
  hb = jax.random.normal(k[1], (b, h), jnp.float32)
  many = jax.random.normal(k[2], (t, b, h), jnp.float32)

  def chain(w, h0, n):
    return jax.lax.scan(lambda c, _: (c @ w * 0.5, None), h0, None, length=n)[0]

  loop = jax.jit(chain, static_argnums=2)
  one = jax.jit(lambda a, w: a @ w)
  big = jax.jit(lambda hs, w: hs.reshape(-1, hs.shape[-1]) @ w)
  a_np, w_np = np.asarray(hb), np.asarray(w)
  out = np.empty((b, h), np.float32)

  def one_times_t():
    for _ in range(t):
      r = one(hb, w)
    return r

  def blas_times_t():
    for _ in range(t):
      np.matmul(a_np, w_np, out=out)
    return out

  return {
    "XLA loop GEMM": lambda: loop(w, hb, t),
    "XLA GEMM × T": one_times_t,
    "BLAS GEMM × T": blas_times_t,
    "one big GEMM": lambda: big(many, w),
  }


def part_flops(size: benchlib.Size) -> Dict[str, int]:
  """Multiply-add FLOPs of each part (2 per multiply-add; element-wise work not counted)."""
  b, t, n_in, h, o = size
  rows = t * b
  rec = 2 * rows * h * h
  flops = {
    "input projection": 2 * rows * n_in * h,
    "recurrence forward": rec,
    "readout + loss": 2 * rows * h * o * 2,
    "recurrence backward": rec,
    "weight gradients": 2 * rows * (h * h + h * n_in + o * h),
    "whole step": benchlib.flop_count(size, "train"),
    "XLA loop GEMM": rec,
    "XLA GEMM × T": rec,
    "BLAS GEMM × T": rec,
    "one big GEMM": rec,
  }
  kern = loop_kernel(size)
  if kern != "xla":
    flops["whole step (XLA loops)"] = flops["whole step"]
    flops[f"recurrence forward ({kern} kernel)"] = rec
    flops[f"recurrence backward ({kern} kernel)"] = rec
  return flops


def measure(size: benchlib.Size, reps: int) -> Dict[str, Dict[str, float]]:
  """``{part: {"ms", "gflops"}}`` for one size, plus the sum of the parts."""
  flops = part_flops(size)
  rows: Dict[str, Dict[str, float]] = {}
  for name, fn in {**_parts(size), **_gemm_refs(size)}.items():
    ms = benchlib.median_ms(fn, reps)
    rows[name] = {"ms": ms, "gflops": flops[name] / ms / 1e6}
  names = ["input projection", "recurrence forward", "readout + loss"]
  names += ["recurrence backward", "weight gradients"]
  total = sum(rows[n]["ms"] for n in names)
  rows["sum of the parts"] = {"ms": total, "gflops": flops["whole step"] / total / 1e6}
  kern = loop_kernel(size)
  if kern != "xla":  # the same sum with the loops on the kernel
    names = [f"{n} ({kern} kernel)" if n.startswith("recurrence") else n for n in names]
    total = sum(rows[n]["ms"] for n in names)
    rows[f"sum of the parts ({kern} kernel)"] = {
      "ms": total,
      "gflops": flops["whole step"] / total / 1e6,
    }
  return rows


def table(size: benchlib.Size, rows: Dict[str, Dict[str, float]]) -> str:
  whole = rows["whole step"]["ms"]
  lines = [
    f"(B,T,I,H,O) = {tuple(size)}",
    "| part | ms | share of the step | GFLOP/s |",
    "|---|---|---|---|",
  ]
  for name, r in rows.items():
    lines.append(f"| {name} | {r['ms']:.3f} | {r['ms'] / whole:.0%} | {r['gflops']:.1f} |")
  return "\n".join(lines)


def main(argv: List[str] | None = None) -> Dict[str, object]:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--sizes", type=benchlib.parse_sizes, default=benchlib.CPU_SIZES)
  p.add_argument("--reps", type=int, default=9, help="timed calls per part (median)")
  p.add_argument("--json", help="also write the numbers here (refuses an existing file)")
  args = p.parse_args(argv)
  if args.json and os.path.exists(args.json):
    raise SystemExit(f"--json {args.json} exists; give a new path")
  env = benchlib.environment()
  print(benchlib.format_environment(env))
  result: Dict[str, object] = {"environment": env, "sizes": {}}
  for size in args.sizes:
    rows = measure(tuple(size), args.reps)
    result["sizes"][",".join(map(str, size))] = rows  # type: ignore[index]
    print(table(tuple(size), rows), flush=True)
  if args.json:
    with open(args.json, "x", encoding="utf-8") as f:
      json.dump(benchlib.json_safe(result), f, indent=1)
  return result


if __name__ == "__main__":
  main()
