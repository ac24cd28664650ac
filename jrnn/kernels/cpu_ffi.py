"""jrnn's CPU kernel for the recurrence's two loops (``kernel="cpu"``), registered with ``jax.ffi``.

The C++ source (``cpu_recurrence.cc``, beside this file) runs the forward loop
``h_t = σ(h_{t-1} W_hhᵀ + z_t + b)`` and the hand BPTT's reverse loop
``δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh)`` with ``W_hh`` packed once per call and kept in cache,
the step's product and its activation in one pass, and the work of a call split over threads
(whole members of a ``vmap``, or the columns of each step). The weight gradients stay one large
XLA GEMM over all ``T·B`` rows (:func:`jrnn.loops.recurrent_weight_grad`).

It is compiled on first use with the machine's C++ compiler (``$CXX``, else ``c++``, ``g++``,
``clang++``) against the XLA FFI headers that jaxlib ships, with ``-O3 -march=native``, into a
cache directory keyed by everything that changes the binary (source, compiler, flags, jaxlib
version, the CPU's feature flags): ``$JRNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/jrnn``, else
``~/.cache/jrnn``. The first build takes ~10 s; later processes load the cached library. Where
no compiler works, :func:`available` is ``False``, :func:`unavailable_reason` says why, and
``kernel="auto"`` runs the XLA loops: nothing else changes.

Environment:

* ``JRNN_CPU_KERNEL=0``: never build or use the kernel (``"auto"`` means XLA on CPU);
* ``JRNN_CPU_KERNEL_THREADS=N``: threads a call may use (default: the CPUs this process may run
  on, at most 8). The results do not depend on it: every output element is computed by one
  thread, in the same order, whatever the split.

Float32 and float64; activations ``tanh``, ``relu`` and ``identity`` (:data:`ACTIVATION_CODES`).
Values equal the XLA loops' to rounding, not bit for bit: the products sum in another order and
float32 ``tanh`` is the kernel's own (within 4 ulp of the exact value; XLA's is within 5).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import loops
from jrnn.activations import ACTIVATIONS, Activation

SOURCE = pathlib.Path(__file__).with_name("cpu_recurrence.cc")
ACTIVATION_CODES = {"tanh": 0, "relu": 1, "identity": 2}
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-pthread")
FORWARD_TARGET = "jrnn_cpu_recurrence_forward"
BACKWARD_TARGET = "jrnn_cpu_recurrence_backward"
LAYER_TARGET = "jrnn_cpu_layer_forward"
DISABLE_ENV = "JRNN_CPU_KERNEL"
THREADS_ENV = "JRNN_CPU_KERNEL_THREADS"
MAX_DEFAULT_THREADS = 8
# kernel="auto" runs the kernel below this many multiply-adds a step (B·H²), the XLA loops from
# it up: there XLA's per-step GEMM (both cores, ~118 GFLOP/s inside the loop) beat the kernel's.
# Interleaved A/B on a 2-core AMD EPYC (scripts/benchmarks/loops_ab.py;
# docs/bench/cpu_kernel_2026-12-08), kernel / XLA time of the forward and reverse loops:
# 0.70/0.53 at (B, H) = (32, 256), 0.79/0.76 at (128, 256), 0.76/0.60 at (16, 512), 0.68/0.66
# at (64, 512), but 1.12/1.07 at (128, 512) = 2**25, where the whole training step was 0.96-1.00
# of the XLA loops' in three runs. kernel="cpu" asked by name runs the kernel at every size.
AUTO_MAX_STEP = 2**25


def supported(dtype, act: Activation) -> bool:
  """Whether the kernel computes this ``dtype`` and activation (built or not).

  The activation must be jrnn's own entry (:data:`jrnn.activations.ACTIVATIONS`), not only
  carry its name: the kernel computes its ``σ`` and ``σ'`` itself, so an ``Activation`` called
  ``"tanh"`` with another function must not reach it.
  """
  return (
    np.dtype(dtype) in DTYPES and act.name in ACTIVATION_CODES and ACTIVATIONS.get(act.name) == act
  )


def cache_dir() -> pathlib.Path:
  """Where built kernels are kept (see the module docstring)."""
  if os.environ.get("JRNN_CACHE_DIR"):
    return pathlib.Path(os.environ["JRNN_CACHE_DIR"])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "jrnn"


def _compiler() -> Optional[str]:
  for name in filter(None, (os.environ.get("CXX"), "c++", "g++", "clang++")):
    path = shutil.which(name)
    if path:
      return path
  return None


def _cpu_flags() -> str:
  """The CPU's feature flags (what ``-march=native`` compiles for), so that a cache shared by
  machines of different kinds (a home directory on a cluster) never loads a foreign binary."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def _build_key(compiler: str) -> str:
  try:
    version = subprocess.run(
      [compiler, "--version"], capture_output=True, text=True, timeout=30
    ).stdout
  except (OSError, subprocess.SubprocessError):
    version = ""
  source = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
  parts = (
    source,
    compiler,
    version,
    " ".join(FLAGS),
    jax.__version__,  # the FFI headers ship with jaxlib: its version names them
    platform.machine(),
    _cpu_flags(),
  )
  return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


_BUILD_LOCK = threading.Lock()  # experiment scripts trace on several threads at once
_BUILT: list = []  # the one result of _build_and_register in this process


def _library() -> tuple:
  """``(ctypes library or None, why not)``: built (or found in the cache) and registered once
  per process, whichever thread asks first."""
  with _BUILD_LOCK:
    if not _BUILT:
      _BUILT.append(_build_and_register())
    return _BUILT[0]


def _build_and_register() -> tuple:
  if os.environ.get(DISABLE_ENV, "1") == "0":
    return None, f"turned off by {DISABLE_ENV}=0"
  compiler = _compiler()
  if compiler is None:
    return None, "no C++ compiler found ($CXX, c++, g++, clang++)"
  target = cache_dir() / f"cpu_recurrence-{_build_key(compiler)}.so"
  if not target.exists():
    try:
      target.parent.mkdir(parents=True, exist_ok=True)
      # Build beside the target, then rename: a process that finds the file finds it whole.
      fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
      os.close(fd)
      cmd = [compiler, *FLAGS, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", tmp]
      done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
      if done.returncode != 0:
        os.unlink(tmp)
        return None, f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}"
      os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as e:
      return None, f"building {target} failed: {e}"
  try:
    lib = ctypes.cdll.LoadLibrary(str(target))
    jax.ffi.register_ffi_target(FORWARD_TARGET, jax.ffi.pycapsule(lib.JrnnRnnForward), "cpu")
    jax.ffi.register_ffi_target(BACKWARD_TARGET, jax.ffi.pycapsule(lib.JrnnRnnBackward), "cpu")
    jax.ffi.register_ffi_target(LAYER_TARGET, jax.ffi.pycapsule(lib.JrnnRnnLayerForward), "cpu")
  except (OSError, AttributeError) as e:
    return None, f"loading {target} failed: {e}"
  return lib, ""


def available() -> bool:
  """Whether the kernel is built (building it now if needed) and registered with JAX."""
  return _library()[0] is not None


def unavailable_reason() -> str:
  """Why :func:`available` is ``False`` (empty when it is ``True``)."""
  return _library()[1]


def threads() -> int:
  """Threads a call may use: ``$JRNN_CPU_KERNEL_THREADS``, else this process's CPUs (at most 8)."""
  if os.environ.get(THREADS_ENV):
    return max(1, int(os.environ[THREADS_ENV]))
  try:
    n = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    n = os.cpu_count() or 1
  return max(1, min(n, MAX_DEFAULT_THREADS))


def _call(target: str, results, *operands, mask, act: Activation):
  """One ``jax.ffi`` call of the kernel: ``operands``, then the mask (a placeholder read only when
  ``has_mask``), and the attributes every handler takes. Leading ``vmap`` axes stay one call."""
  if not available():
    raise RuntimeError(f"jrnn's CPU kernel is not available: {unavailable_reason()}")
  call = jax.ffi.ffi_call(target, results, vmap_method="broadcast_all")
  return call(
    *operands,
    jnp.ones((1,), bool) if mask is None else mask.astype(bool),
    act=np.int64(ACTIVATION_CODES[act.name]),
    has_mask=mask is not None,
    threads=np.int64(threads()),
  )


def states(w_hh, z, h0, mask, act: Activation, b=None):
  """``hs (T, B, H)``, ``h_t = σ(h_{t-1} W_hhᵀ + z_t + b)``; a masked step (``mask (T, B)``
  False) copies ``h_{t-1}``. ``b (H,)`` defaults to zeros. Any leading ``vmap`` axes are one
  call."""
  b = jnp.zeros(z.shape[-1:], z.dtype) if b is None else b.astype(z.dtype)
  out = jax.ShapeDtypeStruct(z.shape, z.dtype)
  return _call(FORWARD_TARGET, out, w_hh, z, b, h0, mask=mask, act=act)


def layer_states(w_xh, w_hh, b, xs, h0, mask, act: Activation):
  """A whole layer's ``hs (T, B, H)`` from ``xs (T, B, I)``: ``h_t = σ(h_{t-1} W_hhᵀ + x_t W_xhᵀ
  + b)``, the input projection computed inside each step (no ``(T, B, H)`` array of projected
  inputs is made: at ``(128, 256, 128, 512, 128)`` that is 64 MiB written and read again, and
  XLA:CPU's GEMM for it ran at a third of the machine's rate, BENCHMARKS.md)."""
  out = jax.ShapeDtypeStruct(xs.shape[:-1] + w_hh.shape[-1:], xs.dtype)
  return _call(LAYER_TARGET, out, w_hh, w_xh, xs, b.astype(xs.dtype), h0, mask=mask, act=act)


def states_backward(act: Activation, w_hh, h0, mask, hs, g):
  """``(δ, ∂L/∂W_hh, ∂L/∂h_0)`` of the recurrence given the states' cotangent ``g (T, B, H)``:
  the reverse loop in the kernel, ``∂L/∂W_hh`` as one XLA GEMM."""
  out = (jax.ShapeDtypeStruct(g.shape, g.dtype), jax.ShapeDtypeStruct(g.shape[1:], g.dtype))
  deltas, dh0 = _call(BACKWARD_TARGET, out, w_hh, hs, g, mask=mask, act=act)
  return deltas, loops.recurrent_weight_grad(deltas, hs, h0), dh0
