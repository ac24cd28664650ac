"""What jrnn's Flax (linen, NNX) and Equinox modules share; no framework is imported here.

Each module is a shell: it owns jrnn's parameter fields under jrnn's names (``w_xh``, ``w_hh``,
``b_h``, ``h0``, ``w_hy``, ``b_y``; a stack's ``layers[l][d]``), drawn by jrnn's initialisers,
and its call rebuilds the NamedTuple and hands it to :func:`jrnn.forward` (one layer) or
:func:`jrnn.stacked_forward` (a stack) through :func:`run_layer` / :func:`run_stack`.

Both return ``(carry, outputs)``, the order of ``lax.scan`` and of Flax's
``nn.RNN(..., return_carry=True)``: ``outputs`` are the readout's ``ys`` when the module has
one, else the states ``hs``; ``carry`` is jrnn's ``h_last`` (``(B, H)``, or ``(L·D, B, H)`` for a
stack).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from jrnn import validation
from jrnn.activations import ActivationLike
from jrnn.init import init_layer, init_params, init_stacked
from jrnn.params import RNNParams, StackedParams
from jrnn.unroll import forward, stacked_forward

# jrnn's initialisers are orthogonal-recurrent like Flax's SimpleCell by this choice; any of
# jrnn.SCHEMES may be passed instead.
DEFAULT_SCHEME = "orthogonal"


class Options(NamedTuple):
  """The static choices of a call, exactly :func:`jrnn.forward`'s keywords."""

  activation: ActivationLike = "tanh"
  output_activation: Optional[ActivationLike] = None
  time_major: bool = False  # batch-major, as Flax's nn.RNN
  unroll: int = 1
  grad: str = "hand"
  kernel: str = "auto"
  solver: str = "sequential"


class Init(NamedTuple):
  """Which of jrnn's initialisers draws the parameters (see :mod:`jrnn.init`)."""

  scheme: str = DEFAULT_SCHEME
  scale: Optional[float] = None
  spectral_radius: Optional[float] = None
  learn_h0: bool = False


def check_flags(**flags) -> None:
  """Raises ``TypeError`` naming the first flag that is not a bool (``"no"`` is not False).

  The modules check their flags before drawing anything, so a typo costs no compile.
  """
  for name, value in flags.items():
    validation.check_bool(name, value)


def init_rnn(
  key: jax.Array, n_in: int, n_hidden: int, n_out: Optional[int], init: Init, dtype
) -> RNNParams:
  """One layer's parameters: :func:`jrnn.init_params`, or with ``n_out=None``
  :func:`jrnn.init_layer` and no readout (``w_hy``, ``b_y`` are ``None``)."""
  kw = dict(init._asdict(), dtype=dtype)
  if n_out is not None:
    return init_params(key, n_in, n_hidden, n_out, **kw)
  layer = init_layer(key, n_in, n_hidden, **kw)
  # No readout: w_hy, b_y None, which run_rnn fills with an empty (0, H) one.
  return RNNParams(layer.w_xh, layer.w_hh, layer.b_h, None, None, layer.h0)  # type: ignore[arg-type]


def init_stack(
  key: jax.Array,
  n_in: int,
  n_hidden: int,
  n_out: Optional[int],
  init: Init,
  dtype,
  *,
  num_layers: int,
  bidirectional: bool,
) -> StackedParams:
  """:func:`jrnn.init_stacked` (``n_out=None``: no readout)."""
  return init_stacked(
    key,
    n_in,
    n_hidden,
    n_out,
    num_layers=num_layers,
    bidirectional=bidirectional,
    dtype=dtype,
    **init._asdict(),
  )


def run_layer(
  params: RNNParams,
  xs,
  *,
  h0=None,
  mask=None,
  lengths=None,
  reverse=False,
  options: Options,
  scope: str,
) -> Tuple[jax.Array, jax.Array]:
  """``(h_last, outputs)`` of :func:`jrnn.forward`.

  Without a readout (``params.w_hy is None``) the readout is empty (``(0, H)``), which costs
  nothing and keeps one call for both cases; ``outputs`` are then the states.
  """
  has_readout = params.w_hy is not None
  if not has_readout:
    n_hidden, dtype = params.w_hh.shape[0], params.w_hh.dtype
    params = params._replace(w_hy=jnp.zeros((0, n_hidden), dtype), b_y=jnp.zeros((0,), dtype))
  with jax.named_scope(scope):
    out = forward(
      params, xs, h0=h0, mask=mask, lengths=lengths, reverse=reverse, **options._asdict()
    )
  # forward's ys is always an array (RNNOutput types it Optional for stacks).
  return out.h_last, out.ys if has_readout else out.hs  # type: ignore[return-value]


def run_stack(
  params: StackedParams, xs, *, h0=None, mask=None, lengths=None, options: Options, scope: str
) -> Tuple[jax.Array, jax.Array]:
  """``(h_last (L·D, B, H), outputs)`` of :func:`jrnn.stacked_forward`."""
  with jax.named_scope(scope):
    out = stacked_forward(params, xs, h0=h0, mask=mask, lengths=lengths, **options._asdict())
  # With a readout, ys is an array.
  return out.h_last, out.hs if params.w_hy is None else out.ys  # type: ignore[return-value]
