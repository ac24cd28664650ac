"""The engine: one place where the choices of how to run and differentiate a layer meet.

Three independent choices, each a keyword of every forward function (:func:`jrnn.forward`,
:func:`jrnn.stacked_forward`, :func:`jrnn.layer_forward`, :func:`jrnn.recurrence`) and of the
training helpers:

==========  ==========================================  =========================================
argument    values                                      question it answers
==========  ==========================================  =========================================
``grad``    ``"hand"`` (default), ``"autodiff"``        how ``jax.grad`` gets the gradient: the
                                                        hand-derived BPTT bound by
                                                        ``jax.custom_vjp`` (:mod:`jrnn.bptt`), or
                                                        JAX differentiating ``lax.scan`` (which
                                                        also gives forward mode)
``kernel``  ``"auto"`` (default), ``"xla"``,            which code runs the sequential loops
            ``"cpu"``, ``"pallas"``,                    (:mod:`jrnn.kernels`)
            ``"pallas_interpret"``
``solver``  ``"sequential"`` (default), ``"deer"``,      how the trajectory is evaluated: step by
            ``"quasi_deer"``, ``"elk"``, ``"quasi_elk"``  step, or parallel in time by Newton's
            or a :class:`jrnn.parallel.Solver`          method (:mod:`jrnn.parallel`)
==========  ==========================================  =========================================

``grad="autodiff"`` differentiates XLA loops only: it takes ``kernel="auto"`` or ``"xla"``.

A parallel solver (any ``solver`` but ``"sequential"``) runs the layer through
:func:`jrnn.parallel.layer.parallel_recurrence`, a ``custom_vjp`` whose backward pass is BPTT's
reverse recursion at the solver's trajectory (exact gradients, differentiated through the fixed
point rather than through the iterations). It takes ``grad="hand"`` only: ``grad="autodiff"``
would differentiate the Newton iterations themselves (costly, and only as exact as the last
iterate), so that pair is an error. Its sequential pieces (the ``"sequential"`` adjoint, the
``"fallback"`` of ``on_failure``) run :mod:`jrnn.loops` (XLA), so it takes ``kernel="auto"`` or
``"xla"``. The solver's diagnostics (iterations, residual) are not part of
:class:`jrnn.RNNOutput`; :func:`jrnn.parallel.parallel_forward` and :func:`jrnn.parallel.solve`
return them. A solve that fails follows ``Solver.on_failure`` (``"raise"`` by default for the
method names).
"""

from __future__ import annotations

import warnings
from typing import Optional

import jax.numpy as jnp

from jrnn import bptt, kernels, loops, parallel, validation
from jrnn.activations import Activation
from jrnn.cell import add_bias
from jrnn.params import LayerParams

GRADS = ("hand", "autodiff")
SOLVERS = ("sequential",) + parallel.METHODS
# The 0.1 option `bptt=` mixed two questions; each old value as (grad, kernel).
_BPTT_TO_CHOICES = {
  "hand": ("hand", "xla"),
  "autodiff": ("autodiff", "xla"),
  "pallas": ("hand", "pallas"),
  "auto": ("hand", "auto"),
}


def check_choices(grad: str, kernel: str, solver: str | parallel.Solver) -> None:
  """Raises ``ValueError`` for an unknown or incompatible ``grad``/``kernel``/``solver``."""
  if grad not in GRADS:
    raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
  if kernel not in kernels.KERNELS:
    raise ValueError(f"kernel must be one of {kernels.KERNELS}, got {kernel!r}")
  if isinstance(solver, parallel.Solver):
    parallel.as_solver(solver)
  elif not isinstance(solver, str) or solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS} or a jrnn.parallel.Solver, got {solver!r}")
  if grad == "autodiff" and kernel not in ("auto", "xla"):
    raise ValueError(
      f"grad='autodiff' differentiates XLA's loops; kernel={kernel!r} runs the "
      "hand BPTT's loops. Use grad='hand' with it, or kernel='xla'"
    )
  if is_parallel(solver):
    if grad != "hand":
      raise ValueError(
        f"solver={_solver_name(solver)!r} differentiates through its fixed point "
        "with the hand BPTT (grad='hand'); grad='autodiff' would differentiate "
        "the Newton iterations. Use grad='hand', or solver='sequential' for "
        "autodiff"
      )
    if kernel not in ("auto", "xla"):
      raise ValueError(
        f"solver={_solver_name(solver)!r} runs its sequential pieces (adjoint, "
        f"fallback) with jrnn.loops (XLA); kernel={kernel!r} applies to "
        "solver='sequential' only. Use kernel='auto' or 'xla'"
      )


def is_parallel(solver) -> bool:
  """Whether ``solver`` (a name or a :class:`jrnn.parallel.Solver`) is a parallel solver."""
  return isinstance(solver, parallel.Solver) or solver != "sequential"


def _solver_name(solver) -> str:
  return solver.method if isinstance(solver, parallel.Solver) else solver


def choices_from_bptt(bptt: Optional[str], grad: str, kernel: str) -> tuple:
  """``(grad, kernel)``, honouring the deprecated ``bptt=`` of jrnn 0.1 when it is given.

  A ``grad`` or ``kernel`` given beside ``bptt`` that differs from both its default and what
  ``bptt`` implies is a ``ValueError`` naming both (a value equal to the default cannot be told
  from one left out, and is overridden by ``bptt``).
  """
  if bptt is None:
    return grad, kernel
  if bptt not in _BPTT_TO_CHOICES:
    raise ValueError(f"bptt must be one of {tuple(_BPTT_TO_CHOICES)}, got {bptt!r}")
  new = _BPTT_TO_CHOICES[bptt]
  # grad/kernel at their defaults may have been left out; any other value was asked for.
  conflicts = [
    f"{name}={value!r}"
    for name, value, default, implied in (
      ("grad", grad, "hand", new[0]),
      ("kernel", kernel, "auto", new[1]),
    )
    if value not in (default, implied)
  ]
  if conflicts:
    raise ValueError(
      f"bptt={bptt!r} (deprecated) means grad={new[0]!r}, kernel={new[1]!r} and "
      f"conflicts with {', '.join(conflicts)}; pass grad= and kernel= alone"
    )
  warnings.warn(
    f"bptt={bptt!r} is deprecated since jrnn 0.2 and will be removed in 0.3; pass "
    f"grad={new[0]!r}, kernel={new[1]!r}",
    DeprecationWarning,
    stacklevel=3,
  )
  return new


def _resolve(grad, kernel, solver, unroll, w_hh, u_like, act):
  check_choices(grad, kernel, solver)
  unroll = validation.check_unroll(unroll, u_like.shape[0])
  if grad == "autodiff":
    return "xla", unroll
  return kernels.resolve_kernel(
    kernel,
    n_hidden=w_hh.shape[0],
    n_batch=u_like.shape[1],
    dtype=u_like.dtype,
    act=act,
    unroll=unroll,
  )


def run_recurrence(
  w_hh, u, h0, mask, act: Activation, *, reverse: bool, unroll: int, grad: str, kernel: str, solver
):
  """``hs (T, B, H)`` of the recurrence over projected inputs ``u (T, B, H)`` (time-major)."""
  kern, unroll = _resolve(grad, kernel, solver, unroll, w_hh, u, act)
  if is_parallel(solver):
    with bptt.explain_forward_mode():
      return parallel.layer.run(w_hh, u, h0, mask, act, solver, reverse=reverse, unroll=unroll)[0]
  u, mask = loops.in_time_order(u, mask, reverse)
  if grad == "hand":
    with bptt.explain_forward_mode():
      hs = bptt.hand_recurrence(w_hh, u, h0, mask, act, unroll, kern)
  else:
    hs = loops.scan_recurrence(w_hh, u, h0, mask, act, unroll)
  return jnp.flip(hs, 0) if reverse else hs


def run_layer(
  layer: LayerParams,
  xs,
  h0,
  mask,
  act: Activation,
  *,
  reverse: bool,
  unroll: int,
  grad: str,
  kernel: str,
  solver,
):
  """``hs (T, B, H)`` of one layer over time-major ``xs (T, B, I)`` from ``h0 (B, H)``."""
  kern, unroll = _resolve(grad, kernel, solver, unroll, layer.w_hh, xs, act)
  if is_parallel(solver):
    xs = loops.zero_masked(xs, None if mask is None else jnp.asarray(mask).astype(bool))
    u = add_bias(xs @ layer.w_xh.T, layer.b_h)  # differentiated by JAX: dW_xh = Σ δᵀx, ...
    with bptt.explain_forward_mode():
      return parallel.layer.run(
        layer.w_hh, u, h0, mask, act, solver, reverse=reverse, unroll=unroll
      )[0]
  xs, mask = loops.in_time_order(xs, mask, reverse)
  if grad == "hand":
    with bptt.explain_forward_mode():
      hs = bptt.hand_layer(layer.w_xh, layer.w_hh, layer.b_h, xs, h0, mask, act, unroll, kern)
  else:
    u = add_bias(xs @ layer.w_xh.T, layer.b_h)
    hs = loops.scan_recurrence(layer.w_hh, u, h0, mask, act, unroll)
  return jnp.flip(hs, 0) if reverse else hs
