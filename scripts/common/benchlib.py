"""What every benchmark and GPU script shares: the anchor sizes, one timer, the environment.

* Sizes are ``(B, T, I, H, O)``: batch, steps, inputs, hidden units, outputs, from
  ``../shared/ANCHORS.md`` (:data:`CPU_SIZES`, :data:`GPU_SIZES`), plus :data:`QUICK_SIZES` for
  smoke runs. :func:`parse_sizes` reads ``"B,T,I,H,O;B,T,I,H,O"``.
* :func:`flop_count`: the matrix-product FLOPs of one training step or forward pass.
* :func:`median_ms`: warm-up calls, then the median of timed repeats, each waiting for its
  result (``jax.block_until_ready``; a torch callable synchronises itself).
* :func:`environment`: the machine and library versions to record beside every number
  (``lscpu``'s model line, cores, python/jax/jaxlib/numpy/flax/haiku/equinox/torch versions,
  the jax backend and device, ``nvidia-smi`` and cuDNN on a GPU); :func:`describe_device` is its
  one-line form.

Imports only the standard library, NumPy and jax (lazily where it can), so every script
(and ``tests/test_bench.py``) can use it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import subprocess
import time
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Tuple

Size = Tuple[int, int, int, int, int]  # (B, T, I, H, O)

# ../shared/ANCHORS.md: the sizes jrnn is measured at against its peers.
CPU_SIZES: List[Size] = [(1, 1000, 16, 64, 16), (32, 128, 64, 256, 64), (128, 256, 128, 512, 128)]
GPU_SIZES: List[Size] = [
  (1, 1000, 64, 64, 64),
  (64, 256, 256, 256, 256),
  (128, 512, 512, 1024, 512),
  (512, 128, 1024, 1024, 1024),
]
QUICK_SIZES: List[Size] = [(2, 16, 4, 8, 4)]
LIBRARIES = ("jax", "jaxlib", "numpy", "flax", "dm-haiku", "equinox", "optax", "torch")


def anchor_sizes(on_gpu: bool) -> List[Size]:
  return list(GPU_SIZES if on_gpu else CPU_SIZES)


def parse_sizes(text: str) -> List[Size]:
  """``"1,1000,16,64,16;32,128,64,256,64"`` -> ``[(1, 1000, 16, 64, 16), (32, ...)]``."""
  sizes = []
  for part in filter(None, (p.strip() for p in text.split(";"))):
    try:
      size = tuple(int(v) for v in part.split(","))
    except ValueError:
      size = ()
    if len(size) != 5 or min(size) < 1:
      raise argparse.ArgumentTypeError(
        f"each size must be five positive integers B,T,I,H,O; got {part!r}"
      )
    sizes.append(size)
  if not sizes:
    raise argparse.ArgumentTypeError("--sizes is empty")
  return sizes


def flop_count(size: Size, mode: str) -> int:
  """Multiply-adds ×2 of the matrix products (elementwise work is not counted).

  Training ``6·T·B·(I·H + H·H) + 6·T·B·H·O`` (forward, and the two products of the backward
  pass per forward product); forward ``2·T·B·(I·H + H·H + H·O)``.
  """
  b, t, i, h, o = size
  if mode == "train":
    return 6 * t * b * (i * h + h * h) + 6 * t * b * h * o
  if mode == "forward":
    return 2 * t * b * (i * h + h * h + h * o)
  raise ValueError(f"mode must be 'train' or 'forward', got {mode!r}")


def median_ms(fn: Callable[[], object], reps: int, warmup: int = 2) -> float:
  """Median wall time of ``fn()`` in ms over ``reps`` calls, after ``warmup`` untimed calls
  (the first compiles). Each call waits for its result (``jax.block_until_ready``)."""
  import jax

  if reps < 1:
    raise ValueError(f"reps must be at least 1, got {reps}")
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times) * 1e3


def adaptive_seconds(
  fn: Callable[..., object], *args, max_calls: int = 5, target_s: float = 3.0
) -> Tuple[float, int]:
  """Median seconds of ``fn(*args)`` over up to ``max_calls`` calls after one untimed call (which
  compiles), fewer when a call is slow: about ``target_s`` seconds in all. Returns the median
  and the number of timed calls. For programs from milliseconds to many seconds a call, where
  :func:`median_ms`'s fixed count would take too long."""
  import jax

  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  calls = int(max(1, min(max_calls, target_s // max(first, 1e-6))))
  times = []
  for _ in range(calls):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), calls


def version(dist: str) -> Optional[str]:
  """The installed version of a distribution, or ``None``."""
  try:
    return metadata.version(dist)
  except metadata.PackageNotFoundError:
    return None


def cpu_model() -> str:
  """``lscpu``'s "Model name" (``/proc/cpuinfo`` where lscpu is missing)."""
  lscpu = shutil.which("lscpu")
  if lscpu:
    out = subprocess.run([lscpu], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    for line in out.stdout.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  try:
    with open("/proc/cpuinfo") as f:
      return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def json_safe(x):
  """``x`` with every non-finite float (in nested dicts, lists, tuples) replaced by ``None``."""
  if isinstance(x, dict):
    return {k: json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_safe(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def describe_device() -> str:
  """One line: the GPU's kind, or the CPU's model and core count."""
  import jax

  if jax.default_backend() == "gpu":
    return f"gpu: {jax.devices()[0].device_kind}"
  return f"cpu: {cpu_model()}, {os.cpu_count()} logical cores"


def _thp_mode() -> str:
  """The kernel's transparent-huge-page mode (``always``, ``madvise``, ``never``), or ``""``."""
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      text = f.read()
  except OSError:
    return ""
  chosen = [w[1:-1] for w in text.split() if w.startswith("[")]
  return chosen[0] if chosen else ""


def environment() -> Dict[str, object]:
  """The machine and versions behind a measurement, for the printed header and the JSON."""
  import jax

  info: Dict[str, object] = {
    "device": describe_device(),
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "cpu": cpu_model(),
    "logical_cores": os.cpu_count(),
    "python": platform.python_version(),
    "versions": {name: version(name) for name in LIBRARIES},
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    # glibc.malloc.hugetlb=1 backs XLA's large buffers with transparent huge pages: at the large
    # CPU size it changes every XLA program's time (BENCHMARKS.md), so it is part of the setting.
    "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    "transparent_hugepage": _thp_mode(),
  }
  if jax.default_backend() == "gpu":
    smi = shutil.which("nvidia-smi")
    if smi:
      q = subprocess.run(
        [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
      )
      info["nvidia_smi"] = q.stdout.strip()
    try:
      import torch

      if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
      pass
  return info


def format_environment(info: Dict[str, Any]) -> str:
  """The header lines every script prints before its numbers."""
  lines = [f"device: {info['device']}   jax backend: {info['backend']}"]
  if info["backend"] != "cpu":  # the host CPU, which the device line names only on a CPU
    lines.append(f"host lscpu model name: {info['cpu']}, {info['logical_cores']} logical cores")
  lines.append(
    f"versions: python {info['python']}, "
    + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
  )
  if info.get("nvidia_smi"):
    lines.append(f"nvidia-smi: {info['nvidia_smi']}")
  if info.get("xla_flags"):
    lines.append(f"XLA_FLAGS: {info['xla_flags']}")
  if info.get("glibc_tunables") or info.get("transparent_hugepage"):
    lines.append(
      f"GLIBC_TUNABLES: {info.get('glibc_tunables') or '(unset)'}   transparent huge "
      f"pages: {info.get('transparent_hugepage') or 'n/a'}"
    )
  return "\n".join(lines)
