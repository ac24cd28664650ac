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

from typing import Any, Literal, Mapping, Optional, Tuple, Union, overload

import jax.numpy as jnp
import numpy as np

from jrnn import validation
from jrnn.params import LayerParams, RNNParams

_NAMES = {False: ("i", "h"), True: ("dense_i", "dense_h")}
# Flax's SimpleCell defaults to float32; jrnn computes in the parameters' dtype, so a float16 or
# integer checkpoint would run in that dtype without a word: it is refused, with the cast to use.
_DTYPES = (np.dtype("float32"), np.dtype("float64"))


def _sub(cell: Mapping[str, Any], *names: str) -> Tuple[str, Mapping[str, Any]]:
  """``(where, sub-dict)``: the one of ``names`` that ``cell`` holds, e.g. ``"cell['i']"``."""
  found = [name for name in names if name in cell]
  if not found:
    raise ValueError(
      f"a SimpleCell's parameters hold {' or '.join(map(repr, names))}; got keys "
      f"{sorted(cell)} (pass the cell's own dict, e.g. params['cell'] under nn.RNN "
      "or params['SimpleCell_0'] in a compact parent)"
    )
  if len(found) > 1:
    raise ValueError(
      f"cell holds both {found[0]!r} (linen) and {found[1]!r} (NNX); pass one cell's dict"
    )
  where = f"cell[{found[0]!r}]"
  sub = cell[found[0]]
  if not isinstance(sub, Mapping):
    raise TypeError(f"{where} must be a dict with 'kernel' (and 'bias'), got {type(sub).__name__}")
  return where, sub


@overload
def _read(
  where: str,
  sub: Mapping[str, Any],
  key: str,
  shape,
  what: str,
  dtype=None,
  required: Literal[True] = True,
) -> jnp.ndarray: ...
@overload
def _read(
  where: str,
  sub: Mapping[str, Any],
  key: str,
  shape,
  what: str,
  dtype=None,
  *,
  required: bool,
) -> Optional[jnp.ndarray]: ...


def _read(
  where: str, sub: Mapping[str, Any], key: str, shape, what: str, dtype=None, required: bool = True
) -> Optional[jnp.ndarray]:
  """``sub[key]`` as an array of ``shape`` (``None`` matches any size) in float32/float64.

  ``dtype``: the dtype every other array of the cell must share (the first array read's).
  """
  name = f"{where}[{key!r}]"
  if key not in sub:
    if required:
      raise ValueError(f"{where} has no {key!r} (its keys: {sorted(sub)}); {name} must be {what}")
    return None
  a = getattr(sub[key], "value", sub[key])  # an NNX state holds Variables
  if a is None or isinstance(a, (str, bytes, Mapping)):
    raise TypeError(f"{name} must be an array {what}, got {type(a).__name__}")
  a = jnp.asarray(a)
  if a.dtype not in _DTYPES:
    raise TypeError(
      f"{name} must be float32 or float64, got {a.dtype}; cast the cell first, "
      "e.g. jax.tree.map(lambda a: a.astype(jnp.float32), cell)"
    )
  validation.check_shape(name, a, shape, what)
  if dtype is not None:
    validation.check_float(name, a, dtype)
  return a


def from_simple_cell(
  cell: Mapping[str, Any], readout: Optional[Mapping[str, Any]] = None, *, residual: bool = False
) -> Union[LayerParams, RNNParams]:
  """jrnn parameters from a ``SimpleCell``'s (and optionally a ``Dense`` readout's).

  Args:
    cell: ``{"i": {"kernel": (I, H), "bias": (H,)}, "h": {"kernel": (H, H)}}`` (linen), or the
      same under ``dense_i``/``dense_h`` (NNX, e.g. ``nnx.state(cell).to_pure_dict()``).
    readout: a ``Dense(O)``'s ``{"kernel": (H, O), "bias": (O,)}``, or ``None``.
    residual: the cell's ``residual`` flag (folded into ``W_hh`` as ``+ I``); a bool.

  Returns:
    :class:`LayerParams` without ``readout``, :class:`RNNParams` with it.

  Raises:
    TypeError: ``cell`` or ``readout`` is not a dict, ``residual`` is not a bool, or an array is
      not float32/float64 or not of the first kernel's dtype.
    ValueError: a missing sub-dict or kernel, or an array whose shape disagrees with the others
      (``H`` is read off ``i.kernel``), each message naming the key, the expected and the actual
      shape.
  """
  validation.check_bool("residual", residual)
  if not isinstance(cell, Mapping):
    raise TypeError(
      "cell must be a SimpleCell's parameter dict ({'i': {...}, 'h': {...}}), "
      f"got {type(cell).__name__}"
    )
  (wi, i), (wh, h) = _sub(cell, "i", "dense_i"), _sub(cell, "h", "dense_h")
  k_i = _read(wi, i, "kernel", (None, None), "(I, H)")
  n_hidden, dtype = k_i.shape[1], k_i.dtype
  k_h = _read(wh, h, "kernel", (n_hidden, n_hidden), "(H, H)", dtype)
  w_hh = k_h.T
  if residual:
    w_hh = w_hh + jnp.eye(n_hidden, dtype=dtype)
  b_h = _read(wi, i, "bias", (n_hidden,), "(H,)", dtype, required=False)
  if b_h is None:
    b_h = jnp.zeros((n_hidden,), dtype)
  b_hh = _read(wh, h, "bias", (n_hidden,), "(H,)", dtype, required=False)
  if b_hh is not None:  # a hand-built cell with both biases: they only ever appear as their sum
    b_h = b_h + b_hh
  if readout is None:
    return LayerParams(k_i.T, w_hh, b_h)
  if not isinstance(readout, Mapping):
    raise TypeError(
      "readout must be a Dense layer's parameter dict ({'kernel': (H, O), "
      f"'bias': (O,)}}), got {type(readout).__name__}"
    )
  k_y = _read("readout", readout, "kernel", (n_hidden, None), "(H, O)", dtype)
  b_y = _read("readout", readout, "bias", (k_y.shape[1],), "(O,)", dtype, required=False)
  return RNNParams(k_i.T, w_hh, b_h, k_y.T, jnp.zeros(k_y.shape[1:], dtype) if b_y is None else b_y)


def to_simple_cell(
  params: Union[LayerParams, RNNParams], *, residual: bool = False, nnx: bool = False
) -> Union[dict, Tuple[dict, dict]]:
  """A ``SimpleCell``'s parameter dict from jrnn's (the inverse of :func:`from_simple_cell`).

  Args:
    params: :class:`LayerParams` or :class:`RNNParams`. A learnt ``h0`` has no place in a
      ``SimpleCell`` (Flax passes the carry to the call): pass it as ``initial_carry``.
    residual: write for a cell built with ``residual=True`` (``h.kernel = (W_hh - I)ᵀ``).
    nnx: name the sub-dicts ``dense_i``/``dense_h`` (NNX) instead of ``i``/``h`` (linen).

  Returns:
    the cell's dict for :class:`LayerParams`; ``(cell, dense)`` for :class:`RNNParams`, where
    ``dense = {"kernel": W_hyᵀ, "bias": b_y}`` is a ``Dense(O)`` readout's (``None`` when
    ``w_hy`` and ``b_y`` are, as in an NNX or Equinox ``ElmanRNN`` without ``out_features``).

  Raises:
    TypeError, ValueError: ``residual`` or ``nnx`` not a bool, params of another type, or
      arrays that disagree in shape or dtype (as :func:`jrnn.forward` checks them).
  """
  validation.check_bool("residual", residual)
  validation.check_bool("nnx", nnx)
  if not isinstance(params, (LayerParams, RNNParams)):
    raise TypeError(
      f"params must be LayerParams or RNNParams, got {type(params).__name__}; "
      "convert a StackedParams layer by layer"
    )
  validation.check_params_consistent(params.w_xh, params.w_hh, params.b_h, params.h0)
  if isinstance(params, RNNParams):
    validation.check_readout(
      params.w_hy, params.b_y, np.shape(params.w_hh)[0], jnp.result_type(params.w_hh)
    )
  w_hh = jnp.asarray(params.w_hh)
  if residual:
    w_hh = w_hh - jnp.eye(w_hh.shape[0], dtype=w_hh.dtype)
  name_i, name_h = _NAMES[bool(nnx)]
  cell = {
    name_i: {"kernel": jnp.asarray(params.w_xh).T, "bias": jnp.asarray(params.b_h)},
    name_h: {"kernel": w_hh.T},
  }
  if isinstance(params, LayerParams):
    return cell
  if params.w_hy is None:  # e.g. an NNX/Equinox ElmanRNN's .params without out_features
    return cell, None
  return cell, {"kernel": jnp.asarray(params.w_hy).T, "bias": jnp.asarray(params.b_y)}
