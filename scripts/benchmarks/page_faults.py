"""How much of an XLA:CPU program's time is the kernel faulting in fresh output pages.

XLA:CPU allocates a program's large buffers anew on every call; glibc serves allocations above
32 MiB by ``mmap``, so every call faults its pages in, 4 KiB at a time unless transparent huge
pages back them. This times ``x + 1`` on a ``(32768, 512)`` float32 array (64 MiB, the size of
``u``, ``hs`` or ``δ`` at the large CPU anchor size) in XLA and in NumPy and counts the minor
page faults per call; with ``--steps``, also the training step and the forward pass of jrnn and
of its JAX peers at the large anchor size (bench.py's programs), beside each program's
temporary memory. Run it twice to compare::

  python scripts/benchmarks/page_faults.py [--steps]
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/benchmarks/page_faults.py [--steps]
"""

import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _median_ms_and_faults(fn, calls: int = 9):
  fn()
  times, start = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(calls):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / calls
  return 1e3 * float(np.median(times)), faults


def main() -> None:
  x = jnp.ones((32768, 512), jnp.float32)
  add_one = jax.jit(lambda x: x + 1.0)
  xn = np.ones((32768, 512), np.float32)
  out = np.empty_like(xn)
  print(f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  for name, fn in (
    ("XLA x + 1 (fresh output)", lambda: add_one(x).block_until_ready()),
    ("NumPy x + 1 (fresh output)", lambda: xn + 1.0),
    ("NumPy x + 1 (into a reused array)", lambda: np.add(xn, 1.0, out=out)),
  ):
    ms, faults = _median_ms_and_faults(fn)
    print(f"{name:36s} {ms:7.2f} ms  {faults:8.0f} minor page faults per call")
  if "--steps" in sys.argv[1:]:
    _steps()


def _steps() -> None:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import bench_impls  # pylint: disable=import-outside-toplevel

  problem = bench_impls.make_problem((128, 256, 128, 512, 128))
  builders = {
    "jrnn hand": lambda p: bench_impls.build_jrnn(p, grad="hand"),
    "jrnn autodiff": lambda p: bench_impls.build_jrnn(p, grad="autodiff"),
    "flax nn.RNN(SimpleCell)": bench_impls.build_flax,
    "haiku VanillaRNN": bench_impls.build_haiku,
  }
  print("(B,T,I,H,O) = (128, 256, 128, 512, 128); median of 5 calls")
  for name, build in builders.items():
    impl = build(problem)
    for mode in ("train", "forward"):
      ms, faults = _median_ms_and_faults(getattr(impl, mode), calls=5)
      peak = impl.peak_bytes[mode]
      peak_text = f"{peak / 2**20:.0f} MiB" if peak else "n/a"
      print(
        f"{name:24s} {mode:8s} {ms:8.1f} ms  {faults:8.0f} faults per call  "
        f"(temporaries {peak_text})"
      )


if __name__ == "__main__":
  main()
