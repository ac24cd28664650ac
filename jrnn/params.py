"""Parameter pytrees.

jrnn keeps the seed document's (and PyTorch's) matrix layout: weights map column vectors,
``h_t = σ(W_hh h_{t-1} + W_xh x_t + b_h)``, so ``W_xh`` is ``(H, I)``. Batched code multiplies
rows, ``h_t = σ(h_{t-1} W_hhᵀ + x_t W_xhᵀ + b_h)`` with ``h_t`` of shape ``(B, H)``; XLA folds the
transposes into the matrix products, so the layout costs nothing.

Sizes: ``I`` inputs, ``H`` hidden units, ``O`` outputs, ``T`` time steps, ``B`` batch.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax


class RNNParams(NamedTuple):
  """The seed's single-layer Elman RNN with a readout.

  ``h0`` is ``None`` unless the initial state is learnt; when it is an array, ``forward`` uses it
  as the initial state (broadcast over the batch) and ``jax.grad`` differentiates it.
  """

  w_xh: jax.Array  # shape=(H, I)
  w_hh: jax.Array  # shape=(H, H)
  b_h: jax.Array  # shape=(H,)
  w_hy: jax.Array  # shape=(O, H)
  b_y: jax.Array  # shape=(O,)
  h0: Optional[jax.Array] = None  # shape=(H,) when learnt

  @property
  def layer(self) -> LayerParams:
    """The recurrent part alone."""
    return LayerParams(self.w_xh, self.w_hh, self.b_h, self.h0)

  @property
  def sizes(self) -> Tuple[int, int, int]:
    """``(I, H, O)``."""
    return self.w_xh.shape[1], self.w_hh.shape[0], self.w_hy.shape[0]


class LayerParams(NamedTuple):
  """One recurrent layer in one direction, without readout."""

  w_xh: jax.Array  # shape=(H, I)
  w_hh: jax.Array  # shape=(H, H)
  b_h: jax.Array  # shape=(H,)
  h0: Optional[jax.Array] = None  # shape=(H,) when learnt


class StackedParams(NamedTuple):
  """A stack of recurrent layers, each uni- or bidirectional, and an optional readout.

  ``layers[l]`` is ``(forward,)`` or ``(forward, backward)``. Layer ``l + 1`` reads the
  concatenation ``[h_fwd, h_bwd]`` of layer ``l``'s states (``D·H`` features, ``D`` directions).
  ``w_hy``/``b_y`` read the top layer's ``D·H`` features; both are ``None`` for a stack without a
  readout (as ``torch.nn.RNN``).
  """

  layers: Tuple[Tuple[LayerParams, ...], ...]
  w_hy: Optional[jax.Array] = None  # shape=(O, D*H)
  b_y: Optional[jax.Array] = None  # shape=(O,)

  @property
  def num_layers(self) -> int:
    return len(self.layers)

  @property
  def num_directions(self) -> int:
    return len(self.layers[0])

  @property
  def hidden_size(self) -> int:
    return self.layers[0][0].w_hh.shape[0]
