"""Peak temporary memory of one training gradient: autodiff vs hand BPTT vs checkpointed.

Compiles (never runs) ``jax.grad`` of the anchor loss (mean over the batch of Σ_t squared error
of a linear readout, float32) and reads XLA's buffer assignment,
``jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``: the scratch memory live
besides the arguments and outputs. Deterministic and cheap; the numbers are those of the
backend this runs on (CPU here).

Usage: python scripts/benchmarks/bench_memory.py [--sizes "B,T,I,H,O;..."] [--segment K]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
import jrnn  # noqa: E402
from common import benchlib  # noqa: E402
from jrnn.training.checkpointed import checkpointed_loss, default_segment_length  # noqa: E402
from jrnn.training.truncated import chunked_bptt  # noqa: E402


def _plain_loss(params, xs, targets, *, grad):
  ys = jrnn.forward(params, xs, grad=grad).ys
  return jrnn.squared_error(ys, targets, reduction="batch_mean")


def _temp_mib(fn, *args) -> float:
  stats = jax.jit(fn).lower(*args).compile().memory_analysis()
  # memory_analysis() is None only on a backend without one; the attribute error then says so.
  return stats.temp_size_in_bytes / 2**20  # type: ignore[union-attr]


def measure(size, segment=None):
  b, t, i, h, o = size
  f32 = jnp.float32
  params = jax.eval_shape(
    functools.partial(jrnn.init_params, n_in=i, n_hidden=h, n_out=o, dtype=f32), jax.random.key(0)
  )
  xs = jax.ShapeDtypeStruct((t, b, i), f32)
  tg = jax.ShapeDtypeStruct((t, b, o), f32)
  k = segment or default_segment_length(t)
  rows = {
    "autodiff": jax.grad(functools.partial(_plain_loss, grad="autodiff")),
    "hand": jax.grad(functools.partial(_plain_loss, grad="hand")),
    f"checkpointed k={k} (hand)": jax.grad(
      functools.partial(checkpointed_loss, segment_length=k, reduction="batch_mean", grad="hand")
    ),
    f"checkpointed k={k} (autodiff)": jax.grad(
      functools.partial(
        checkpointed_loss, segment_length=k, reduction="batch_mean", grad="autodiff"
      )
    ),
    f"truncated k1=k2={k} (not exact)": lambda p, x, y: (
      chunked_bptt(p, x, y, chunk_length=k, reduction="batch_mean").grads
    ),
  }
  return {name: _temp_mib(fn, params, xs, tg) for name, fn in rows.items()}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument(
    "--sizes",
    type=benchlib.parse_sizes,
    default=None,
    help='"B,T,I,H,O;B,T,I,H,O" (default: the CPU anchor sizes)',
  )
  ap.add_argument("--segment", type=int, default=None, help="segment length (default ⌈√T⌉)")
  args = ap.parse_args()
  sizes = args.sizes or benchlib.CPU_SIZES
  print(benchlib.format_environment(benchlib.environment()))
  print(f"backend: {jax.default_backend()}, float32; temp MiB of jit(grad(loss))")
  print("| (B, T, I, H, O) | T·B·H·4 bytes (MiB) | method | temp MiB |")
  print("|---|---|---|---|")
  for size in sizes:
    b, t, _, h, _ = size
    states = t * b * h * 4 / 2**20
    for name, mib in measure(size, args.segment).items():
      print(f"| {size} | {states:.2f} | {name} | {mib:.2f} |")


if __name__ == "__main__":
  main()
