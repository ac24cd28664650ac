"""Persistent-RNN Pallas kernels (Triton): each sequential loop of the hand BPTT in one launch.

Same maths as :mod:`jrnn.loops`, batched as rows (``a_t = h_{t-1} W_hhᵀ + u_t``):

.. math::

   h_t = m_t\\,σ(a_t) + (1 - m_t)\\,h_{t-1}, \\qquad
   δ_t = m_t\\,σ'(a_t) ⊙ (g_t + c_{t+1}), \\qquad
   c_t = δ_t W_{hh} + (1 - m_t)(g_t + c_{t+1}), \\qquad c_{T+1} = 0

with ``∂L/∂u_t = δ_t``, ``∂L/∂h_0 = c_1`` and ``∂L/∂W_hh = Σ_t δ_tᵀ h_{t-1}`` (one XLA GEMM
after the ``δ`` kernel). Each program of the grid owns ``block_b`` batch rows, keeps ``W_hh``
on chip (resident up to :data:`RESIDENT_BYTES`, else streamed in column blocks) and carries its
state tile through a ``fori_loop`` over time. ``H`` is zero-padded to a power of two ``≥ 16``
and ``B`` to a multiple of ``block_b`` (exact: padded units and rows are sliced away).
``interpret=True`` evaluates the same kernels with XLA on any backend (how the CPU tests check
them). Why these choices, the limits on ``H`` and the H100 measurements behind every constant:
``docs/kernels.md``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from jrnn.activations import Activation
from jrnn.loops import activation_derivative, previous_states

MIN_DIM = 16  # tl.dot needs M, N, K >= 16
DEFAULT_BLOCK_B = 16  # the smallest tile: the most programs for a given B
RESIDENT_BYTES = 128 * 1024  # W_hh above this is streamed from L2 each step (see module doc)
STREAM_COLS = 64  # column block of a streamed W_hh: (H, 64) float32 is 64 KiB at H=256
# Where "auto" picks the kernel: W_hh resident on chip. A streamed float32 W_hh (H=256) lost to
# the XLA path on an H100 (BENCHMARKS.md), so float32 stops at H=128; bf16 W_hh fits at 256.
MAX_H = {"float32": 128, "bfloat16": 256}
KERNEL_UNROLL = 4  # time steps per trip of the in-kernel loop, unless the caller asks
KERNEL_PREFETCH = 1  # per-step loads issued this many steps ahead (resident kernels)
# Triton pipelining stages of the time loop where W_hh is at most this wide: 2 stages cut the
# training step by 10-20% at H=32 and 64 on an H100 and were neutral at 128 (BENCHMARKS.md);
# with a streamed H=256 W_hh they ran out of shared memory.
PIPELINE_MAX_H = 128
KERNEL_ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")  # lowered and tested on Triton
_TF32_SETTINGS = ("tensorfloat32", "high", "TF32_TF32_F32")


def _next_pow2(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


def padded_hidden(h: int) -> int:
  """The hidden width the kernel runs at: ``max(16, 2^⌈log₂ h⌉)``."""
  return max(MIN_DIM, _next_pow2(h))


def pallas_supported(
  h: int, batch: int, dtype, backend: str, *, compute_dtype=None, activation: Optional[str] = None
) -> bool:
  """Whether :func:`pallas_recurrence` should run (compiled, not interpreted) for this case.

  Args:
    h: hidden size ``H``.
    batch: batch size ``B`` (any: it is padded to a multiple of the tile).
    dtype: dtype of ``u`` / ``W_hh``; float32 and bfloat16 are supported.
    backend: ``jax.default_backend()``; only ``"gpu"`` (CUDA, Triton) compiles the kernel.
    compute_dtype: ``None`` or ``jnp.bfloat16`` (as for :func:`pallas_recurrence`).
    activation: an activation name, or ``None`` to skip that check.

  Returns:
    ``True`` where the kernel applies: a CUDA GPU, a supported dtype, ``H`` within the on-chip
    budget of :data:`MAX_H`, and an activation the Triton lowering handles.
  """
  if backend not in ("gpu", "cuda"):
    return False
  if batch < 1 or h < 1:
    return False
  name = jnp.dtype(dtype).name
  if name not in MAX_H:
    return False
  budget = MAX_H["bfloat16" if compute_dtype is not None else name]
  if padded_hidden(h) > budget:
    return False
  return activation is None or activation in KERNEL_ACTIVATIONS


class _Config(NamedTuple):
  """Static (hashable) configuration of one kernel instantiation."""

  act: Activation
  unroll: int
  prefetch: int
  interpret: bool
  compute_dtype: Optional[str]  # None (float32 inputs) or "bfloat16"
  precision: str  # "highest" (IEEE float32) or "tf32"; unused for bfloat16 inputs
  block_b: int
  num_warps: Optional[int]
  num_stages: Optional[int]
  resident: Optional[bool]  # None: by RESIDENT_BYTES


def _dot_precision(cfg: _Config):
  if cfg.compute_dtype is not None:
    return None
  # Triton maps DEFAULT to TF32 and HIGHEST to IEEE float32.
  return jax.lax.Precision.DEFAULT if cfg.precision == "tf32" else jax.lax.Precision.HIGHEST


def _matmul_dtype(cfg: _Config):
  return jnp.float32 if cfg.compute_dtype is None else jnp.dtype(cfg.compute_dtype)


def _time_loop(n: int, step, carry, unroll: int, reverse: bool, loads=None, depth: int = 0):
  """Runs ``carry = step(t, carry, loads(t))`` for ``t = 0..n-1`` (or ``n-1..0``).

  Triton's lowering of ``scan`` rejects ``reverse`` and ``unroll``, so both are done here: a
  forward ``fori_loop`` over whole chunks of ``unroll`` steps, each chunk unrolled in Python,
  then the remainder.

  ``loads(t)`` (a tuple of per-step tile loads that do not depend on the carry) is issued
  ``depth`` steps ahead and its results ride in the carry, so a step's global-memory latency
  overlaps the previous steps' matrix product instead of stalling in front of it (software
  pipelining by hand; ``depth=0`` loads inside the step). Indices past the end are clamped:
  those last loads are issued and never used.
  """
  k = max(1, min(int(unroll), n))
  n_chunks, rem = divmod(n, k)
  index = (lambda i: n - 1 - i) if reverse else (lambda i: i)
  loads = loads or (lambda t: ())

  def one(i, c):
    state, queue = c
    if depth == 0:
      return step(index(i), state, loads(index(i))), queue
    ahead = loads(index(jnp.minimum(i + depth, n - 1)))
    return step(index(i), state, queue[0]), queue[1:] + (ahead,)

  def chunk(i, c):
    for j in range(k):
      c = one(i * k + j, c)
    return c

  queue = tuple(loads(index(min(j, n - 1))) for j in range(depth))
  c = jax.lax.fori_loop(0, n_chunks, chunk, (carry, queue))
  for j in range(rem):
    c = one(n_chunks * k + j, c)
  return c[0]


def _barrier(cfg: _Config):
  """Orders this program's global-memory writes before its later reads (``__syncthreads``).

  Needed only by the streamed variant, which passes a state tile through global memory
  between threads; interpret mode runs a program sequentially and has no such primitive.
  """
  if not cfg.interpret:
    pltriton.debug_barrier()


def _column_chunks(hp: int):
  """Static column slices of ``W`` streamed per step: ``STREAM_COLS`` wide."""
  nc = min(hp, STREAM_COLS)
  return [pl.ds(j * nc, nc) for j in range(hp // nc)]


def _forward_kernel(*refs, cfg: _Config, has_mask: bool, resident: bool, n_steps: int):
  """One batch tile: ``h_t = where(m_t, σ(h_{t-1} W + u_t), h_{t-1})`` for all ``t``.

  Refs: ``w (Hp, Hp)`` = ``W_hhᵀ``; ``u (T, bb, Hp)``; ``h0 (bb, Hp)``; [``m (T, bb)`` int32];
  out ``hs (T, bb, Hp)``.

  Resident: ``W`` is loaded once before the loop and ``h`` never leaves registers. Streamed
  (``W`` too big for one on-chip tensor): each step reads ``W`` column block by column block
  (from L2), writes each block of ``σ(a_t)`` straight into ``hs[t]`` and reloads the whole row
  after a barrier, since a register tile cannot be reassembled from column blocks in Triton.
  """
  if has_mask:
    w_ref, u_ref, h0_ref, m_ref, hs_ref = refs
  else:
    w_ref, u_ref, h0_ref, hs_ref = refs
    m_ref = None
  mdt, prec = _matmul_dtype(cfg), _dot_precision(cfg)
  f32 = jnp.float32
  w_hold = w_ref[...] if resident else None  # loaded once: W_hh stays on chip for all T

  def loads(t):  # what step t reads that does not depend on h: prefetched when resident
    m = (m_ref[t],) if m_ref is not None else ()
    return ((u_ref[t],) if resident else ()) + m

  def step(t, h, loaded):
    hm = h.astype(mdt)
    if resident:
      assert w_hold is not None  # loaded above when resident
      a = jnp.dot(hm, w_hold, precision=prec, preferred_element_type=f32)
      h_new = cfg.act.fn(a + loaded[0].astype(f32))
    else:
      for cols in _column_chunks(w_ref.shape[1]):
        a = jnp.dot(hm, w_ref[:, cols], precision=prec, preferred_element_type=f32)
        hs_ref[t, :, cols] = cfg.act.fn(a + u_ref[t, :, cols].astype(f32)).astype(hs_ref.dtype)
      _barrier(cfg)
      h_new = hs_ref[t].astype(f32)
    if m_ref is not None:
      h_new = jnp.where(loaded[-1][:, None] != 0, h_new, h)
    if resident or m_ref is not None:
      hs_ref[t] = h_new.astype(hs_ref.dtype)  # streamed: each thread rewrites what it read
    return h_new

  _time_loop(
    n_steps,
    step,
    h0_ref[...].astype(f32),
    cfg.unroll,
    reverse=False,
    loads=loads,
    depth=cfg.prefetch if resident else 0,
  )


def _backward_kernel(
  *refs, cfg: _Config, has_mask: bool, resident: bool, n_steps: int, from_output: bool
):
  """One batch tile of the reverse ``δ`` recursion (module docstring), ``t = T..1``.

  Refs: ``w (Hp, Hp)`` = ``W_hh``; ``s (T, bb, Hp)``: the states ``h_t`` if ``from_output``
  (``σ'`` is computed from them here) else ``σ'(a_t)`` itself; ``g (T, bb, Hp)``;
  [``m (T, bb)`` int32]; out ``δ (T, bb, Hp)`` float32 and ``c_1 = ∂L/∂h_0 (bb, Hp)``.
  The streamed variant assembles ``δ_t W`` column block by column block in the ``dh0`` tile,
  which is free until the end.
  """
  if has_mask:
    w_ref, s_ref, g_ref, m_ref, d_ref, dh0_ref = refs
  else:
    w_ref, s_ref, g_ref, d_ref, dh0_ref = refs
    m_ref = None
  mdt, prec = _matmul_dtype(cfg), _dot_precision(cfg)
  f32 = jnp.float32
  w_hold = w_ref[...] if resident else None

  def loads(t):  # everything step t reads except the carry
    return (s_ref[t], g_ref[t]) + ((m_ref[t],) if m_ref is not None else ())

  def step(t, c, loaded):
    s = loaded[0].astype(f32)
    # from_output is set exactly when the activation has deriv_from_output (_recurrence_bwd).
    dsig = cfg.act.deriv_from_output(s) if from_output else s  # type: ignore[misc]
    total = loaded[1].astype(f32) + c  # dL/dh_t
    d = total * dsig
    if m_ref is not None:
      m = loaded[2][:, None] != 0
      d = jnp.where(m, d, 0.0)
    d_ref[t] = d.astype(d_ref.dtype)
    dm = d.astype(mdt)
    if resident:
      assert w_hold is not None  # loaded above when resident
      c_new = jnp.dot(dm, w_hold, precision=prec, preferred_element_type=f32)
    else:
      for cols in _column_chunks(w_ref.shape[1]):
        dh0_ref[:, cols] = jnp.dot(dm, w_ref[:, cols], precision=prec, preferred_element_type=f32)
      _barrier(cfg)
      c_new = dh0_ref[...]
      _barrier(cfg)  # every thread has read the tile before the next step overwrites it
    if m_ref is not None:
      # a masked step copied the state, so dL/dh_t passes to h_{t-1} unchanged
      c_new = c_new + jnp.where(m, 0.0, total)
    return c_new

  c0 = jnp.zeros(dh0_ref.shape, f32)
  c1 = _time_loop(
    n_steps, step, c0, cfg.unroll, reverse=True, loads=loads, depth=cfg.prefetch if resident else 0
  )
  dh0_ref[...] = c1.astype(dh0_ref.dtype)


def _resident(cfg: _Config, hp: int) -> bool:
  if cfg.resident is not None:
    return cfg.resident
  return hp * hp * jnp.dtype(_matmul_dtype(cfg)).itemsize <= RESIDENT_BYTES


def _compiler_params(cfg: _Config, hp: int):
  if cfg.interpret:
    return None
  warps = cfg.num_warps or (4 if hp <= 64 else 8)
  stages = cfg.num_stages or (2 if hp <= PIPELINE_MAX_H else 1)
  return pltriton.CompilerParams(num_warps=warps, num_stages=stages)


def _layout(t: int, b: int, h: int, cfg: _Config):
  """Padded sizes, grid and the block specs shared by both kernels."""
  hp, bb = padded_hidden(h), cfg.block_b
  bp = -(-b // bb) * bb
  seq = pl.BlockSpec((t, bb, hp), lambda i: (0, i, 0))
  row = pl.BlockSpec((bb, hp), lambda i: (i, 0))
  mat = pl.BlockSpec((hp, hp), lambda i: (0, 0))
  msk = pl.BlockSpec((t, bb), lambda i: (0, i))
  return hp, bp, (bp // bb,), seq, row, mat, msk


def _pad(x, shape):
  return jnp.pad(x, [(0, n - s) for s, n in zip(x.shape, shape, strict=True)])


def _mask_rows(mask, t, bp):
  """``(T, Bp)`` int32: Triton loads no bool; padded rows are masked off."""
  return _pad(mask.astype(jnp.int32), (t, bp))


def _forward(w_hh, u, h0, mask, cfg: _Config):
  t, b, h = u.shape
  hp, bp, grid, seq, row, mat, msk = _layout(t, b, h, cfg)
  mdt = _matmul_dtype(cfg)
  w_t = _pad(w_hh.T.astype(mdt), (hp, hp))
  args = [w_t, _pad(u, (t, bp, hp)), _pad(h0.astype(jnp.float32), (bp, hp))]
  specs = [mat, seq, row]
  if mask is not None:
    args.append(_mask_rows(mask, t, bp))
    specs.append(msk)
  resident = _resident(cfg, hp)
  kernel = functools.partial(
    _forward_kernel, cfg=cfg, has_mask=mask is not None, resident=resident, n_steps=t
  )
  hs = pl.pallas_call(
    kernel,
    out_shape=jax.ShapeDtypeStruct((t, bp, hp), u.dtype),
    grid=grid,
    in_specs=specs,
    out_specs=seq,
    interpret=cfg.interpret,
    compiler_params=_compiler_params(cfg, hp),
    name="jrnn_rnn_forward",
  )(*args)
  return hs[:, :b, :h]


def _reverse_deltas(w_hh, s, g, mask, cfg: _Config, from_output: bool):
  """The ``δ`` kernel; returns ``(δ (T, B, H) float32, ∂L/∂h_0 (B, H) float32)``."""
  t, b, h = g.shape
  hp, bp, grid, seq, row, mat, msk = _layout(t, b, h, cfg)
  mdt = _matmul_dtype(cfg)
  args = [_pad(w_hh.astype(mdt), (hp, hp)), _pad(s, (t, bp, hp)), _pad(g, (t, bp, hp))]
  specs = [mat, seq, seq]
  if mask is not None:
    args.append(_mask_rows(mask, t, bp))
    specs.append(msk)
  resident = _resident(cfg, hp)
  kernel = functools.partial(
    _backward_kernel,
    cfg=cfg,
    has_mask=mask is not None,
    resident=resident,
    n_steps=t,
    from_output=from_output,
  )
  deltas, dh0 = pl.pallas_call(
    kernel,
    out_shape=(
      jax.ShapeDtypeStruct((t, bp, hp), jnp.float32),
      jax.ShapeDtypeStruct((bp, hp), jnp.float32),
    ),
    grid=grid,
    in_specs=specs,
    out_specs=(seq, row),
    interpret=cfg.interpret,
    compiler_params=_compiler_params(cfg, hp),
    name="jrnn_rnn_backward",
  )(*args)
  return deltas[:, :b, :h], dh0[:b, :h]


def _recurrence_bwd(cfg: _Config, w_hh, u, h0, mask, hs, g):
  """``(δ, ∂L/∂W_hh, ∂L/∂h_0)`` given ``g (T, B, H)``: the δ kernel, then one XLA GEMM."""
  from_output = cfg.act.deriv_from_output is not None
  # without a closed form in h, σ'(a) comes from XLA (one GEMM re-forms a) and enters the kernel
  s = hs if from_output else activation_derivative(cfg.act, w_hh, u, hs, h0)
  deltas, dh0 = _reverse_deltas(w_hh, s, g, mask, cfg, from_output)
  n = w_hh.shape[0]
  d2 = deltas.reshape(-1, n).T
  h_prev = previous_states(hs, h0).reshape(-1, n)
  if cfg.compute_dtype is None:
    prec = jax.lax.Precision.DEFAULT if cfg.precision == "tf32" else jax.lax.Precision.HIGHEST
    dw_hh = jnp.matmul(d2, h_prev.astype(jnp.float32), precision=prec)
  else:
    mdt = jnp.dtype(cfg.compute_dtype)
    dw_hh = jnp.matmul(d2.astype(mdt), h_prev.astype(mdt), preferred_element_type=jnp.float32)
  return deltas.astype(hs.dtype), dw_hh.astype(w_hh.dtype), dh0.astype(h0.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _pallas_vjp(w_hh, u, h0, mask, cfg: _Config):
  return _forward(w_hh, u, h0, mask, cfg)


def _fwd(w_hh, u, h0, mask, cfg):
  hs = _forward(w_hh, u, h0, mask, cfg)
  keep_u = u if cfg.act.deriv_from_output is None else None
  return hs, (w_hh, keep_u, h0, mask, hs)  # the residuals of jrnn.bptt.hand_recurrence


def _bwd(cfg, res, g):
  w_hh, u, h0, mask, hs = res
  deltas, dw_hh, dh0 = _recurrence_bwd(cfg, w_hh, u, h0, mask, hs, g)
  return dw_hh, deltas, dh0, None


_pallas_vjp.defvjp(_fwd, _bwd)


def _default_precision() -> str:
  # An option read as an attribute at runtime; jax's Config stub declares none of them.
  setting = jax.config.jax_default_matmul_precision  # type: ignore[attr-defined]
  return "tf32" if setting in _TF32_SETTINGS else "highest"


def _check_shapes(w_hh, u, h0, mask):
  if u.ndim != 3:
    raise ValueError(f"u must have shape (T, B, H), got {u.shape}")
  t, b, h = u.shape
  if t < 1:
    raise ValueError(f"u must have at least one time step, got T={t}")
  if w_hh.shape != (h, h):
    raise ValueError(f"w_hh must have shape (H, H)=({h}, {h}), got {w_hh.shape}")
  if h0.shape != (b, h):
    raise ValueError(f"h0 must have shape (B, H)=({b}, {h}), got {h0.shape}")
  if mask is not None and mask.shape != (t, b):
    raise ValueError(f"mask must have shape (T, B)=({t}, {b}), got {mask.shape}")
  return None if mask is None else jnp.asarray(mask).astype(bool)


def _make_config(
  act,
  unroll,
  interpret,
  compute_dtype=None,
  precision=None,
  block_b=None,
  num_warps=None,
  num_stages=None,
  resident=None,
  prefetch=None,
) -> _Config:
  if not isinstance(act, Activation):
    raise TypeError(f"act must be a jrnn Activation (see jrnn.get_activation), got {act!r}")
  block_b = DEFAULT_BLOCK_B if block_b is None else int(block_b)
  if block_b < MIN_DIM or block_b & (block_b - 1):
    raise ValueError(f"block_b must be a power of two >= {MIN_DIM}, got {block_b}")
  if compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.bfloat16:
    raise ValueError(f"compute_dtype must be None or jnp.bfloat16, got {compute_dtype}")
  if precision is None:
    precision = _default_precision()
  if precision not in ("highest", "tf32"):
    raise ValueError(f"precision must be 'highest', 'tf32' or None, got {precision!r}")
  prefetch = KERNEL_PREFETCH if prefetch is None else int(prefetch)
  if prefetch < 0:
    raise ValueError(f"prefetch must be >= 0, got {prefetch}")
  unroll = KERNEL_UNROLL if unroll is None else int(unroll)
  if unroll < 1:
    raise ValueError(f"unroll must be >= 1, got {unroll}")
  return _Config(
    act=act,
    unroll=unroll,
    prefetch=prefetch,
    interpret=bool(interpret),
    compute_dtype=None if compute_dtype is None else "bfloat16",
    precision=precision,
    block_b=block_b,
    num_warps=num_warps,
    num_stages=num_stages,
    resident=None if resident is None else bool(resident),
  )


def pallas_recurrence(
  w_hh,
  u,
  h0,
  mask,
  act: Activation,
  unroll: Optional[int] = None,
  *,
  interpret: bool,
  compute_dtype=None,
  precision: Optional[str] = None,
  block_b: Optional[int] = None,
  num_warps: Optional[int] = None,
  num_stages: Optional[int] = None,
  resident: Optional[bool] = None,
  prefetch: Optional[int] = None,
) -> jax.Array:
  """The recurrence of :func:`jrnn.recurrence` as one kernel launch, with its VJP.

  Same semantics and residuals as :func:`jrnn.bptt.hand_recurrence`; ``jax.grad`` runs the
  ``δ`` kernel and then ``∂L/∂W_hh = Σ_t δ_tᵀ h_{t-1}`` as one XLA GEMM. Reverse mode only.

  Args:
    w_hh: ``(H, H)`` float32 (or bfloat16).
    u: ``(T, B, H)``, the projected inputs; ``hs`` is returned in its dtype.
    h0: ``(B, H)``.
    mask: ``(T, B)`` boolean, or ``None`` for all steps valid.
    act: an :class:`~jrnn.activations.Activation`; compiled kernels support the names in
      :data:`KERNEL_ACTIVATIONS`, interpret mode any elementwise one.
    unroll: time steps per trip of the in-kernel loop (``None``: :data:`KERNEL_UNROLL`).
    interpret: run the kernels in Pallas interpret mode (any backend, slow); ``False``
      compiles them with Triton (CUDA GPU only).
    compute_dtype: ``None`` (float32 matrix inputs) or ``jnp.bfloat16`` (bf16 inputs, float32
      accumulation and state).
    precision: ``"highest"`` (IEEE float32) or ``"tf32"`` for float32 inputs; ``None`` follows
      ``jax_default_matmul_precision`` (``"tensorfloat32"`` or ``"high"`` mean TF32).
    block_b: batch rows per program, a power of two ``≥ 16`` (default 16).
    num_warps, num_stages: Triton launch tuning (defaults: 4 warps up to ``H=64``, else 8;
      2 stages up to ``H=128`` (:data:`PIPELINE_MAX_H`), else 1).
    resident: keep ``W_hh`` in one on-chip tensor for the whole loop (``True``) or stream its
      column blocks every step (``False``); ``None`` decides by :data:`RESIDENT_BYTES`.
    prefetch: how many steps ahead the resident kernels issue each step's loads of ``u_t``
      (forward), ``h_t, g_t`` (backward) and the mask (``None``: :data:`KERNEL_PREFETCH`;
      ``0``: load inside the step).

  Returns:
    ``hs (T, B, H)``.
  """
  mask = _check_shapes(w_hh, u, h0, mask)
  cfg = _make_config(
    act,
    unroll,
    interpret,
    compute_dtype,
    precision,
    block_b,
    num_warps,
    num_stages,
    resident,
    prefetch,
  )
  return _pallas_vjp(w_hh, u, h0, mask, cfg)


def pallas_recurrence_bwd(
  w_hh,
  u,
  h0,
  mask,
  hs,
  g,
  act: Activation,
  unroll: Optional[int] = None,
  *,
  interpret: bool,
  **kwargs,
):
  """The backward half alone, for custom VJPs built elsewhere (e.g. a whole hand layer).

  Mirrors :func:`jrnn.loops.states_backward` (the XLA kernel's backward half): given the forward
  states ``hs (T, B, H)`` and their cotangent ``g (T, B, H)``, returns
  ``(δ (T, B, H), ∂L/∂W_hh (H, H), ∂L/∂h_0 (B, H))``.
  ``u`` is needed only for activations without ``deriv_from_output`` (else pass ``None``).
  ``kwargs`` are those of :func:`pallas_recurrence`.
  """
  mask = _check_shapes(w_hh, hs, h0, mask)
  if g.shape != hs.shape:
    raise ValueError(f"g must have the shape of hs {hs.shape}, got {g.shape}")
  known = (
    "compute_dtype",
    "precision",
    "block_b",
    "num_warps",
    "num_stages",
    "resident",
    "prefetch",
  )
  if set(kwargs) - set(known):
    raise TypeError(f"unexpected keyword arguments {sorted(set(kwargs) - set(known))}")
  cfg = _make_config(act, unroll, interpret, **kwargs)
  return _recurrence_bwd(cfg, w_hh, u, h0, mask, hs, g)


__all__ = (
  "KERNEL_ACTIVATIONS",
  "KERNEL_PREFETCH",
  "KERNEL_UNROLL",
  "MAX_H",
  "RESIDENT_BYTES",
  "padded_hidden",
  "pallas_recurrence",
  "pallas_recurrence_bwd",
  "pallas_supported",
)
