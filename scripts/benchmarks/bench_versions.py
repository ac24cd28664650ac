"""Two checkouts of jrnn, one training step, the same sizes: did a change cost time?

Times ``jax.jit(jax.value_and_grad(loss))`` with ``loss = Σ (jrnn.forward(p, xs).ys - ŷ)² / B``
(``forward``'s defaults, so the hand BPTT in 0.1 and 0.2 alike) for the jrnn package found under
each ``ROOT`` (a checkout or ``git worktree``), each in its own fresh interpreter, the roots
alternating for ``--rounds`` rounds so that drift in the machine's load hits both. Prints the
median per root and size and the ratio ``B / A``.

  git worktree add /tmp/jrnn-0.1 b46a0e0
  python scripts/benchmarks/bench_versions.py /tmp/jrnn-0.1 . --rounds 2

Sizes default to the CPU anchor sizes of ``../shared/ANCHORS.md`` (``(B, T, I, H, O)``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
from typing import Dict, List, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
from common import benchlib  # noqa: E402  pylint: disable=wrong-import-position

# Run in the child: argv = [root, sizes-json]; prints {size: median ms}.
_CHILD = r"""
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("ignore", DeprecationWarning)
import jax, jax.numpy as jnp
import jrnn
sys.path.insert(0, sys.argv[3])
from common import benchlib
out = {}
for b, t, n_in, h, o in json.loads(sys.argv[2]):
  p = jrnn.init_params(jax.random.key(0), n_in, h, o, scheme="orthogonal")
  xs = jax.random.normal(jax.random.key(1), (t, b, n_in))
  target = jax.random.normal(jax.random.key(2), (t, b, o))
  def loss(p):
    return jnp.sum((jrnn.forward(p, xs).ys - target) ** 2) / b
  step = jax.jit(jax.value_and_grad(loss))
  reps = 5 if b * t * h * h > 1e9 else 30
  out[str((b, t, n_in, h, o))] = benchlib.median_ms(lambda: step(p), reps)
print(json.dumps({"jrnn": jrnn.__file__, "ms": out}))
"""


def run_child(root: pathlib.Path, sizes: List[benchlib.Size]) -> Dict[str, float]:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # scripts/
  proc = subprocess.run(
    [sys.executable, "-c", _CHILD, str(root), json.dumps(sizes), here],
    capture_output=True,
    text=True,
    check=False,
    cwd="/",
  )
  if proc.returncode:
    raise SystemExit(f"the run for {root} failed:\n{proc.stderr[-2000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  if not result["jrnn"].startswith(str(root.resolve())):
    raise SystemExit(f"{root}: imported jrnn from {result['jrnn']}, not from this root")
  return result["ms"]


def main(argv: Sequence[str] = ()) -> Dict[str, Dict[str, List[float]]]:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("a", type=pathlib.Path, help="root of checkout A (the baseline)")
  p.add_argument("b", type=pathlib.Path, help="root of checkout B")
  p.add_argument("--rounds", type=int, default=2, help="alternations A, B (default 2)")
  p.add_argument(
    "--sizes",
    type=benchlib.parse_sizes,
    default=benchlib.CPU_SIZES,
    help="B,T,I,H,O;... (default: the CPU anchor sizes)",
  )
  cfg = p.parse_args(list(argv))
  for root in (cfg.a, cfg.b):
    if not (root / "jrnn" / "__init__.py").is_file():
      p.error(f"{root} holds no jrnn/__init__.py")
  if cfg.rounds < 1:
    p.error(f"--rounds must be >= 1, got {cfg.rounds}")
  print(benchlib.format_environment(benchlib.environment()))
  times: Dict[str, Dict[str, List[float]]] = {"a": {}, "b": {}}
  for r in range(cfg.rounds):
    for name, root in (("a", cfg.a), ("b", cfg.b)):
      for size, ms in run_child(root, cfg.sizes).items():
        times[name].setdefault(size, []).append(ms)
      print(f"round {r + 1}, {name} = {root}: done", flush=True)
  print(f"\ntrain step, median over rounds of each round's median (ms); A = {cfg.a}, B = {cfg.b}")
  print(f"{'size (B,T,I,H,O)':28s} {'A ms':>10s} {'B ms':>10s} {'B / A':>7s}")
  for size in times["a"]:
    a, b = statistics.median(times["a"][size]), statistics.median(times["b"][size])
    print(f"{size:28s} {a:10.2f} {b:10.2f} {b / a:7.2f}")
  return times


if __name__ == "__main__":
  main(sys.argv[1:])
