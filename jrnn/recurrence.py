"""The sequential core shared by every forward pass: the recurrence over precomputed inputs.

.. math::

   h_t = m_t\\,σ(W_{hh} h_{t-1} + u_t) + (1 - m_t)\\,h_{t-1}, \\qquad u_t = W_{xh} x_t + b_h

The input projection ``u`` is computed before the loop as one matrix product over all ``T·B``
rows; only ``W_hh h_{t-1}`` stays inside it. ``m_t`` is the mask: a padded step (``m_t = 0``)
leaves the state unchanged (exactly, by selection, not by arithmetic).

``bptt`` chooses how ``jax.grad`` differentiates it:

* ``"hand"`` (default): the hand-derived backward pass of :mod:`jrnn.bptt`, bound by
  ``jax.custom_vjp``; a reverse scan carries only ``δ`` and the weight gradient is one GEMM.
* ``"autodiff"``: JAX differentiates the ``lax.scan``; supports forward mode (``jax.jvp``,
  ``jax.jacfwd``) as well.
* ``"pallas"``: the hand-derived backward pass with both loops in persistent Pallas kernels
  (:mod:`jrnn.pallas_rnn`: one launch per sequence, ``W_hh`` on chip); compiled with Triton on a
  CUDA GPU, run in Pallas interpret mode elsewhere (slow: for tests).
* ``"auto"``: ``"pallas"`` where :func:`jrnn.pallas_rnn.pallas_supported` says the compiled
  kernel applies (a CUDA GPU, supported dtype, activation and ``H``), else ``"hand"``; on a GPU
  the ``"hand"`` fallback's loops are unrolled :data:`GPU_XLA_UNROLL` steps when ``unroll`` is
  left at 1 (:func:`auto_unroll`).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike, get_activation

BPTT_MODES = ("hand", "autodiff", "pallas", "auto")
# On an H100 (BENCHMARKS.md) unrolling the XLA loops 32 steps cut the training step 1.5x at
# (B, T, H) = (64, 256, 256), 12% at (128, 512, 1024) and 4x at (1, 1000, 64); it was level
# (within 3%) at (512, 128, 1024). Each step of a GPU scan is a kernel launch; unrolling lets
# XLA fuse across steps.
GPU_XLA_UNROLL = 32


def scan_recurrence(w_hh, u, h0, mask, act, unroll):
  """Plain ``lax.scan`` of the recurrence, forward in time. Returns ``hs (T, B, H)``."""
  w_t = w_hh.T

  def body(h, inp):
    u_t, m_t = inp
    h_new = act.fn(h @ w_t + u_t)
    if m_t is not None:
      h_new = jnp.where(m_t[:, None], h_new, h)
    return h_new, h_new

  _, hs = jax.lax.scan(body, h0, (u, mask), unroll=unroll)
  return hs


def resolve_bptt(bptt: str, n_hidden: int, n_batch: int, dtype, act) -> tuple:
  """Maps a ``bptt`` option to ``("hand", kernel)`` or ``("autodiff", "xla")``."""
  if bptt not in BPTT_MODES:
    raise ValueError(f"bptt must be one of {BPTT_MODES}, got {bptt!r}")
  backend = jax.default_backend()
  if bptt == "auto":
    from jrnn import pallas_rnn
    ok = pallas_rnn.pallas_supported(n_hidden, n_batch, dtype, backend, activation=act.name)
    return ("hand", "pallas") if ok else ("hand", "xla")
  if bptt == "pallas":
    return "hand", "pallas" if backend in ("gpu", "cuda") else "pallas_interpret"
  return bptt, "xla"


def auto_unroll(bptt: str, kernel: str, unroll: int) -> int:
  """The ``unroll`` the loops get: ``bptt="auto"`` on a GPU's XLA path raises 1 to 32."""
  if bptt == "auto" and kernel == "xla" and unroll == 1 and jax.default_backend() == "gpu":
    return GPU_XLA_UNROLL
  return unroll


def in_time_order(seq, mask, reverse: bool):
  """``(seq, mask)`` as the loop consumes them: mask boolean, both flipped in time if ``reverse``.

  The loops always run forward in time; a reverse direction flips its inputs and its outputs.
  """
  if mask is not None:
    mask = jnp.asarray(mask).astype(bool)
  if reverse:
    seq = jnp.flip(seq, 0)
    mask = None if mask is None else jnp.flip(mask, 0)
  return seq, mask


def recurrence(
    w_hh: jax.Array,
    u: jax.Array,
    h0: jax.Array,
    mask: Optional[jax.Array] = None,
    *,
    activation: ActivationLike = "tanh",
    reverse: bool = False,
    unroll: int = 1,
    bptt: str = "hand",
) -> jax.Array:
  """Runs the recurrence over ``u (T, B, H)`` from ``h0 (B, H)``; returns ``hs (T, B, H)``.

  Args:
    w_hh: ``(H, H)``.
    u: ``(T, B, H)``, the projected inputs ``x_t W_xhᵀ + b_h``.
    h0: ``(B, H)``.
    mask: ``(T, B)`` boolean, or ``None`` for all steps valid.
    activation: ``σ``.
    reverse: run from ``t = T-1`` down to ``0`` (outputs stay aligned with ``u``).
    unroll: passed to ``lax.scan``.
    bptt: ``"hand"``, ``"autodiff"``, ``"pallas"`` or ``"auto"`` (see the module docstring).
  """
  act = get_activation(activation)
  mode, kernel = resolve_bptt(bptt, w_hh.shape[0], u.shape[1], u.dtype, act)
  unroll = auto_unroll(bptt, kernel, unroll)
  u, mask = in_time_order(u, mask, reverse)
  if mode == "hand":
    from jrnn import bptt as _bptt  # the hand path builds on this module
    with _bptt.explain_forward_mode():
      hs = (_bptt.hand_recurrence(w_hh, u, h0, mask, act, unroll) if kernel == "xla" else
            _bptt.pallas_recurrence(w_hh, u, h0, mask, act, unroll, kernel))
  else:
    hs = scan_recurrence(w_hh, u, h0, mask, act, unroll)
  return jnp.flip(hs, 0) if reverse else hs
