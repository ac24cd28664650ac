"""Which kernel runs the two sequential loops of the recurrence (the forward states and the
``δ`` recursion of the hand BPTT).

========================  ==========================================================================
``kernel``                what runs the loops
========================  ==========================================================================
``"xla"``                 :mod:`jrnn.loops`: ``lax.scan``, any backend
``"cpu"``                 :mod:`jrnn.kernels.cpu_ffi`: a C++ kernel through ``jax.ffi``, CPU only,
                          built on first use (float32/float64; tanh, relu, identity)
``"pallas"``              :mod:`jrnn.kernels.pallas_triton`, compiled with Triton: CUDA GPUs only
``"pallas_interpret"``    the same Pallas kernels evaluated by XLA (any backend, slow: for tests)
``"auto"``                ``"pallas"`` where :func:`pallas_supported` allows it; on a CPU with
                          one device, ``"cpu"`` for float32 below ``B·H² = 2^25`` where
                          :func:`jrnn.kernels.cpu_ffi.supported` and the kernel is built; else
                          ``"xla"``
========================  ==========================================================================

Asking for ``"pallas"`` without a GPU, or for ``"cpu"`` off a CPU, with an unsupported dtype or
activation, or where the kernel could not be built, is an error, never a silent fall-back.
``"auto"`` keeps float64 on the XLA loops: the float64 checks of the hand BPTT against autodiff
compare two XLA programs, and the float64 kernel's ``tanh`` is libm's, unvectorised.
The kernels sit below :mod:`jrnn.bptt`, whose ``custom_vjp`` binds them; they know nothing of
gradients beyond the two loops.
"""

from __future__ import annotations

import jax
import numpy as np

from jrnn import loops
from jrnn.activations import Activation
from jrnn.cell import add_bias
from jrnn.kernels import cpu_ffi, pallas_triton
from jrnn.kernels.pallas_triton import pallas_supported

KERNELS = ("auto", "xla", "cpu", "pallas", "pallas_interpret")
# On an H100 (BENCHMARKS.md) unrolling the XLA loops 32 steps cut the training step 1.5x at
# (B, T, H) = (64, 256, 256), 12% at (128, 512, 1024) and 4x at (1, 1000, 64); it was level
# (within 3%) at (512, 128, 1024). Each step of a GPU scan is a kernel launch; unrolling lets
# XLA fuse across steps.
GPU_XLA_UNROLL = 32


def _on_gpu() -> bool:
  return jax.default_backend() in ("gpu", "cuda")


def resolve_kernel(
  kernel: str, *, n_hidden: int, n_batch: int, dtype, act: Activation, unroll: int
) -> tuple:
  """``(concrete kernel, unroll)`` for a requested ``kernel`` (one of :data:`KERNELS`).

  ``"auto"`` picks ``"pallas"`` where the compiled kernel applies, else ``"xla"``; on a GPU its
  ``"xla"`` fallback unrolls the loops :data:`GPU_XLA_UNROLL` steps when ``unroll`` is 1.

  Raises:
    ValueError: an unknown ``kernel``, or ``"pallas"`` where no CUDA GPU is present.
  """
  if kernel not in KERNELS:
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
  if kernel == "auto":
    if pallas_supported(n_hidden, n_batch, dtype, jax.default_backend(), activation=act.name):
      return "pallas", unroll
    if _cpu_kernel_applies(dtype, act, n_batch=n_batch, n_hidden=n_hidden):
      return "cpu", unroll
    return "xla", GPU_XLA_UNROLL if unroll == 1 and _on_gpu() else unroll
  if kernel == "pallas" and not _on_gpu():
    raise ValueError(
      f"kernel='pallas' compiles Triton kernels for a CUDA GPU, but JAX's backend is "
      f"{jax.default_backend()!r}; use kernel='xla' (or 'auto'), or kernel='pallas_interpret' "
      "to run the Pallas kernels in interpret mode (slow, for testing)"
    )
  if kernel == "cpu":
    _check_cpu_kernel(dtype, act)
  return kernel, unroll


def _cpu_kernel_applies(dtype, act: Activation, *, n_batch: int, n_hidden: int) -> bool:
  """``"auto"``'s test for ``"cpu"``: a CPU backend with one device, float32, a supported
  activation, a step below :data:`jrnn.kernels.cpu_ffi.AUTO_MAX_STEP` multiply-adds
  (``B·H²``; measured: XLA's loops are faster from there), built.

  One device: XLA's SPMD partitioner does not know how to split a custom call, so under a
  data-parallel mesh (several CPU devices or processes, :mod:`jrnn.training.sharding`) it would
  gather the whole batch onto every device; the XLA loops split with the batch.
  """
  return (
    jax.default_backend() == "cpu"
    and jax.device_count() == 1
    and np.dtype(dtype) == np.float32
    and n_batch * n_hidden**2 < cpu_ffi.AUTO_MAX_STEP
    and cpu_ffi.supported(dtype, act)
    and cpu_ffi.available()
  )


def _check_cpu_kernel(dtype, act: Activation) -> None:
  if jax.default_backend() != "cpu":
    raise ValueError(
      f"kernel='cpu' runs jrnn's C++ kernel on the CPU, but JAX's backend is "
      f"{jax.default_backend()!r}; use kernel='auto' or 'xla'"
    )
  if not cpu_ffi.supported(dtype, act):
    raise ValueError(
      f"kernel='cpu' takes float32 or float64 and an activation in "
      f"{sorted(cpu_ffi.ACTIVATION_CODES)}; got dtype {np.dtype(dtype).name} and activation "
      f"{act.name!r}. Use kernel='auto' or 'xla'"
    )
  if not cpu_ffi.available():
    raise ValueError(
      f"kernel='cpu' could not be built or loaded: {cpu_ffi.unavailable_reason()}. "
      "Use kernel='auto' or 'xla'"
    )


def _kernel_unroll(unroll: int):
  """``unroll=1`` (no preference) lets the Pallas kernel use its tuned default."""
  return None if unroll == 1 else unroll


def states(kernel: str, w_hh, u, h0, mask, act: Activation, unroll: int, b=None):
  """The forward loop ``hs (T, B, H)`` over ``u (T, B, H)`` (plus a bias ``b (H,)`` if given)
  by a concrete ``kernel``.

  The XLA loop adds ``b`` inside its step, which saves a ``(T, B, H)`` buffer and a pass over it
  (BENCHMARKS.md, issue 22); the Pallas kernels read ``u + b``.
  """
  if kernel == "xla":
    return loops.forward_states(w_hh, u, h0, mask, act, unroll, b)
  if kernel == "cpu":
    return cpu_ffi.states(w_hh, u, h0, mask, act, b)
  if b is not None:
    u = add_bias(u, b)
  return pallas_triton.pallas_recurrence(
    w_hh, u, h0, mask, act, _kernel_unroll(unroll), interpret=kernel == "pallas_interpret"
  )


def states_backward(kernel: str, act: Activation, unroll: int, w_hh, u, h0, mask, hs, g):
  """``(δ, ∂L/∂W_hh, ∂L/∂h_0)`` given the states' cotangent ``g``, by a concrete ``kernel``."""
  if kernel == "xla":
    return loops.states_backward(act, unroll, w_hh, u, h0, mask, hs, g)
  if kernel == "cpu":
    return cpu_ffi.states_backward(act, w_hh, h0, mask, hs, g)
  return pallas_triton.pallas_recurrence_bwd(
    w_hh, u, h0, mask, hs, g, act, _kernel_unroll(unroll), interpret=kernel == "pallas_interpret"
  )


__all__ = (
  "GPU_XLA_UNROLL",
  "cpu_ffi",
  "KERNELS",
  "pallas_supported",
  "pallas_triton",
  "resolve_kernel",
  "states",
  "states_backward",
)
