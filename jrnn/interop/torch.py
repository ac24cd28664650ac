"""Conversion to and from ``torch.nn.RNN`` (an optional extra: ``pip install jrnn[torch]``).

PyTorch computes ``h_t = σ(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)``. The two biases only ever
appear as their sum, so jrnn keeps one: ``b_h = b_ih + b_hh``. PyTorch's ``W_ih`` is jrnn's
``W_xh`` in the same ``(H, I)`` layout. Layer ``l``, direction ``d`` of a ``num_layers``,
``bidirectional`` module is ``params.layers[l][d]``; PyTorch's ``h_n`` is jrnn's ``h_last``.

Dropout between layers (``torch.nn.RNN(..., dropout=p)`` with ``num_layers > 1``) has no
counterpart in :func:`jrnn.stacked_forward`: the converted parameters reproduce the module in
``eval()`` mode only, and training them further in jrnn would quietly drop a regulariser the
model was trained with. :func:`from_torch` therefore refuses such a module unless the caller
says ``ignore_dropout=True`` (right for inference, where dropout is off anyway).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import jax.numpy as jnp
import numpy as np

from jrnn import validation
from jrnn.params import LayerParams, RNNParams, StackedParams


def _torch():
  try:
    import torch
  except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("jrnn.from_torch/to_torch need PyTorch: pip install 'jrnn[torch]'") from e
  return torch


def _array(t) -> jnp.ndarray:
  return jnp.asarray(t.detach().cpu().numpy())


def from_torch(
  module, readout=None, *, ignore_dropout: bool = False
) -> Tuple[StackedParams, Dict[str, Any]]:
  """Converts a ``torch.nn.RNN`` (and optionally a ``torch.nn.Linear`` readout).

  Args:
    module: a ``torch.nn.RNN``, any ``num_layers``, ``bidirectional``, ``nonlinearity``,
      ``bias``, ``batch_first``; float32 or float64.
    readout: an optional ``torch.nn.Linear(D·H, O)`` applied to the RNN's output, in the
      module's dtype.
    ignore_dropout: convert a module with ``dropout > 0`` between layers anyway (jrnn has no
      such dropout; see the module docstring). A bool.

  Returns:
    ``(params, config)`` such that ``jrnn.stacked_forward(params, x, **config)`` returns
    ``RNNOutput(ys, hs, h_last)`` with ``hs`` equal to the module's ``output`` and ``h_last``
    to its ``h_n`` (``ys`` is the readout's output, or ``None``). ``config`` holds
    ``activation`` and ``time_major``.

  Raises:
    TypeError: ``module`` or ``readout`` of another type, a dtype other than float32/float64,
      a readout in another dtype than the module, ``ignore_dropout`` not a bool.
    ValueError: dropout between layers without ``ignore_dropout=True``, or a readout whose
      ``in_features`` is not ``D·H``.
  """
  torch = _torch()
  validation.check_bool("ignore_dropout", ignore_dropout)
  if not isinstance(module, torch.nn.RNN):
    raise TypeError(f"module must be a torch.nn.RNN, got {type(module).__name__}")
  dtype = module.weight_ih_l0.dtype
  if dtype not in (torch.float32, torch.float64):
    raise TypeError(
      f"from_torch converts float32 or float64 modules, got {dtype}; call "
      "module.float() (or .double()) first"
    )
  if module.dropout and module.num_layers > 1 and not ignore_dropout:
    raise ValueError(
      f"module has dropout={module.dropout} between its {module.num_layers} layers, which "
      "jrnn.stacked_forward does not apply: the converted parameters match the module in "
      "eval() mode only. Pass ignore_dropout=True to convert it anyway"
    )
  n_dir = 2 if module.bidirectional else 1
  if readout is not None:
    if not isinstance(readout, torch.nn.Linear):
      raise TypeError(f"readout must be a torch.nn.Linear, got {type(readout).__name__}")
    if readout.in_features != n_dir * module.hidden_size:
      raise ValueError(
        f"readout must read the RNN's D·H = {n_dir * module.hidden_size} "
        f"features (in_features), got in_features={readout.in_features}"
      )
    if readout.weight.dtype != dtype:
      raise TypeError(
        f"readout has dtype {readout.weight.dtype} but the module is {dtype}; "
        "convert both to one dtype"
      )
  layers = []
  for l in range(module.num_layers):
    dirs = []
    for suffix in ("", "_reverse")[:n_dir]:
      w_ih = _array(getattr(module, f"weight_ih_l{l}{suffix}"))
      w_hh = _array(getattr(module, f"weight_hh_l{l}{suffix}"))
      if module.bias:
        b = _array(getattr(module, f"bias_ih_l{l}{suffix}")) + _array(
          getattr(module, f"bias_hh_l{l}{suffix}")
        )
      else:
        b = jnp.zeros((module.hidden_size,), w_hh.dtype)
      dirs.append(LayerParams(w_ih, w_hh, b))
    layers.append(tuple(dirs))
  w_hy = b_y = None
  if readout is not None:
    w_hy = _array(readout.weight)
    b_y = (
      _array(readout.bias)
      if readout.bias is not None
      else jnp.zeros((readout.out_features,), w_hy.dtype)
    )
  config = dict(activation=module.nonlinearity, time_major=not module.batch_first)
  return StackedParams(tuple(layers), w_hy, b_y), config


def to_torch(params, *, activation: str = "tanh", time_major: bool = True):
  """Builds a ``torch.nn.RNN`` holding ``params`` (:class:`StackedParams` or :class:`RNNParams`).

  ``b_h`` goes to ``bias_ih``; ``bias_hh`` is zero. A readout (``w_hy``) and learnt initial
  states (``h0``) are not part of ``torch.nn.RNN`` and are left out (pass ``h0`` to the module's
  call instead). ``activation`` must be ``"tanh"`` or ``"relu"``, the two
  PyTorch supports; ``time_major`` a bool (the module's ``batch_first`` is its negation). The
  arrays are checked as :func:`jrnn.stacked_forward` checks them (shapes, one float dtype).
  """
  torch = _torch()
  validation.check_bool("time_major", time_major)
  if activation not in ("tanh", "relu"):
    raise ValueError(f"activation must be 'tanh' or 'relu' for torch.nn.RNN, got {activation!r}")
  if isinstance(params, RNNParams):
    params = StackedParams(((params.layer,),))
  if not isinstance(params, StackedParams):
    raise TypeError(f"params must be StackedParams or RNNParams, got {type(params).__name__}")
  validation.check_stacked_layers(params.layers)
  first = params.layers[0][0]
  dtypes = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}
  if np.dtype(first.w_hh.dtype) not in dtypes:
    raise TypeError(f"to_torch converts float32 or float64 parameters, got {first.w_hh.dtype}")
  dtype = dtypes[np.dtype(first.w_hh.dtype)]
  module = torch.nn.RNN(
    first.w_xh.shape[1],
    params.hidden_size,
    num_layers=params.num_layers,
    nonlinearity=activation,
    bidirectional=params.num_directions == 2,
    batch_first=not time_major,
    dtype=dtype,
  )
  with torch.no_grad():
    for l, layer in enumerate(params.layers):
      for d, p in enumerate(layer):
        suffix = "_reverse" if d else ""
        getattr(module, f"weight_ih_l{l}{suffix}").copy_(torch.from_numpy(np.array(p.w_xh)))
        getattr(module, f"weight_hh_l{l}{suffix}").copy_(torch.from_numpy(np.array(p.w_hh)))
        getattr(module, f"bias_ih_l{l}{suffix}").copy_(torch.from_numpy(np.array(p.b_h)))
        getattr(module, f"bias_hh_l{l}{suffix}").zero_()
  return module
