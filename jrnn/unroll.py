"""The unrolled forward pass: one layer, the seed's RNN with readout, and stacks of layers.

Layouts accepted by :func:`forward` and :func:`stacked_forward`:

==============  ==============  ===============  ===============  =================
layout          ``xs``          ``mask``         ``lengths``      ``h0``
==============  ==============  ===============  ===============  =================
unbatched       ``(T, I)``      ``(T,)``         ``()``           ``(H,)``
time-major      ``(T, B, I)``   ``(T, B)``       ``(B,)``         ``(H,)``/``(B, H)``
batch-major     ``(B, T, I)``   ``(B, T)``       ``(B,)``         ``(H,)``/``(B, H)``
==============  ==============  ===============  ===============  =================

Outputs come back in the layout of ``xs``. Time-major (``time_major=True``, the default) is the
seed's list over time and ``lax.scan``'s native layout.

Variable lengths: a mask (or ``lengths``, turned into the mask ``t < lengths[b]``) marks the valid
steps; on a padded step the state is carried unchanged, so ``h_last`` is the state after each
sequence's last valid step, and a reverse direction starts at each sequence's own end.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import validation
from jrnn.activations import ActivationLike, get_activation
from jrnn.cell import add_bias, readout
from jrnn.params import LayerParams, RNNParams, StackedParams
from jrnn import bptt as bptt_lib
from jrnn.recurrence import auto_unroll, in_time_order, resolve_bptt, scan_recurrence


class RNNOutput(NamedTuple):
  """What a forward pass returns (shapes for the time-major layout)."""
  ys: Optional[jax.Array]  # shape=(T, B, O); None without a readout
  hs: jax.Array  # shape=(T, B, H), or (T, B, D*H) for a stack: the top layer's states
  h_last: jax.Array  # shape=(B, H), or (L*D, B, H) for a stack, as torch's h_n


class _Layout(NamedTuple):
  """How the caller's arrays map to the internal time-major batched layout."""
  batched: bool
  time_major: bool

  def restore(self, a: Optional[jax.Array], time_axis: bool = True) -> Optional[jax.Array]:
    if a is None:
      return None
    if not self.batched:
      return a[:, 0] if time_axis else a[..., 0, :]
    if time_axis and not self.time_major:
      return jnp.swapaxes(a, 0, 1)
    return a


def _prepare(xs, mask, lengths, h0, *, n_in, n_hidden, dtype, time_major, h0_lead=()):
  """Validates and converts the caller's arrays to ``xs (T, B, I)``, ``mask (T, B)``, ``h0``."""
  xs, mask, lengths, h0 = (validation.from_nested(a) for a in (xs, mask, lengths, h0))
  validation.check_float("xs", xs, dtype)
  xs = jnp.asarray(xs)
  if xs.ndim == 2:
    layout = _Layout(False, True)
    validation.check_shape("xs", xs, (None, n_in), f"(T, I={n_in})")
    xs = xs[:, None]
    if mask is not None:
      validation.check_shape("mask", mask, (xs.shape[0],), "(T,)")
      mask = jnp.asarray(mask)[:, None]
    if lengths is not None:
      validation.check_shape("lengths", lengths, (), "()")
      lengths = jnp.asarray(lengths)[None]
  elif xs.ndim == 3:
    layout = _Layout(True, time_major)
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
        f"got shape {xs.shape}")
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
    validation.check_float("h0", h0, dtype)
    h0 = jnp.asarray(h0)
    lead = tuple(h0_lead)
    shared, per_seq = ("(L*D, H)", "(L*D, B, H)") if lead else ("(H,)", "(B, H)")
    if layout.batched and h0.ndim == len(lead) + 2:
      validation.check_shape("h0", h0, lead + (n_batch, n_hidden), per_seq)
    elif h0.ndim == len(lead) + 1 or not layout.batched:
      validation.check_shape("h0", h0, lead + (n_hidden,), shared)
      h0 = jnp.broadcast_to(h0[..., None, :], lead + (n_batch, n_hidden))
    else:
      raise ValueError(f"h0 must have shape {shared}={lead + (n_hidden,)} or "
                       f"{per_seq}={lead + (n_batch, n_hidden)}, got {h0.shape}")
  return xs, mask, h0, layout


def layer_forward(
    layer: LayerParams,
    xs: jax.Array,
    *,
    h0: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    activation: ActivationLike = "tanh",
    reverse: bool = False,
    unroll: int = 1,
    bptt: str = "hand",
) -> jax.Array:
  """One recurrent layer over time-major ``xs (T, B, I)``; returns ``hs (T, B, H)``.

  The input projection ``u = xs W_xhᵀ + b_h`` is one matrix product over all ``T·B`` rows,
  hoisted out of the scan. With ``bptt="hand"`` the layer is :func:`jrnn.bptt.hand_layer`, whose
  backward pass is derived by hand. ``h0 (B, H)`` defaults to ``layer.h0`` if learnt, else zeros. No
  validation here: :func:`forward` and :func:`stacked_forward` validate before calling it.
  """
  act = get_activation(activation)
  mode, kernel = resolve_bptt(bptt, layer.w_hh.shape[0], xs.shape[1], xs.dtype, act)
  unroll = auto_unroll(bptt, kernel, unroll)
  n_batch = xs.shape[1]
  if h0 is None:
    init = layer.h0 if layer.h0 is not None else jnp.zeros_like(layer.b_h)
    h0 = jnp.broadcast_to(init, (n_batch,) + init.shape)
  xs, mask = in_time_order(xs, mask, reverse)
  if mode == "hand":
    with bptt_lib.explain_forward_mode():
      hs = bptt_lib.hand_layer(layer.w_xh, layer.w_hh, layer.b_h, xs, h0, mask, act, unroll,
                               kernel)
  else:
    u = add_bias(xs @ layer.w_xh.T, layer.b_h)
    hs = scan_recurrence(layer.w_hh, u, h0, mask, act, unroll)
  return jnp.flip(hs, 0) if reverse else hs


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
    bptt: str = "hand",
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
    unroll: ``lax.scan``'s ``unroll``.
    bptt: ``"hand"`` (hand-derived backward pass, XLA loops), ``"autodiff"``, ``"pallas"``
      (hand-derived, persistent Pallas kernels) or ``"auto"``; see :mod:`jrnn.recurrence`.

  Returns:
    :class:`RNNOutput` ``(ys, hs, h_last)``: outputs ``(T, B, O)``, states ``(T, B, H)`` and
    the final state ``(B, H)`` (after each sequence's last valid step), in the layout of ``xs``.
    At a padded step ``hs`` repeats the carried state (not zeros, unlike PyTorch's packed
    sequences); mask the loss there.

  Raises:
    ValueError, TypeError: at trace time, for a wrong rank, size or dtype of any argument
    (the message names it and the expected shape), an unknown activation or ``bptt``.
  """
  if not isinstance(params, RNNParams):
    raise TypeError(f"params must be RNNParams, got {type(params).__name__}; "
                    "use stacked_forward for StackedParams")
  validation.check_params_consistent(params.w_xh, params.w_hh, params.b_h, params.h0)
  n_in, n_hidden, n_out = params.sizes
  validation.check_shape("params.w_hy", params.w_hy, (None, n_hidden), f"(O, H={n_hidden})")
  validation.check_shape("params.b_y", params.b_y, (n_out,), f"(O={n_out},)")
  dtype = jnp.result_type(params.w_hh)
  validation.check_float("params.w_hy", params.w_hy, dtype)
  validation.check_float("params.b_y", params.b_y, dtype)
  get_activation(activation)
  xs, mask, h0, layout = _prepare(xs, mask, lengths, h0, n_in=n_in, n_hidden=n_hidden,
                                  dtype=dtype, time_major=time_major)
  hs = layer_forward(params.layer, xs, h0=h0, mask=mask, activation=activation,
                     reverse=reverse, unroll=unroll, bptt=bptt)
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
    bptt: str = "hand",
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
    mask, lengths, activation, output_activation, time_major, unroll, bptt: as :func:`forward`.

  Returns:
    :class:`RNNOutput` with ``ys (T, B, O)`` (``None`` without readout), ``hs (T, B, D·H)``
    the top layer's states, ``h_last (L·D, B, H)`` (torch's ``output`` and ``h_n``).
  """
  if not isinstance(params, StackedParams):
    raise TypeError(f"params must be StackedParams, got {type(params).__name__}")
  if not params.layers or len({len(l) for l in params.layers}) != 1 or params.num_directions > 2:
    raise ValueError("params.layers must be a non-empty tuple of (forward,) or "
                     "(forward, backward) tuples, the same number of directions in each layer")
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
  if params.w_hy is not None:
    validation.check_shape("params.w_hy", params.w_hy, (None, n_dir * n_hidden), "(O, D*H)")
    validation.check_shape("params.b_y", params.b_y, (params.w_hy.shape[0],), "(O,)")
    validation.check_float("params.w_hy", params.w_hy, dtype)
    validation.check_float("params.b_y", params.b_y, dtype)
  get_activation(activation)
  n_states = params.num_layers * n_dir
  xs, mask, h0, layout = _prepare(xs, mask, lengths, h0, n_in=n_in, n_hidden=n_hidden,
                                  dtype=dtype, time_major=time_major, h0_lead=(n_states,))
  finals = []
  inp = xs
  for l, layer in enumerate(params.layers):
    outs = []
    for j, p in enumerate(layer):
      hs = layer_forward(p, inp, h0=None if h0 is None else h0[l * n_dir + j], mask=mask,
                         activation=activation, reverse=j == 1, unroll=unroll, bptt=bptt)
      outs.append(hs)
      finals.append(hs[0] if j == 1 else hs[-1])
    inp = outs[0] if n_dir == 1 else jnp.concatenate(outs, axis=-1)
  ys = None
  if params.w_hy is not None:
    ys = readout(params.w_hy, params.b_y, inp, output_activation)
  h_last = jnp.stack(finals)
  return RNNOutput(layout.restore(ys), layout.restore(inp), layout.restore(h_last, False))
