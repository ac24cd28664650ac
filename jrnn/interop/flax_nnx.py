"""Flax NNX modules over jrnn's forward passes (``pip install 'jrnn[flax]'``).

:class:`ElmanRNN` stands where ``nnx.RNN(nnx.SimpleCell(I, H, rngs=rngs))`` stood;
:class:`StackedElmanRNN` is a stack of (bidirectional) layers. Both are shells
(:mod:`jrnn.interop.shells`): the parameters are ``nnx.Param`` attributes under jrnn's names,
drawn by jrnn's initialisers from ``rngs.params()``, and the call is :func:`jrnn.forward` /
:func:`jrnn.stacked_forward` with every choice jrnn offers. Inputs are batch-major
``(B, T, I)`` by default, as ``nnx.RNN``'s; the call returns the outputs, or
``(carry, outputs)`` with ``return_carry=True``.

Example::

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jrnn.interop.flax_nnx import ElmanRNN
  >>> xs, lengths = jnp.ones((2, 5, 4)), jnp.array([5, 3])
  >>> model = ElmanRNN(4, 32, rngs=nnx.Rngs(0))
  >>> hs = model(xs, lengths=lengths)        # xs (B, T, 4) -> (B, T, 32)
  >>> hs.shape
  (2, 5, 32)
  >>> loss_fn = lambda model: jnp.mean(model(xs, lengths=lengths) ** 2)
  >>> grads = nnx.grad(loss_fn)(model)       # nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
"""

from __future__ import annotations

from typing import Optional

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike
from jrnn.interop import shells
from jrnn.params import LayerParams, RNNParams, StackedParams


def _param(a):
  return None if a is None else nnx.Param(a)


def _value(v):
  return None if v is None else v[...]


class ElmanRNN(nnx.Module):
  """One Elman layer, ``h_t = σ(W_hh h_{t-1} + W_xh x_t + b_h)``, optionally read out.

  Attributes ``w_xh (H, I)``, ``w_hh (H, H)``, ``b_h (H,)``, ``h0 (H,)`` (``learn_h0``),
  ``w_hy (O, H)``, ``b_y (O,)`` (``out_features``) are ``nnx.Param``s (``None`` when absent):
  the fields of :class:`jrnn.RNNParams`, equal to ``jrnn.init_params(rngs.params(), ...)``.

  Args:
    in_features: ``I``.
    hidden_size: ``H``.
    out_features: ``O`` for a linear readout; ``None``: the outputs are the states.
    activation, output_activation, time_major, reverse, unroll, grad, kernel, solver: as
      :func:`jrnn.forward`; ``time_major`` defaults to ``False`` (batch-major, as ``nnx.RNN``).
    return_carry: return ``(carry, outputs)``, ``carry`` the final state ``(B, H)``.
    scheme, scale, spectral_radius, learn_h0: the initialiser (:func:`jrnn.init_params`).
    param_dtype: the parameters' dtype.
    rngs: ``nnx.Rngs`` with a ``params`` stream.
  """

  def __init__(
    self,
    in_features: int,
    hidden_size: int,
    out_features: Optional[int] = None,
    *,
    activation: ActivationLike = "tanh",
    output_activation: Optional[ActivationLike] = None,
    time_major: bool = False,
    reverse: bool = False,
    unroll: int = 1,
    grad: str = "hand",
    kernel: str = "auto",
    solver: str = "sequential",
    return_carry: bool = False,
    scheme: str = shells.DEFAULT_SCHEME,
    scale: Optional[float] = None,
    spectral_radius: Optional[float] = None,
    learn_h0: bool = False,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    shells.check_flags(
      time_major=time_major, reverse=reverse, return_carry=return_carry, learn_h0=learn_h0
    )
    p = shells.init_rnn(
      rngs.params(),
      in_features,
      hidden_size,
      out_features,
      shells.Init(scheme, scale, spectral_radius, learn_h0),
      param_dtype,
    )
    self.w_xh, self.w_hh, self.b_h = nnx.Param(p.w_xh), nnx.Param(p.w_hh), nnx.Param(p.b_h)
    self.h0, self.w_hy, self.b_y = _param(p.h0), _param(p.w_hy), _param(p.b_y)
    self.options = shells.Options(
      activation, output_activation, time_major, unroll, grad, kernel, solver
    )
    self.reverse, self.return_carry = reverse, return_carry

  @property
  def params(self) -> RNNParams:
    """The current values as :class:`jrnn.RNNParams` (``w_hy``, ``b_y`` ``None`` without a
    readout)."""
    return RNNParams(*(_value(getattr(self, f)) for f in RNNParams._fields))

  def __call__(self, xs: jax.Array, *, h0=None, mask=None, lengths=None):
    """Runs the layer over ``xs`` ``(B, T, I)`` (``(T, B, I)`` if ``time_major``, or ``(T, I)``).

    ``h0`` ``(H,)`` or ``(B, H)`` overrides the initial state; ``mask`` or ``lengths`` mark
    valid steps, as in :func:`jrnn.forward`.
    """
    carry, outputs = shells.run_layer(
      self.params,
      xs,
      h0=h0,
      mask=mask,
      lengths=lengths,
      reverse=self.reverse,
      options=self.options,
      scope="jrnn.ElmanRNN",
    )
    return (carry, outputs) if self.return_carry else outputs


class StackedElmanRNN(nnx.Module):
  """``num_layers`` Elman layers, each forward or (``bidirectional``) forward and backward.

  ``layers`` is jrnn's tree (``layers[l][d]`` a :class:`jrnn.LayerParams` of ``nnx.Param``s);
  ``w_hy (O, D·H)``, ``b_y (O,)`` with ``out_features``. Equal to
  ``jrnn.init_stacked(rngs.params(), ...)``. Arguments as :class:`ElmanRNN` (without
  ``reverse``), plus ``num_layers`` and ``bidirectional``; the carry is ``(L·D, B, H)``.
  """

  def __init__(
    self,
    in_features: int,
    hidden_size: int,
    out_features: Optional[int] = None,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    activation: ActivationLike = "tanh",
    output_activation: Optional[ActivationLike] = None,
    time_major: bool = False,
    unroll: int = 1,
    grad: str = "hand",
    kernel: str = "auto",
    solver: str = "sequential",
    return_carry: bool = False,
    scheme: str = shells.DEFAULT_SCHEME,
    scale: Optional[float] = None,
    spectral_radius: Optional[float] = None,
    learn_h0: bool = False,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    shells.check_flags(
      bidirectional=bidirectional,
      time_major=time_major,
      return_carry=return_carry,
      learn_h0=learn_h0,
    )
    p = shells.init_stack(
      rngs.params(),
      in_features,
      hidden_size,
      out_features,
      shells.Init(scheme, scale, spectral_radius, learn_h0),
      param_dtype,
      num_layers=num_layers,
      bidirectional=bidirectional,
    )
    self.layers = nnx.data(jax.tree.map(nnx.Param, p.layers))
    self.w_hy, self.b_y = _param(p.w_hy), _param(p.b_y)
    self.options = shells.Options(
      activation, output_activation, time_major, unroll, grad, kernel, solver
    )
    self.return_carry = return_carry

  @property
  def params(self) -> StackedParams:
    """The current values as :class:`jrnn.StackedParams`."""
    layers = tuple(tuple(LayerParams(*map(_value, p)) for p in dirs) for dirs in self.layers)
    return StackedParams(layers, _value(self.w_hy), _value(self.b_y))

  def __call__(self, xs: jax.Array, *, h0=None, mask=None, lengths=None):
    """Runs the stack over ``xs``; arguments as :meth:`ElmanRNN.__call__` (``h0`` stacked:
    ``(L·D, H)`` or ``(L·D, B, H)``)."""
    carry, outputs = shells.run_stack(
      self.params,
      xs,
      h0=h0,
      mask=mask,
      lengths=lengths,
      options=self.options,
      scope="jrnn.StackedElmanRNN",
    )
    return (carry, outputs) if self.return_carry else outputs


__all__ = ("ElmanRNN", "StackedElmanRNN")
