"""How fast this machine is right now: a 5-million-iteration Python loop (at module level, as
first run in session 6) and a NumPy float32 1024³ matrix product, timed once each.

Shared development machines drift (the same suite's time moved by ~20% within an hour on
2026-12-07); printing this before and after a timed run (``.ci/run``, ``scripts/bench.py``) says
which hour a number came from. ``python scripts/benchmarks/machine_speed.py``
"""

import time

import numpy as np

t0 = time.perf_counter()
s = 0
for i in range(5_000_000):
  s += i
loop_s = time.perf_counter() - t0
a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
a @ a  # warm-up
t0 = time.perf_counter()
for _ in range(10):
  a @ a
gemm_s = (time.perf_counter() - t0) / 10
print(f"python loop {loop_s:.3f} s, numpy 1024^3 {2 * 1024**3 / gemm_s / 1e9:.1f} GFLOP/s")
