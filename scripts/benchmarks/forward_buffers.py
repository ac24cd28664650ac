"""The large temporaries of jrnn's compiled forward pass at the large CPU anchor size.

``python scripts/benchmarks/forward_buffers.py`` prints, for ``grad="hand"`` and
``"autodiff"``, XLA's temporary and output sizes (``memory_analysis``) and the compiled HLO lines
that hold a ``(T, B, H)`` or ``(T·B, H)`` float32 buffer (64 MiB each at (128,256,128,512,128)).
"""

import os
import re
import sys

import jax

import jrnn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import bench_impls  # noqa: E402


def main() -> None:
  problem = bench_impls.make_problem((128, 256, 128, 512, 128))
  for grad in ("hand", "autodiff"):

    def ys(p, xs, grad=grad):
      return jrnn.forward(p, xs, grad=grad).ys

    compiled = jax.jit(ys).lower(problem.params, problem.xs).compile()
    mem, text = compiled.memory_analysis(), compiled.as_text()
    if mem is None or text is None:
      raise SystemExit("this backend reports no memory analysis or HLO text")
    print(
      f"grad={grad}: temporaries {mem.temp_size_in_bytes / 2**20:.1f} MiB, "
      f"output {mem.output_size_in_bytes / 2**20:.1f} MiB"
    )
    for line in text.splitlines():
      if re.search(r"f32\[256,128,512\]|f32\[32768,512\]", line) and " = " in line:
        print("   ", line.strip()[:160])


if __name__ == "__main__":
  main()
