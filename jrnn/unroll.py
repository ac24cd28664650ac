"""The unrolled forward pass: one layer, the seed's RNN with readout, and stacks of layers.

Layouts (unbatched ``(T, I)``, time-major ``(T, B, I)``, batch-major ``(B, T, I)``) and their
masks, lengths and initial states are described in :mod:`jrnn.inputs`; outputs come back in
the layout of ``xs``. How each layer is run and differentiated (``grad``, ``kernel``,
``solver``) is described in :mod:`jrnn.engine`.

Variable lengths: a mask (or ``lengths``, turned into the mask ``t < lengths[b]``) marks the valid
steps; on a padded step the state is carried unchanged, so ``h_last`` is the state after each
sequence's last valid step, and a reverse direction starts at each sequence's own end.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import engine, validation
from jrnn.activations import ActivationLike, get_activation
from jrnn.cell import readout
from jrnn.inputs import initial_state, prepare
from jrnn.params import LayerParams, RNNParams, StackedParams


class RNNOutput(NamedTuple):
  """What a forward pass returns (shapes for the time-major layout)."""

  ys: Optional[jax.Array]  # shape=(T, B, O); None without a readout
  hs: jax.Array  # shape=(T, B, H), or (T, B, D*H) for a stack: the top layer's states
  h_last: jax.Array  # shape=(B, H), or (L*D, B, H) for a stack, as torch's h_n


def layer_forward(
  layer: LayerParams,
  xs: jax.Array,
  *,
  h0: Optional[jax.Array] = None,
  mask: Optional[jax.Array] = None,
  activation: ActivationLike = "tanh",
  reverse: bool = False,
  unroll: int = 1,
  grad: str = "hand",
  kernel: str = "auto",
  solver: str = "sequential",
  bptt: Optional[str] = None,
) -> jax.Array:
  """One recurrent layer over time-major ``xs (T, B, I)``; returns ``hs (T, B, H)``.

  The input projection ``u = xs W_xhᵀ + b_h`` is one matrix product over all ``T·B`` rows,
  hoisted out of the loop. ``h0 (B, H)`` defaults to :func:`jrnn.inputs.initial_state`.
  ``mask (T, B)`` marks valid steps. ``grad``, ``kernel``, ``solver``: see :mod:`jrnn.engine`
  (``bptt`` is their deprecated 0.1 form). Shapes are not validated here: :func:`forward` and
  :func:`stacked_forward` validate before calling it.
  """
  grad, kernel = engine.choices_from_bptt(bptt, grad, kernel)
  validation.check_bool("reverse", reverse)
  act = get_activation(activation)
  if h0 is None:
    h0 = initial_state(layer, xs.shape[1])
  return engine.run_layer(
    layer,
    xs,
    h0,
    mask,
    act,
    reverse=reverse,
    unroll=unroll,
    grad=grad,
    kernel=kernel,
    solver=solver,
  )


def forward(
  params: RNNParams,
  xs: jax.Array,
  *,
  h0: Optional[jax.Array] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  time_major: bool = True,
  reverse: bool = False,
  unroll: int = 1,
  grad: str = "hand",
  kernel: str = "auto",
  solver: str = "sequential",
  bptt: Optional[str] = None,
) -> RNNOutput:
  """Runs the seed's RNN over a sequence.

  .. math::

     h_t = σ(W_{hh} h_{t-1} + W_{xh} x_t + b_h), \\qquad y_t = σ_y(W_{hy} h_t + b_y)

  Args:
    params: :class:`RNNParams`.
    xs: inputs ``(T, I)``, ``(T, B, I)`` or, with ``time_major=False``, ``(B, T, I)``.
    h0: initial state ``(H,)`` or ``(B, H)``; default ``params.h0`` if learnt, else zeros.
    mask: valid steps, ``(T,)``, ``(T, B)`` or ``(B, T)`` following ``xs``; boolean or numeric
      (nonzero marks a valid step). Valid steps need not be contiguous.
    lengths: instead of ``mask``: ``()`` or ``(B,)`` integer lengths in ``[0, T]`` (checked when
      concrete; under ``jit`` a length past ``T`` acts as ``T``).
    activation: ``σ``: ``"tanh"``, ``"relu"``, ``"sigmoid"``, ``"identity"``, … or a callable.
    output_activation: ``σ_y``, or ``None`` for the linear readout of the seed's code.
    time_major: layout of batched ``xs`` (see the module docstring).
    reverse: process the sequence from its end (outputs stay aligned with ``xs``).
    unroll: the loops' ``unroll`` (a positive int).
    grad: ``"hand"`` (the hand-derived BPTT, reverse mode) or ``"autodiff"`` (JAX
      differentiates the scan; forward mode too). See :mod:`jrnn.engine`.
    kernel: ``"auto"``, ``"xla"``, ``"pallas"`` (CUDA GPU) or ``"pallas_interpret"``: what runs
      the sequential loops (:mod:`jrnn.kernels`).
    solver: ``"sequential"``: how the trajectory is evaluated.
    bptt: deprecated (jrnn 0.1); ``"hand"``, ``"autodiff"``, ``"pallas"``, ``"auto"`` map to
      ``grad``/``kernel`` with a ``DeprecationWarning``.

  Returns:
    :class:`RNNOutput` ``(ys, hs, h_last)``: outputs ``(T, B, O)``, states ``(T, B, H)`` and
    the final state ``(B, H)`` (after each sequence's last valid step), in the layout of ``xs``.
    At a padded step ``hs`` repeats the carried state (not zeros, unlike PyTorch's packed
    sequences); mask the loss there.

  Raises:
    ValueError, TypeError: at trace time, for a wrong rank, size or dtype of any argument
    (the message names it and the expected shape), an unknown activation, ``grad``, ``kernel``
    or ``solver``, or ``kernel="pallas"`` without a CUDA GPU.
  """
  if not isinstance(params, RNNParams):
    raise TypeError(
      f"params must be RNNParams, got {type(params).__name__}; "
      "use stacked_forward for StackedParams"
    )
  if params.w_hy is None or params.b_y is None:
    raise ValueError(
      "forward needs a readout: params.w_hy (O, H) and params.b_y (O,), got "
      f"w_hy={'None' if params.w_hy is None else jnp.shape(params.w_hy)}, "
      f"b_y={'None' if params.b_y is None else jnp.shape(params.b_y)}; for the "
      "states alone use stacked_forward(StackedParams(((params.layer,),)), xs)"
    )
  validation.check_params_consistent(params.w_xh, params.w_hh, params.b_h, params.h0)
  n_in, n_hidden, n_out = params.sizes
  validation.check_shape("params.w_hy", params.w_hy, (None, n_hidden), f"(O, H={n_hidden})")
  validation.check_shape("params.b_y", params.b_y, (n_out,), f"(O={n_out},)")
  dtype = jnp.result_type(params.w_hh)
  validation.check_float("params.w_hy", params.w_hy, dtype)
  validation.check_float("params.b_y", params.b_y, dtype)
  get_activation(activation)
  grad, kernel = engine.choices_from_bptt(bptt, grad, kernel)
  xs, mask, h0, layout = prepare(
    xs, mask, lengths, h0, n_in=n_in, n_hidden=n_hidden, dtype=dtype, time_major=time_major
  )
  hs = layer_forward(
    params.layer,
    xs,
    h0=h0,
    mask=mask,
    activation=activation,
    reverse=reverse,
    unroll=unroll,
    grad=grad,
    kernel=kernel,
    solver=solver,
  )
  ys = readout(params.w_hy, params.b_y, hs, output_activation)
  h_last = hs[0] if reverse else hs[-1]
  return RNNOutput(layout.restore(ys), layout.restore(hs), layout.restore(h_last, False))


def stacked_forward(
  params: StackedParams,
  xs: jax.Array,
  *,
  h0: Optional[jax.Array] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  time_major: bool = True,
  unroll: int = 1,
  grad: str = "hand",
  kernel: str = "auto",
  solver: str = "sequential",
  bptt: Optional[str] = None,
) -> RNNOutput:
  """Runs a stack of (bi)directional layers built from the same recurrence.

  Layer ``l`` reads layer ``l-1``'s states; a bidirectional layer runs a forward and a reverse
  recurrence over the same input and concatenates their states ``[h_fwd, h_bwd]``. The reverse
  direction of a masked sequence starts at that sequence's own last valid step.

  Args:
    params: :class:`StackedParams`.
    xs: as :func:`forward`.
    h0: ``(L·D, H)`` or ``(L·D, B, H)``, ordered layer-major then direction (torch's ``h_0``);
      default each layer's learnt ``h0`` or zeros.
    mask, lengths, activation, output_activation, time_major, unroll, grad, kernel, solver,
      bptt: as :func:`forward`.

  Returns:
    :class:`RNNOutput` with ``ys (T, B, O)`` (``None`` without readout), ``hs (T, B, D·H)``
    the top layer's states, ``h_last (L·D, B, H)`` (torch's ``output`` and ``h_n``).
  """
  if not isinstance(params, StackedParams):
    raise TypeError(f"params must be StackedParams, got {type(params).__name__}")
  if not params.layers or len({len(l) for l in params.layers}) != 1 or params.num_directions > 2:
    raise ValueError(
      "params.layers must be a non-empty tuple of (forward,) or "
      "(forward, backward) tuples, the same number of directions in each layer"
    )
  n_hidden, n_dir = params.hidden_size, params.num_directions
  n_in = params.layers[0][0].w_xh.shape[1]
  dtype = jnp.result_type(params.layers[0][0].w_hh)
  for l, layer in enumerate(params.layers):
    fan_in = n_in if l == 0 else n_dir * n_hidden
    for j, p in enumerate(layer):
      prefix = f"params.layers[{l}][{j}]."
      # The stack's dtype is layer 0's: name the layer that differs, not its own w_xh.
      validation.check_float(prefix + "w_hh", p.w_hh, dtype)
      validation.check_params_consistent(p.w_xh, p.w_hh, p.b_h, p.h0, prefix=prefix)
      validation.check_shape(prefix + "w_xh", p.w_xh, (n_hidden, fan_in), "(H, fan_in)")
  if (params.w_hy is None) != (params.b_y is None):
    validation.check_readout(params.w_hy, params.b_y, n_dir * n_hidden, dtype)  # raises
  if params.w_hy is not None:
    validation.check_shape("params.w_hy", params.w_hy, (None, n_dir * n_hidden), "(O, D*H)")
    validation.check_shape("params.b_y", params.b_y, (params.w_hy.shape[0],), "(O,)")
    validation.check_float("params.w_hy", params.w_hy, dtype)
    validation.check_float("params.b_y", params.b_y, dtype)
  get_activation(activation)
  grad, kernel = engine.choices_from_bptt(bptt, grad, kernel)
  n_states = params.num_layers * n_dir
  xs, mask, h0, layout = prepare(
    xs,
    mask,
    lengths,
    h0,
    n_in=n_in,
    n_hidden=n_hidden,
    dtype=dtype,
    time_major=time_major,
    h0_lead=(n_states,),
  )
  finals = []
  inp = xs
  for l, layer in enumerate(params.layers):
    outs = []
    for j, p in enumerate(layer):
      hs = layer_forward(
        p,
        inp,
        h0=None if h0 is None else h0[l * n_dir + j],
        mask=mask,
        activation=activation,
        reverse=j == 1,
        unroll=unroll,
        grad=grad,
        kernel=kernel,
        solver=solver,
      )
      outs.append(hs)
      finals.append(hs[0] if j == 1 else hs[-1])
    inp = outs[0] if n_dir == 1 else jnp.concatenate(outs, axis=-1)
  ys = None
  if params.w_hy is not None:  # then b_y is an array too (check_readout above)
    ys = readout(params.w_hy, params.b_y, inp, output_activation)  # type: ignore[arg-type]
  h_last = jnp.stack(finals)
  return RNNOutput(layout.restore(ys), layout.restore(inp), layout.restore(h_last, False))
