"""The two sequential loops on jrnn's CPU kernel against the same loops on XLA's ``lax.scan``,
interleaved call by call (so a machine whose speed drifts moves both alike), at several
``(B, T, H)``: the measurement behind :data:`jrnn.kernels.cpu_ffi.AUTO_MAX_STEP`.

Forward: ``h_t = tanh(h_{t-1} W_hhᵀ + u_t)``; reverse: ``δ_t = (1 - h_t²) ⊙ (g_t + δ_{t+1} W_hh)``
(float32). Both sides are asked for by name (``kernel="cpu"``, ``kernel="xla"``), so the kernel
runs at every shape, past the limit where ``kernel="auto"`` stops using it.

  python scripts/benchmarks/loops_ab.py                       # the shapes in BENCHMARKS.md
  python scripts/benchmarks/loops_ab.py --shapes 32,128,256 --rounds 15
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import kernels
from jrnn.activations import ACTIVATIONS
from jrnn.kernels import cpu_ffi

SHAPES = "32,128,256;128,128,256;16,128,512;64,128,512;128,256,512"


def measure(b: int, t: int, h: int, rounds: int) -> Dict[str, float]:
  """Median ms of each loop on each side, calls interleaved."""
  tanh = ACTIVATIONS["tanh"]
  k = jax.random.split(jax.random.key(0), 3)
  w = jax.random.normal(k[0], (h, h), jnp.float32) / np.sqrt(h)
  u = jax.random.normal(k[1], (t, b, h), jnp.float32)
  g = jax.random.normal(k[2], (t, b, h), jnp.float32)
  h0 = jnp.zeros((b, h), jnp.float32)
  calls: Dict[str, Callable[[], object]] = {}
  for kern in ("cpu", "xla"):

    def forward(w, u, kern=kern):
      return kernels.states(kern, w, u, h0, None, tanh, 1)

    def reverse(w, hs, g, kern=kern):  # δ and ∂L/∂h_0 (XLA drops the ∂L/∂W_hh GEMM)
      return kernels.states_backward(kern, tanh, 1, w, None, h0, None, hs, g)[::2]

    fwd, bwd = jax.jit(forward), jax.jit(reverse)
    hs = fwd(w, u)
    calls[f"forward {kern}"] = functools.partial(fwd, w, u)
    calls[f"reverse {kern}"] = functools.partial(bwd, w, hs, g)
  times: Dict[str, List[float]] = {name: [] for name in calls}
  for fn in calls.values():
    jax.block_until_ready(fn())
  for _ in range(rounds):
    for name, fn in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(v) * 1e3) for name, v in times.items()}


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--shapes", default=SHAPES, help='"B,T,H;B,T,H"')
  p.add_argument("--rounds", type=int, default=9)
  args = p.parse_args()
  if not cpu_ffi.available():
    raise SystemExit(f"the CPU kernel is not built: {cpu_ffi.unavailable_reason()}")
  print(
    "| (B, T, H) | B·H² | forward kernel ms | forward XLA ms | kernel/XLA | reverse kernel ms "
    "| reverse XLA ms | kernel/XLA |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for shape in args.shapes.split(";"):
    b, t, h = (int(v) for v in shape.split(","))
    r = measure(b, t, h, args.rounds)
    fk, fx, rk, rx = (r[n] for n in ("forward cpu", "forward xla", "reverse cpu", "reverse xla"))
    print(
      f"| ({b}, {t}, {h}) | 2^{np.log2(b * h * h):.0f} | {fk:.2f} | {fx:.2f} | {fk / fx:.2f} "
      f"| {rk:.2f} | {rx:.2f} | {rk / rx:.2f} |"
    )


if __name__ == "__main__":
  main()
