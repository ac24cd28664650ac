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
            ``"pallas"``, ``"pallas_interpret"``        (:mod:`jrnn.kernels`)
``solver``  ``"sequential"`` (default)                  how the trajectory is evaluated: step by
                                                        step, or (later) parallel in time
==========  ==========================================  =========================================

``grad="autodiff"`` differentiates XLA loops only: it takes ``kernel="auto"`` or ``"xla"``.
"""
from __future__ import annotations

import warnings
from typing import Optional

import jax.numpy as jnp

from jrnn import bptt, kernels, loops, validation
from jrnn.activations import Activation
from jrnn.cell import add_bias
from jrnn.params import LayerParams

GRADS = ("hand", "autodiff")
SOLVERS = ("sequential",)
# The 0.1 option `bptt=` mixed two questions; each old value as (grad, kernel).
_BPTT_TO_CHOICES = {"hand": ("hand", "xla"), "autodiff": ("autodiff", "xla"),
                    "pallas": ("hand", "pallas"), "auto": ("hand", "auto")}


def check_choices(grad: str, kernel: str, solver: str) -> None:
  """Raises ``ValueError`` for an unknown or incompatible ``grad``/``kernel``/``solver``."""
  if grad not in GRADS:
    raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
  if kernel not in kernels.KERNELS:
    raise ValueError(f"kernel must be one of {kernels.KERNELS}, got {kernel!r}")
  if solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
  if grad == "autodiff" and kernel not in ("auto", "xla"):
    raise ValueError(f"grad='autodiff' differentiates XLA's loops; kernel={kernel!r} runs the "
                     "hand BPTT's loops. Use grad='hand' with it, or kernel='xla'")


def choices_from_bptt(bptt: Optional[str], grad: str, kernel: str) -> tuple:
  """``(grad, kernel)``, honouring the deprecated ``bptt=`` of jrnn 0.1 when it is given."""
  if bptt is None:
    return grad, kernel
  if bptt not in _BPTT_TO_CHOICES:
    raise ValueError(f"bptt must be one of {tuple(_BPTT_TO_CHOICES)}, got {bptt!r}")
  new = _BPTT_TO_CHOICES[bptt]
  warnings.warn(f"bptt={bptt!r} is deprecated since jrnn 0.2 and will be removed in 0.3; pass "
                f"grad={new[0]!r}, kernel={new[1]!r}", DeprecationWarning, stacklevel=3)
  return new


def _resolve(grad, kernel, solver, unroll, w_hh, u_like, act):
  check_choices(grad, kernel, solver)
  unroll = validation.check_unroll(unroll, u_like.shape[0])
  if grad == "autodiff":
    return "xla", unroll
  return kernels.resolve_kernel(kernel, n_hidden=w_hh.shape[0], n_batch=u_like.shape[1],
                                dtype=u_like.dtype, act=act, unroll=unroll)


def run_recurrence(w_hh, u, h0, mask, act: Activation, *, reverse: bool, unroll: int,
                   grad: str, kernel: str, solver: str):
  """``hs (T, B, H)`` of the recurrence over projected inputs ``u (T, B, H)`` (time-major)."""
  kern, unroll = _resolve(grad, kernel, solver, unroll, w_hh, u, act)
  u, mask = loops.in_time_order(u, mask, reverse)
  if grad == "hand":
    with bptt.explain_forward_mode():
      hs = bptt.hand_recurrence(w_hh, u, h0, mask, act, unroll, kern)
  else:
    hs = loops.scan_recurrence(w_hh, u, h0, mask, act, unroll)
  return jnp.flip(hs, 0) if reverse else hs


def run_layer(layer: LayerParams, xs, h0, mask, act: Activation, *, reverse: bool,
              unroll: int, grad: str, kernel: str, solver: str):
  """``hs (T, B, H)`` of one layer over time-major ``xs (T, B, I)`` from ``h0 (B, H)``."""
  kern, unroll = _resolve(grad, kernel, solver, unroll, layer.w_hh, xs, act)
  xs, mask = loops.in_time_order(xs, mask, reverse)
  if grad == "hand":
    with bptt.explain_forward_mode():
      hs = bptt.hand_layer(layer.w_xh, layer.w_hh, layer.b_h, xs, h0, mask, act, unroll, kern)
  else:
    u = add_bias(xs @ layer.w_xh.T, layer.b_h)
    hs = loops.scan_recurrence(layer.w_hh, u, h0, mask, act, unroll)
  return jnp.flip(hs, 0) if reverse else hs
