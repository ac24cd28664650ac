"""Equinox modules over jrnn's forward passes (``pip install 'jrnn[equinox]'``).

:class:`ElmanRNN` (one layer) and :class:`StackedElmanRNN` (a stack of (bidirectional) layers)
are shells (:mod:`jrnn.interop.shells`): the module's array fields are jrnn's parameters under
jrnn's names, drawn by jrnn's initialisers from the keyword-only ``key``, every other field is
static, and the call is :func:`jrnn.forward` / :func:`jrnn.stacked_forward` with every choice
jrnn offers. ``xs`` may be one sequence ``(T, I)`` (Equinox's habit: ``jax.vmap`` the module
over a batch) or a batch, batch-major ``(B, T, I)`` by default. The call returns the outputs,
or ``(carry, outputs)`` with ``return_carry=True``.

Example::

  >>> import equinox as eqx
  >>> import jax, jax.numpy as jnp
  >>> from jrnn.interop.equinox import ElmanRNN
  >>> xs, targets = jnp.ones((2, 5, 4)), jnp.zeros((2, 5, 1))
  >>> loss_fn = lambda model, xs, targets: jnp.mean((jax.vmap(model)(xs) - targets) ** 2)
  >>> model = ElmanRNN(4, 32, out_features=1, key=jax.random.key(0))
  >>> ys = jax.vmap(model)(xs)                        # xs (B, T, 4) -> (B, T, 1)
  >>> ys.shape
  (2, 5, 1)
  >>> grads = eqx.filter_grad(loss_fn)(model, xs, targets)
"""

from __future__ import annotations

from typing import Optional, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike
from jrnn.interop import shells
from jrnn.params import LayerParams, RNNParams, StackedParams


class ElmanRNN(eqx.Module):
  """One Elman layer, ``h_t = σ(W_hh h_{t-1} + W_xh x_t + b_h)``, optionally read out.

  Fields ``w_xh (H, I)``, ``w_hh (H, H)``, ``b_h (H,)``, ``h0 (H,)`` (``learn_h0``, else
  ``None``), ``w_hy (O, H)``, ``b_y (O,)`` (``out_features``, else ``None``): the fields of
  :class:`jrnn.RNNParams`, equal to ``jrnn.init_params(key, ...)``.

  Args:
    in_features: ``I``.
    hidden_size: ``H``.
    out_features: ``O`` for a linear readout; ``None``: the outputs are the states.
    activation, output_activation, time_major, reverse, unroll, grad, kernel, solver: as
      :func:`jrnn.forward`; ``time_major`` defaults to ``False`` (batch-major) and only matters
      for a batch.
    return_carry: return ``(carry, outputs)``, ``carry`` the final state ``(H,)`` or ``(B, H)``.
    scheme, scale, spectral_radius, learn_h0: the initialiser (:func:`jrnn.init_params`).
    dtype: the parameters' dtype.
    key: a PRNG key (keyword-only).
  """

  w_xh: jax.Array
  w_hh: jax.Array
  b_h: jax.Array
  h0: Optional[jax.Array]
  w_hy: Optional[jax.Array]
  b_y: Optional[jax.Array]
  options: shells.Options = eqx.field(static=True)
  reverse: bool = eqx.field(static=True)
  return_carry: bool = eqx.field(static=True)

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
    dtype=jnp.float32,
    key: jax.Array,
  ):
    shells.check_flags(
      time_major=time_major, reverse=reverse, return_carry=return_carry, learn_h0=learn_h0
    )
    p = shells.init_rnn(
      key,
      in_features,
      hidden_size,
      out_features,
      shells.Init(scheme, scale, spectral_radius, learn_h0),
      dtype,
    )
    self.w_xh, self.w_hh, self.b_h, self.w_hy, self.b_y, self.h0 = p
    self.options = shells.Options(
      activation, output_activation, time_major, unroll, grad, kernel, solver
    )
    self.reverse, self.return_carry = reverse, return_carry

  @property
  def params(self) -> RNNParams:
    """The fields as :class:`jrnn.RNNParams` (``w_hy``, ``b_y`` ``None`` without a readout)."""
    # Without a readout w_hy and b_y are None: the interop layer's readout-less RNNParams.
    return RNNParams(self.w_xh, self.w_hh, self.b_h, self.w_hy, self.b_y, self.h0)  # type: ignore[arg-type]

  def __call__(self, xs: jax.Array, *, h0=None, mask=None, lengths=None):
    """Runs the layer over ``xs`` ``(T, I)`` or ``(B, T, I)`` (``(T, B, I)`` if ``time_major``).

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


class StackedElmanRNN(eqx.Module):
  """``num_layers`` Elman layers, each forward or (``bidirectional``) forward and backward.

  Fields ``layers`` (``layers[l][d]`` a :class:`jrnn.LayerParams`), ``w_hy (O, D·H)`` and
  ``b_y (O,)`` (``None`` without ``out_features``): :class:`jrnn.StackedParams`'s, equal to
  ``jrnn.init_stacked(key, ...)``. Arguments as :class:`ElmanRNN` (without ``reverse``), plus
  ``num_layers`` and ``bidirectional``; the carry is ``(L·D, H)`` or ``(L·D, B, H)``.
  """

  layers: Tuple[Tuple[LayerParams, ...], ...]
  w_hy: Optional[jax.Array]
  b_y: Optional[jax.Array]
  options: shells.Options = eqx.field(static=True)
  return_carry: bool = eqx.field(static=True)

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
    dtype=jnp.float32,
    key: jax.Array,
  ):
    shells.check_flags(
      bidirectional=bidirectional,
      time_major=time_major,
      return_carry=return_carry,
      learn_h0=learn_h0,
    )
    p = shells.init_stack(
      key,
      in_features,
      hidden_size,
      out_features,
      shells.Init(scheme, scale, spectral_radius, learn_h0),
      dtype,
      num_layers=num_layers,
      bidirectional=bidirectional,
    )
    self.layers, self.w_hy, self.b_y = p
    self.options = shells.Options(
      activation, output_activation, time_major, unroll, grad, kernel, solver
    )
    self.return_carry = return_carry

  @property
  def params(self) -> StackedParams:
    """The fields as :class:`jrnn.StackedParams`."""
    return StackedParams(self.layers, self.w_hy, self.b_y)

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
