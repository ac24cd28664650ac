"""Flax linen modules over jrnn's forward passes (``pip install 'jrnn[flax]'``).

:class:`ElmanRNN` stands where ``nn.RNN(nn.SimpleCell(H))`` stood; :class:`StackedElmanRNN`
is a stack of (bidirectional) layers. Both are shells (:mod:`jrnn.interop.shells`): parameters
are created by ``self.param`` with jrnn's initialisers under jrnn's names, and the call is
:func:`jrnn.forward` / :func:`jrnn.stacked_forward` with every choice jrnn offers. Inputs are
batch-major ``(B, T, I)`` by default, as ``nn.RNN``'s; the call returns the outputs, or
``(carry, outputs)`` with ``return_carry=True`` (again as ``nn.RNN``).

Example::

  >>> import jax, jax.numpy as jnp
  >>> from jrnn.interop.flax_linen import ElmanRNN
  >>> xs, lengths = jnp.ones((2, 5, 3)), jnp.array([5, 3])
  >>> model = ElmanRNN(hidden_size=32)            # was: nn.RNN(nn.SimpleCell(32))
  >>> variables = model.init(jax.random.key(0), xs)   # xs (B, T, I)
  >>> hs = model.apply(variables, xs, lengths=lengths)  # (B, T, 32)
  >>> hs.shape
  (2, 5, 32)

A Flax ``SimpleCell`` checkpoint loads with :func:`from_simple_cell` and :func:`to_variables`
(and goes back with :func:`from_variables` and :func:`to_simple_cell`).
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jrnn import validation
from jrnn.activations import ActivationLike
from jrnn.interop import shells
from jrnn.interop.simple_cell import from_simple_cell, to_simple_cell
from jrnn.params import LayerParams, RNNParams, StackedParams


class ElmanRNN(nn.Module):
  """One Elman layer, ``h_t = σ(W_hh h_{t-1} + W_xh x_t + b_h)``, optionally read out.

  Parameters (``variables["params"]``): ``w_xh (H, I)``, ``w_hh (H, H)``, ``b_h (H,)``, and
  ``h0 (H,)`` with ``learn_h0``, ``w_hy (O, H)``, ``b_y (O,)`` with ``out_features``: the fields
  of :class:`jrnn.RNNParams`, one draw of :func:`jrnn.init_params` with ``scheme`` (from the
  key Flax gives the first parameter).

  Attributes:
    hidden_size: ``H``.
    out_features: ``O`` for a linear readout ``y_t = σ_y(W_hy h_t + b_y)``; ``None``: the
      outputs are the states ``h_t``.
    activation, output_activation, time_major, reverse, unroll, grad, kernel, solver: as
      :func:`jrnn.forward`; ``time_major`` defaults to ``False`` (batch-major, as ``nn.RNN``).
    return_carry: return ``(carry, outputs)``, ``carry`` the final state ``(B, H)`` (after each
      sequence's last valid step); else the outputs alone.
    scheme, scale, spectral_radius, learn_h0: the initialiser (:func:`jrnn.init_params`).
    param_dtype: the parameters' dtype.
  """

  hidden_size: int
  out_features: Optional[int] = None
  activation: ActivationLike = "tanh"
  output_activation: Optional[ActivationLike] = None
  time_major: bool = False
  reverse: bool = False
  unroll: int = 1
  grad: str = "hand"
  kernel: str = "auto"
  solver: str = "sequential"
  return_carry: bool = False
  scheme: str = shells.DEFAULT_SCHEME
  scale: Optional[float] = None
  spectral_radius: Optional[float] = None
  learn_h0: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs, *, h0=None, mask=None, lengths=None):
    """Runs the layer over ``xs`` ``(B, T, I)`` (``(T, B, I)`` if ``time_major``, or ``(T, I)``).

    ``h0`` ``(H,)`` or ``(B, H)`` overrides the initial state (default: the learnt ``h0``, else
    zeros); ``mask`` or ``lengths`` mark valid steps, as in :func:`jrnn.forward`.
    """
    shells.check_flags(
      time_major=self.time_major,
      reverse=self.reverse,
      return_carry=self.return_carry,
      learn_h0=self.learn_h0,
    )
    draw = functools.partial(
      shells.init_rnn,
      n_in=jnp.shape(xs)[-1],
      n_hidden=self.hidden_size,
      n_out=self.out_features,
      init=_init(self),
      dtype=self.param_dtype,
    )
    wanted = {
      "h0": self.learn_h0,
      "w_hy": self.out_features is not None,
      "b_y": self.out_features is not None,
    }
    fields = _params(self, draw, [n for n in RNNParams._fields if wanted.get(n, True)])
    # Fields not drawn (no readout, no learnt h0) are None.
    params = RNNParams(**{name: fields.get(name) for name in RNNParams._fields})  # type: ignore[arg-type]
    carry, outputs = shells.run_layer(
      params,
      xs,
      h0=h0,
      mask=mask,
      lengths=lengths,
      reverse=self.reverse,
      options=_options(self),
      scope="jrnn.ElmanRNN",
    )
    return (carry, outputs) if self.return_carry else outputs


class StackedElmanRNN(nn.Module):
  """``num_layers`` Elman layers, each forward or (``bidirectional``) forward and backward.

  Parameters (``variables["params"]``), the fields of :class:`jrnn.StackedParams`: ``layers``,
  a tuple (one per layer) of tuples (one per direction) of :class:`jrnn.LayerParams`, and
  ``w_hy (O, D·H)``, ``b_y (O,)`` with ``out_features``; drawn by :func:`jrnn.init_stacked`.

  Attributes: as :class:`ElmanRNN` (without ``reverse``), plus ``num_layers`` and
  ``bidirectional``. The carry is ``(L·D, B, H)``, ordered layer-major then direction (as
  ``torch.nn.RNN``'s ``h_n``); ``h0`` at the call takes the same shape, or ``(L·D, H)``.
  """

  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  out_features: Optional[int] = None
  activation: ActivationLike = "tanh"
  output_activation: Optional[ActivationLike] = None
  time_major: bool = False
  unroll: int = 1
  grad: str = "hand"
  kernel: str = "auto"
  solver: str = "sequential"
  return_carry: bool = False
  scheme: str = shells.DEFAULT_SCHEME
  scale: Optional[float] = None
  spectral_radius: Optional[float] = None
  learn_h0: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs, *, h0=None, mask=None, lengths=None):
    """Runs the stack over ``xs``; arguments as :meth:`ElmanRNN.__call__` (``h0`` stacked)."""
    shells.check_flags(
      bidirectional=self.bidirectional,
      time_major=self.time_major,
      return_carry=self.return_carry,
      learn_h0=self.learn_h0,
    )
    draw = functools.partial(
      shells.init_stack,
      n_in=jnp.shape(xs)[-1],
      n_hidden=self.hidden_size,
      n_out=self.out_features,
      init=_init(self),
      dtype=self.param_dtype,
      num_layers=self.num_layers,
      bidirectional=self.bidirectional,
    )
    # One parameter holds every layer, so the tree reads as jrnn's: params["layers"][l][d].w_xh.
    names = ["layers"] + (["w_hy", "b_y"] if self.out_features is not None else [])
    fields = _params(self, draw, names)
    carry, outputs = shells.run_stack(
      StackedParams(_as_layers(fields["layers"]), fields.get("w_hy"), fields.get("b_y")),
      xs,
      h0=h0,
      mask=mask,
      lengths=lengths,
      options=_options(self),
      scope="jrnn.StackedElmanRNN",
    )
    return (carry, outputs) if self.return_carry else outputs


def _params(module: nn.Module, draw, names) -> dict:
  """``self.param`` for each named field of one draw of a jrnn initialiser.

  At init the draw happens once, from one key, so the parameters are exactly what
  ``jrnn.init_params``/``init_stacked`` return for it. At apply Flax only checks each
  parameter's shape against its initialiser's output; that needs the draw's shapes, not a draw.
  Outside ``init``, variables that lack one of ``names`` or hold others are refused by name
  (Flax would ask for a ``params`` PRNG, or ignore the extra array).
  """
  if not module.is_initializing():
    have = set(module.variables.get("params", {}))
    missing, extra = sorted(set(names) - have), sorted(have - set(names))
    if missing or extra:
      kind = type(module).__name__
      raise ValueError(
        f"{kind}'s variables must hold params {sorted(names)}, got {sorted(have)} "
        f"(missing {missing}, unexpected {extra}); pass what {kind}.init returned or "
        "to_variables(params), with out_features and learn_h0 as when they were made"
      )
  if all(module.has_variable("params", n) for n in names):
    shapes = jax.eval_shape(draw, jax.random.key(0))
    init = lambda name: (
      lambda _: jax.tree.map(  # noqa: E731
        lambda s: jnp.zeros(s.shape, s.dtype), getattr(shapes, name)
      )
    )
  else:
    full = draw(module.make_rng("params"))
    init = lambda name: lambda _: getattr(full, name)  # noqa: E731
  return {name: module.param(name, init(name)) for name in names}


def _init(m) -> shells.Init:
  return shells.Init(m.scheme, m.scale, m.spectral_radius, m.learn_h0)


def _options(m) -> shells.Options:
  return shells.Options(
    m.activation, m.output_activation, m.time_major, m.unroll, m.grad, m.kernel, m.solver
  )


def _as_layers(layers):
  """jrnn's tree again from what a checkpoint restorer may hand back: lists for the tuples,
  ``{"0": ..., "1": ...}`` dicts (Flax's state dicts), field dicts for the LayerParams."""

  def seq(x):
    return [x[k] for k in sorted(x, key=int)] if isinstance(x, dict) else x

  def layer(p):
    if isinstance(p, LayerParams):
      return p
    return LayerParams(**p) if isinstance(p, dict) else LayerParams(*p)

  return tuple(tuple(layer(p) for p in seq(dirs)) for dirs in seq(layers))


def to_variables(params) -> dict:
  """``{"params": ...}`` for :class:`ElmanRNN` (from :class:`jrnn.RNNParams` or
  :class:`jrnn.LayerParams`) or :class:`StackedElmanRNN` (from :class:`jrnn.StackedParams`)."""
  if isinstance(params, StackedParams):
    validation.check_stacked_layers(params.layers)
    layer0 = params.layers[0][0]
    validation.check_readout(
      params.w_hy,
      params.b_y,
      len(params.layers[0]) * layer0.w_hh.shape[0],
      jnp.result_type(layer0.w_hh),
    )
    tree: Dict[str, Any] = {"layers": params.layers}
    if params.w_hy is not None:
      tree.update(w_hy=params.w_hy, b_y=params.b_y)
    return {"params": tree}
  if not isinstance(params, (RNNParams, LayerParams)):
    raise TypeError(
      f"params must be RNNParams, LayerParams or StackedParams, got {type(params).__name__}"
    )
  validation.check_params_consistent(params.w_xh, params.w_hh, params.b_h, params.h0)
  if isinstance(params, RNNParams):
    validation.check_readout(
      params.w_hy, params.b_y, params.w_hh.shape[0], jnp.result_type(params.w_hh)
    )
  return {"params": {k: v for k, v in params._asdict().items() if v is not None}}


def from_variables(variables: Mapping[str, Any]):
  """jrnn's parameters from an :class:`ElmanRNN`'s or :class:`StackedElmanRNN`'s variables:
  :class:`jrnn.StackedParams` for a stack, :class:`jrnn.RNNParams` for a layer with a readout,
  :class:`jrnn.LayerParams` for one without.

  ``variables`` is ``{"params": tree}`` or the tree itself. Every name must be one of the
  parameters' fields (``w_xh``, ``w_hh``, ``b_h`` required, ``h0`` optional, ``w_hy`` with
  ``b_y``; a stack's ``layers`` with optional ``w_hy``, ``b_y``), and the arrays are checked as
  :func:`jrnn.forward` / :func:`jrnn.stacked_forward` check them: a ``ValueError`` or
  ``TypeError`` names the missing or unexpected names, or the array whose shape or dtype is off.
  """
  if not isinstance(variables, Mapping):
    raise TypeError(f"variables must be a dict ({{'params': ...}}), got {type(variables).__name__}")
  tree = variables.get("params", variables)
  if not isinstance(tree, Mapping):
    raise TypeError(f"variables['params'] must be a dict, got {type(tree).__name__}")
  if "layers" in tree:
    _check_names(tree, required=("layers",), optional=("w_hy", "b_y"))
    try:
      layers = _as_layers(tree["layers"])
    except (TypeError, ValueError, KeyError, AttributeError) as e:
      raise ValueError(
        "params['layers'] must be layers[l][d] with the fields w_xh, w_hh, b_h "
        f"(and h0), as to_variables writes them: {e}"
      ) from e
    params = StackedParams(layers, tree.get("w_hy"), tree.get("b_y"))
    validation.check_stacked_layers(params.layers)
    first = params.layers[0][0]
    validation.check_readout(
      params.w_hy,
      params.b_y,
      params.num_directions * first.w_hh.shape[0],
      jnp.result_type(first.w_hh),
    )
    return params
  readout = "w_hy" in tree or "b_y" in tree
  _check_names(
    tree, required=("w_xh", "w_hh", "b_h") + (("w_hy", "b_y") if readout else ()), optional=("h0",)
  )
  validation.check_params_consistent(tree["w_xh"], tree["w_hh"], tree["b_h"], tree.get("h0"))
  if readout:
    validation.check_readout(
      tree["w_hy"], tree["b_y"], jnp.shape(tree["w_hh"])[0], jnp.result_type(tree["w_hh"])
    )
    return RNNParams(**{k: tree.get(k) for k in RNNParams._fields})  # type: ignore[arg-type]
  return LayerParams(**{k: tree.get(k) for k in LayerParams._fields})  # type: ignore[arg-type]


def _check_names(tree: Mapping[str, Any], *, required, optional) -> None:
  have = set(tree)
  missing = [n for n in required if tree.get(n) is None]
  extra = sorted(have - set(required) - set(optional))
  if missing or extra:
    raise ValueError(
      f"params must hold {list(required)} (optionally {list(optional)}), got "
      f"{sorted(have)}: missing {missing}, unexpected {extra}"
    )


__all__ = (
  "ElmanRNN",
  "StackedElmanRNN",
  "from_simple_cell",
  "from_variables",
  "to_simple_cell",
  "to_variables",
)
