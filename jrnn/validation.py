"""Trace-time checks of shapes and dtypes, with messages that name the argument."""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def from_nested(x):
  """Turns nested Python lists or tuples into a NumPy array; leaves arrays (and tracers) alone.

  JAX cannot read a dtype off ``[3, 2]``; NumPy can, so ``lengths=[3, 2]`` works as users expect.
  """
  return np.asarray(x) if isinstance(x, (list, tuple)) else x


def check_float(name: str, x, dtype=None) -> None:
  """Raises ``TypeError`` unless ``x`` is floating (and of ``dtype`` when given)."""
  xdtype = jnp.result_type(x)
  if not jnp.issubdtype(xdtype, jnp.floating):
    raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {xdtype}")
  if dtype is not None and xdtype != jnp.dtype(dtype):
    raise TypeError(
      f"{name} has dtype {xdtype} but the parameters are {jnp.dtype(dtype)}; "
      f"cast it with {name}.astype({jnp.dtype(dtype).name})"
    )


def check_shape(name: str, x, expected: Sequence[Optional[int]], what: str = "") -> None:
  """Raises ``ValueError`` unless ``x.shape`` matches ``expected`` (``None`` matches any size).

  ``what`` names the axes, e.g. ``"(T, B, I)"``; it is printed beside the numbers.
  """
  shape = tuple(np.shape(x))
  ok = len(shape) == len(expected) and all(
    e is None or e == s for e, s in zip(expected, shape, strict=True)
  )
  if not ok:
    want = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
    if len(expected) == 1:
      want = want[:-1] + ",)"
    label = f"{what}={want}" if what and what != want else want
    raise ValueError(f"{name} must have shape {label}, got {shape}")


def check_params_consistent(w_xh, w_hh, b_h, h0=None, *, prefix: str = "params.") -> None:
  """Checks that one layer's arrays agree on ``H`` and share one floating dtype."""
  check_float(prefix + "w_hh", w_hh)
  dtype = jnp.result_type(w_hh)
  if np.ndim(w_hh) != 2 or np.shape(w_hh)[0] != np.shape(w_hh)[1]:
    raise ValueError(f"{prefix}w_hh must be square (H, H), got {np.shape(w_hh)}")
  h = np.shape(w_hh)[0]
  check_shape(prefix + "w_xh", w_xh, (h, None), "(H, I)")
  check_shape(prefix + "b_h", b_h, (h,), "(H,)")
  check_float(prefix + "w_xh", w_xh, dtype)
  check_float(prefix + "b_h", b_h, dtype)
  if h0 is not None:
    check_shape(prefix + "h0", h0, (h,), "(H,)")
    check_float(prefix + "h0", h0, dtype)


def mask_from_lengths(lengths, n_steps: int, n_batch: int) -> jax.Array:
  """Turns ``lengths (B,)`` into a boolean mask ``(T, B)`` with ``mask[t, b] = t < lengths[b]``.

  Concrete lengths are checked to lie in ``[0, T]``; traced lengths cannot be checked at trace
  time, and values past ``T`` then act as ``T``.
  """
  if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
    raise TypeError(f"lengths must have an integer dtype, got {jnp.result_type(lengths)}")
  check_shape("lengths", lengths, (n_batch,), "(B,)")
  if not isinstance(lengths, jax.core.Tracer):
    arr = np.asarray(lengths)
    if arr.size and (arr.min() < 0 or arr.max() > n_steps):
      raise ValueError(
        f"lengths must lie in [0, T={n_steps}], got min {arr.min()} and max {arr.max()}"
      )
  return jnp.arange(n_steps)[:, None] < jnp.asarray(lengths)[None, :]


def check_mask(mask, n_steps: int, n_batch: int) -> None:
  """Checks a time-major ``mask (T, B)``: its shape and a boolean or numeric dtype."""
  check_shape("mask", mask, (n_steps, n_batch), "(T, B)")
  check_mask_dtype(mask)


def check_mask_dtype(mask) -> None:
  """Raises ``TypeError`` unless ``mask`` is boolean or numeric (nonzero marks a valid step)."""
  dtype = jnp.result_type(mask)
  if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.number)):
    raise TypeError(f"mask must be boolean or numeric, got {dtype}")


def check_bool(name: str, value) -> None:
  """Raises ``TypeError`` unless ``value`` is a Python (or NumPy) bool: ``"no"`` is not False."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_unroll(unroll, n_steps: int) -> int:
  """``unroll`` as a positive int: ``lax.scan``'s meaning, ``True`` fully (``T``), ``False`` 1.

  Raises ``TypeError`` for anything but an int or a bool, ``ValueError`` below 1.
  """
  if isinstance(unroll, (bool, np.bool_)):
    return n_steps if unroll else 1
  if not isinstance(unroll, (int, np.integer)):
    raise TypeError(f"unroll must be a positive int (or True to unroll fully), got {unroll!r}")
  if unroll < 1:
    raise ValueError(f"unroll must be >= 1, got {unroll}")
  return int(unroll)


def check_recurrence_inputs(w_hh, u, h0, mask) -> None:
  """Checks the arguments of a recurrence over projected inputs ``u (T, B, H)``.

  ``w_hh (H, H)`` and ``h0 (B, H)`` in ``u``'s floating dtype, ``mask (T, B)`` or ``None``.
  """
  check_float("u", u)
  dtype = jnp.result_type(u)
  if jnp.ndim(u) != 3:
    raise ValueError(f"u must have shape (T, B, H), got {jnp.shape(u)}")
  n_steps, n_batch, n_hidden = jnp.shape(u)
  check_shape("w_hh", w_hh, (n_hidden, n_hidden), "(H, H)")
  check_float("w_hh", w_hh, dtype)
  check_shape("h0", h0, (n_batch, n_hidden), "(B, H)")
  check_float("h0", h0, dtype)
  if mask is not None:
    check_mask(mask, n_steps, n_batch)


def check_readout(w_hy, b_y, n_features: int, dtype, *, prefix: str = "params.") -> None:
  """Checks a readout pair: both given or both ``None``; ``w_hy (O, n_features)``, ``b_y (O,)``.

  A ``b_y`` without ``w_hy`` (or the reverse) is an error, not a readout to drop silently.
  """
  if (w_hy is None) != (b_y is None):
    given, missing = ("w_hy", "b_y") if b_y is None else ("b_y", "w_hy")
    raise ValueError(
      f"{prefix}{given} is given but {prefix}{missing} is None: a readout needs "
      f"both w_hy (O, {n_features}) and b_y (O,), or neither"
    )
  if w_hy is None:
    return
  check_shape(prefix + "w_hy", w_hy, (None, n_features), f"(O, {n_features})")
  check_shape(prefix + "b_y", b_y, (np.shape(w_hy)[0],), "(O,)")
  check_float(prefix + "w_hy", w_hy, dtype)
  check_float(prefix + "b_y", b_y, dtype)


def check_stacked_layers(layers, *, prefix: str = "params.") -> None:
  """Checks a stack's ``layers[l][d]``: a non-empty tuple of ``(forward,)`` or
  ``(forward, backward)`` layers, each consistent, ``w_xh`` of layer ``l > 0`` reading ``D·H``
  features, and one floating dtype (layer 0's) throughout."""
  if (
    not isinstance(layers, (tuple, list))
    or not layers
    or any(not isinstance(l, (tuple, list)) for l in layers)
    or len({len(l) for l in layers}) != 1
    or len(layers[0]) not in (1, 2)
  ):
    raise ValueError(
      f"{prefix}layers must be a non-empty tuple of (forward,) or "
      "(forward, backward) tuples, the same number of directions in each layer"
    )
  n_dir = len(layers[0])
  n_hidden = np.shape(layers[0][0].w_hh)[0] if np.ndim(layers[0][0].w_hh) else None
  dtype = jnp.result_type(layers[0][0].w_hh)
  for l, layer in enumerate(layers):
    for d, p in enumerate(layer):
      where = f"{prefix}layers[{l}][{d}]."
      check_params_consistent(p.w_xh, p.w_hh, p.b_h, p.h0, prefix=where)
      check_float(where + "w_hh", p.w_hh, dtype)
      # n_hidden is an int here: check_params_consistent refused a non-square layer-0 w_hh.
      fan_in = None if l == 0 or n_hidden is None else n_dir * n_hidden
      check_shape(where + "w_xh", p.w_xh, (n_hidden, fan_in), "(H, I)" if l == 0 else "(H, D*H)")
