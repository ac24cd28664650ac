"""The one way in: every entry point turns the caller's arrays into the engine's layout here.

Layouts accepted by :func:`jrnn.forward` and :func:`jrnn.stacked_forward` (and everything built
on them):

==============  ==============  ===============  ===============  =================
layout          ``xs``          ``mask``         ``lengths``      ``h0``
==============  ==============  ===============  ===============  =================
unbatched       ``(T, I)``      ``(T,)``         ``()``           ``(H,)``
time-major      ``(T, B, I)``   ``(T, B)``       ``(B,)``         ``(H,)``/``(B, H)``
batch-major     ``(B, T, I)``   ``(B, T)``       ``(B,)``         ``(H,)``/``(B, H)``
==============  ==============  ===============  ===============  =================

Internally everything is time-major and batched: ``xs (T, B, I)``, ``mask (T, B)`` boolean or
``None``, ``h0 (B, H)`` or ``None``; :class:`Layout` maps results back.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, overload

import jax
import jax.numpy as jnp

from jrnn import validation
from jrnn.params import LayerParams


class Layout(NamedTuple):
  """How the caller's arrays map to the internal time-major batched layout."""

  batched: bool
  time_major: bool

  @overload
  def restore(self, a: jax.Array, time_axis: bool = True) -> jax.Array: ...
  @overload
  def restore(self, a: None, time_axis: bool = True) -> None: ...
  @overload
  def restore(self, a: Optional[jax.Array], time_axis: bool = True) -> Optional[jax.Array]: ...

  def restore(self, a: Optional[jax.Array], time_axis: bool = True) -> Optional[jax.Array]:
    """``a`` (internal layout, with a time axis unless ``time_axis=False``) in the caller's."""
    if a is None:
      return None
    if not self.batched:
      return a[:, 0] if time_axis else a[..., 0, :]
    if time_axis and not self.time_major:
      return jnp.swapaxes(a, 0, 1)
    return a


class Prepared(NamedTuple):
  """The caller's inputs in the engine's layout."""

  xs: jax.Array  # shape=(T, B, I)
  mask: Optional[jax.Array]  # shape=(T, B) bool, or None: every step valid
  h0: Optional[jax.Array]  # shape=(B, H) or (*lead, B, H); None: each layer's default
  layout: Layout


def initial_state(layer: LayerParams, n_batch: int, h0: Optional[jax.Array] = None) -> jax.Array:
  """The state a layer starts from: ``h0`` if given, else its learnt ``h0``, else zeros.

  Returns ``(B, H)``. The only place jrnn defaults an initial state.
  """
  if h0 is not None:
    return h0
  init = layer.h0 if layer.h0 is not None else jnp.zeros_like(layer.b_h)
  return jnp.broadcast_to(init, (n_batch,) + init.shape)


def prepare(
  xs,
  mask=None,
  lengths=None,
  h0=None,
  *,
  n_in: int,
  n_hidden: int,
  dtype,
  time_major: bool = True,
  h0_lead: tuple = (),
) -> Prepared:
  """Validates the caller's arrays and converts them to the engine's layout.

  Args:
    xs: ``(T, I)``, ``(T, B, I)`` or (``time_major=False``) ``(B, T, I)``; dtype ``dtype``.
    mask: valid steps in the layout of ``xs`` without its last axis; boolean or numeric.
    lengths: instead of ``mask``, ``()`` or ``(B,)`` integers in ``[0, T]``.
    h0: ``(*h0_lead, H)`` shared by every sequence or ``(*h0_lead, B, H)``; ``None`` leaves it
      to :func:`initial_state`.
    n_in, n_hidden, dtype: what the parameters expect.
    time_major: layout of batched ``xs``.
    h0_lead: leading axes of ``h0`` (``(L·D,)`` for a stack).

  Raises:
    ValueError, TypeError: naming the argument, the expected and the actual shape or dtype.
  """
  validation.check_bool("time_major", time_major)
  xs, mask, lengths, h0 = (validation.from_nested(a) for a in (xs, mask, lengths, h0))
  validation.check_float("xs", xs, dtype)
  xs = jnp.asarray(xs)
  if xs.ndim == 2:
    layout = Layout(False, True)
    validation.check_shape("xs", xs, (None, n_in), f"(T, I={n_in})")
    xs = xs[:, None]
    if mask is not None:
      validation.check_shape("mask", mask, (xs.shape[0],), "(T,)")
      mask = jnp.asarray(mask)[:, None]
    if lengths is not None:
      validation.check_shape("lengths", lengths, (), "()")
      lengths = jnp.asarray(lengths)[None]
  elif xs.ndim == 3:
    layout = Layout(True, time_major)
    what = f"(T, B, I={n_in})" if time_major else f"(B, T, I={n_in})"
    validation.check_shape("xs", xs, (None, None, n_in), what)
    if not time_major:
      xs = jnp.swapaxes(xs, 0, 1)
      if mask is not None:
        validation.check_shape("mask", mask, (xs.shape[1], xs.shape[0]), "(B, T)")
        mask = jnp.swapaxes(jnp.asarray(mask), 0, 1)
  else:
    raise ValueError(
      f"xs must have rank 2 (T, I) or 3 ({'T, B' if time_major else 'B, T'}, I), "
      f"got shape {xs.shape}"
    )
  n_steps, n_batch = xs.shape[:2]
  if n_steps == 0:
    raise ValueError(f"xs must have at least one time step (T >= 1), got shape {xs.shape}")
  if mask is not None and lengths is not None:
    raise ValueError("give mask or lengths, not both")
  if lengths is not None:
    mask = validation.mask_from_lengths(lengths, n_steps, n_batch)
  elif mask is not None:
    validation.check_mask(mask, n_steps, n_batch)
    mask = jnp.asarray(mask).astype(bool)
  if h0 is not None:
    h0 = _batched_h0(h0, layout, n_batch, n_hidden, dtype, tuple(h0_lead))
  return Prepared(xs, mask, h0, layout)


def _batched_h0(h0, layout: Layout, n_batch: int, n_hidden: int, dtype, lead: tuple):
  validation.check_float("h0", h0, dtype)
  h0 = jnp.asarray(h0)
  shared, per_seq = ("(L*D, H)", "(L*D, B, H)") if lead else ("(H,)", "(B, H)")
  if layout.batched and h0.ndim == len(lead) + 2:
    validation.check_shape("h0", h0, lead + (n_batch, n_hidden), per_seq)
    return h0
  if h0.ndim == len(lead) + 1 or not layout.batched:
    validation.check_shape("h0", h0, lead + (n_hidden,), shared)
    return jnp.broadcast_to(h0[..., None, :], lead + (n_batch, n_hidden))
  raise ValueError(
    f"h0 must have shape {shared}={lead + (n_hidden,)} or "
    f"{per_seq}={lead + (n_batch, n_hidden)}, got {h0.shape}"
  )
