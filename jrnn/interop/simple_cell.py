"""Conversion to and from Flax's ``SimpleCell`` parameters (no Flax import: they are dicts).

Flax's cell computes ``h' = σ(x @ i.kernel + i.bias + h @ h.kernel)`` (plus ``h`` when
``residual=True``) with two ``Dense`` layers: ``i`` reads the input and holds the only bias,
``h`` reads the state and has none. Flax kernels are ``(in, out)``; jrnn's weights map column
vectors, ``(out, in)``. So

.. math::

   W_{xh} = i.\\mathrm{kernel}^T, \\quad
   W_{hh} = h.\\mathrm{kernel}^T\\ (+\\, I \\text{ if residual}), \\quad
   b_h = i.\\mathrm{bias}

and a ``Dense(O)`` readout gives ``W_hy = kernel^T``, ``b_y = bias``. The linen cell's
sub-dicts are named ``i`` and ``h``; the NNX cell's ``dense_i`` and ``dense_h`` (read both,
written with ``nnx=True``). Where the dict sits: ``params["cell"]`` under an ``nn.RNN(cell)``
that is the top module or a ``setup`` attribute; beside the RNN, as ``params["SimpleCell_0"]``
(or the cell's ``name``), when the cell is built inline in a ``@nn.compact`` parent.

A stack converts layer by layer::

  stacked = jrnn.StackedParams(tuple(tuple(from_simple_cell(c) for c in layer)
                                     for layer in cells), w_hy, b_y)
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple, Union

import jax.numpy as jnp

from jrnn.params import LayerParams, RNNParams

_NAMES = {False: ("i", "h"), True: ("dense_i", "dense_h")}


def _sub(cell: Mapping[str, Any], *names: str) -> Mapping[str, Any]:
  for name in names:
    if name in cell:
      return cell[name]
  raise KeyError(f"a SimpleCell's parameters hold {' or '.join(map(repr, names))}; got keys "
                 f"{sorted(cell)} (pass the cell's own dict, e.g. params['cell'] under nn.RNN "
                 "or params['SimpleCell_0'] in a compact parent)")


def _value(a) -> jnp.ndarray:
  return jnp.asarray(getattr(a, "value", a))  # an NNX state holds Variables


def from_simple_cell(cell: Mapping[str, Any], readout: Optional[Mapping[str, Any]] = None, *,
                     residual: bool = False) -> Union[LayerParams, RNNParams]:
  """jrnn parameters from a ``SimpleCell``'s (and optionally a ``Dense`` readout's).

  Args:
    cell: ``{"i": {"kernel": (I, H), "bias": (H,)}, "h": {"kernel": (H, H)}}`` (linen), or the
      same under ``dense_i``/``dense_h`` (NNX, e.g. ``nnx.state(cell).to_pure_dict()``).
    readout: a ``Dense(O)``'s ``{"kernel": (H, O), "bias": (O,)}``, or ``None``.
    residual: the cell's ``residual`` flag (folded into ``W_hh`` as ``+ I``).

  Returns:
    :class:`LayerParams` without ``readout``, :class:`RNNParams` with it.
  """
  i, h = _sub(cell, "i", "dense_i"), _sub(cell, "h", "dense_h")
  w_hh = _value(h["kernel"]).T
  if residual:
    w_hh = w_hh + jnp.eye(w_hh.shape[0], dtype=w_hh.dtype)
  w_xh = _value(i["kernel"]).T
  b_h = _value(i["bias"]) if "bias" in i else jnp.zeros(w_hh.shape[:1], w_hh.dtype)
  if "bias" in h:  # a hand-built cell with both biases: they only ever appear as their sum
    b_h = b_h + _value(h["bias"])
  if readout is None:
    return LayerParams(w_xh, w_hh, b_h)
  w_hy = _value(readout["kernel"]).T
  b_y = _value(readout["bias"]) if "bias" in readout else jnp.zeros(w_hy.shape[:1], w_hy.dtype)
  return RNNParams(w_xh, w_hh, b_h, w_hy, b_y)


def to_simple_cell(params: Union[LayerParams, RNNParams], *, residual: bool = False,
                   nnx: bool = False) -> Union[dict, Tuple[dict, dict]]:
  """A ``SimpleCell``'s parameter dict from jrnn's (the inverse of :func:`from_simple_cell`).

  Args:
    params: :class:`LayerParams` or :class:`RNNParams`. A learnt ``h0`` has no place in a
      ``SimpleCell`` (Flax passes the carry to the call): pass it as ``initial_carry``.
    residual: write for a cell built with ``residual=True`` (``h.kernel = (W_hh - I)ᵀ``).
    nnx: name the sub-dicts ``dense_i``/``dense_h`` (NNX) instead of ``i``/``h`` (linen).

  Returns:
    the cell's dict for :class:`LayerParams`; ``(cell, dense)`` for :class:`RNNParams`, where
    ``dense = {"kernel": W_hyᵀ, "bias": b_y}`` is a ``Dense(O)`` readout's.
  """
  if not isinstance(params, (LayerParams, RNNParams)):
    raise TypeError(f"params must be LayerParams or RNNParams, got {type(params).__name__}; "
                    "convert a StackedParams layer by layer")
  w_hh = jnp.asarray(params.w_hh)
  if residual:
    w_hh = w_hh - jnp.eye(w_hh.shape[0], dtype=w_hh.dtype)
  name_i, name_h = _NAMES[bool(nnx)]
  cell = {name_i: {"kernel": jnp.asarray(params.w_xh).T, "bias": jnp.asarray(params.b_h)},
          name_h: {"kernel": w_hh.T}}
  if isinstance(params, LayerParams):
    return cell
  return cell, {"kernel": jnp.asarray(params.w_hy).T, "bias": jnp.asarray(params.b_y)}
