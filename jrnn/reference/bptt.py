"""BPTT derived by hand, twice: the seed's O(T²) double sum, and the O(T) reverse recursion.

Neither function here calls ``jax.grad``: both are the chain rule written out, so that tests can
hold them against autodiff and against :mod:`jrnn.bptt` (the fast ``custom_vjp`` path). The one
exception is ``σ'`` of a user-supplied activation callable, which has no closed form and is
taken elementwise by :meth:`jrnn.Activation.deriv`.

Notation (the seed's): ``a_t = W_hh h_{t-1} + W_xh x_t + b_h``, ``h_t = σ(a_t)``,
``z_t = W_hy h_t + b_y``, ``y_t = σ_y(z_t)``, ``L = Σ_t L_t(y_t, ŷ_t)``.

Conventions. Vectors are columns, as in the seed, so the step Jacobian is

.. math::

   J_t = \\frac{∂h_t}{∂h_{t-1}} = \\mathrm{diag}(σ'(a_t))\\, W_{hh} \\quad (H × H),
   \\qquad \\frac{∂h_t}{∂h_k} = J_t J_{t-1} \\cdots J_{k+1}

(the seed's ``Π W_hhᵀ diag(σ'(h_i))`` is the transpose of this product: it writes gradients as
columns). Gradients ``∂L/∂h`` are row vectors, so they multiply Jacobians from the left:
``∂L_t/∂h_t · ∂h_t/∂h_k``. In code, a batch stacks these rows: ``g (B, H)``, and a row times
``W_hh`` is ``g @ w_hh``. A masked step (``m_t = 0``) copies the state, so there ``J_t = I`` and
the step adds no parameter gradient.

The loss derivative ``∂L/∂y_t`` is derived by hand as well:

* squared error ``L_t = Σ_o (y_{t,o} - ŷ_{t,o})²``: ``∂L_t/∂y_t = 2 (y_t - ŷ_t)``;
* softmax cross-entropy ``L_t = logsumexp(y_t) - y_{t,c_t}``:
  ``∂L_t/∂y_t = softmax(y_t) - e_{c_t}``;

each times the mask and the reduction's constant (``1``, ``1/B`` or ``1/Σ m``; see
:mod:`jrnn.losses`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jrnn.activations import Activation, ActivationLike, get_activation
from jrnn.inputs import initial_state, prepare
from jrnn.losses import check_loss, loss_value, prepare_targets, reduction_divisor
from jrnn.params import LayerParams, RNNParams, StackedParams
from jrnn.unroll import forward, stacked_forward


class HandGrads(NamedTuple):
  """What :func:`hand_loss_and_grads` and :func:`hand_stacked_loss_and_grads` return."""

  loss: jax.Array  # shape=()
  grads: Union[RNNParams, StackedParams]  # ∂L/∂params, same structure; h0 None where not learnt
  d_xs: jax.Array  # shape of xs: ∂L/∂x_t
  d_h0: Optional[jax.Array]  # shape of the h0 argument; None when no h0 was passed


# ----------------------------------------------------------------------------- the loss


def loss_output_grad(ys, targets, mask, loss: str, reduction: str) -> jax.Array:
  """``∂L/∂y_t`` for every step, by hand: ``(T, B, O)``.

  .. math::

     \\frac{∂L}{∂y_t} = c\\, m_t \\cdot \\begin{cases}
       2 (y_t - ŷ_t) & \\text{squared error} \\\\
       \\mathrm{softmax}(y_t) - e_{c_t} & \\text{cross-entropy}
     \\end{cases}

  with ``c = 1`` (sum), ``1/B`` (batch_mean) or ``1/Σ m`` (mean).
  """
  n_steps, n_batch, n_out = ys.shape
  if loss == "squared_error":
    dy = 2 * (ys - targets)
  else:
    e = jnp.exp(ys - jnp.max(ys, axis=-1, keepdims=True))  # shifted: exp cannot overflow
    dy = e / jnp.sum(e, axis=-1, keepdims=True) - jax.nn.one_hot(targets, n_out, dtype=ys.dtype)
  m = jnp.ones((n_steps, n_batch), ys.dtype) if mask is None else mask.astype(ys.dtype)
  scale = 1 / reduction_divisor(mask, n_steps, n_batch, reduction)
  return dy * (m * scale)[..., None]


def readout_backward(w_hy, b_y, hs, dy, output_activation):
  """Readout ``y = σ_y(h W_hyᵀ + b_y)`` backwards.

  Returns ``(∂L/∂W_hy = Σ_t δ^zᵀ_t h_t, ∂L/∂b_y = Σ_t δ^z_t, ∂L/∂h_t = δ^z_t W_hy)`` with
  ``δ^z_t = ∂L/∂z_t = σ_y'(z_t) ⊙ ∂L/∂y_t``; the last is the direct term ``∂L_t/∂h_t``.
  """
  dz = dy
  if output_activation is not None:
    out_act = get_activation(output_activation, argname="output_activation")
    z = hs @ w_hy.T + b_y[None, None]
    dz = dy * out_act.deriv(z, out_act.fn(z))
  n_feat, n_out = hs.shape[-1], dy.shape[-1]
  dz_rows = dz.reshape(-1, n_out)
  return dz_rows.T @ hs.reshape(-1, n_feat), jnp.sum(dz_rows, axis=0), dz @ w_hy


def _readout(w_hy, b_y, hs, output_activation):
  ys = hs @ w_hy.T + b_y[None, None]
  if output_activation is not None:
    ys = get_activation(output_activation, argname="output_activation").fn(ys)
  return ys


# ----------------------------------------------------------------------------- one layer


def layer_states(w_xh, w_hh, b_h, xs, h0, mask, act: Activation):
  """The forward recurrence, time-major: ``xs (T, B, I)``, ``h0 (B, H)``, ``mask (T, B)`` bool.

  Returns ``hs (T, B, H)``; a masked step copies ``h_{t-1}``.
  """
  u = xs @ w_xh.T + b_h[None, None]

  def body(h, inp):
    u_t, m_t = inp
    h_new = jnp.where(m_t[:, None], act.fn(h @ w_hh.T + u_t), h)
    return h_new, h_new

  _, hs = jax.lax.scan(body, h0, (u, mask))
  return hs


def layer_backward(w_xh, w_hh, b_h, xs, h0, hs, mask, g, act: Activation):
  """The O(T) reverse recursion for one layer running forward in time.

  Given the direct terms ``g_t = ∂L_t/∂h_t`` (rows, ``(T, B, H)``), with ``ρ_t`` the gradient
  reaching ``h_t`` from later steps (``ρ_T = 0``):

  .. math::

     δ_t = m_t\\, σ'(a_t) ⊙ (g_t + ρ_t), \\qquad
     ρ_{t-1} = δ_t W_{hh} + (1 - m_t)(g_t + ρ_t)

  which unmasked is ``δ_t = σ'(a_t) ⊙ (∂L/∂h_t + W_hhᵀ δ_{t+1})`` in column form
  (``δ_t = ∂L/∂a_t``). Then, as sums over all ``t`` and batch rows,

  .. math::

     \\frac{∂L}{∂W_{hh}} = \\sum_t δ_t^T h_{t-1},\\quad
     \\frac{∂L}{∂W_{xh}} = \\sum_t δ_t^T x_t,\\quad
     \\frac{∂L}{∂b_h} = \\sum_t δ_t,\\quad
     \\frac{∂L}{∂x_t} = δ_t W_{xh},\\quad \\frac{∂L}{∂h_0} = ρ_0.

  Returns ``(LayerParams(dW_xh, dW_hh, db_h), ∂L/∂h_0 (B, H), ∂L/∂xs (T, B, I))``.
  """
  h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
  if act.deriv_from_output is not None:
    dsig = act.deriv_from_output(hs)  # e.g. 1 - h² for tanh: only the states are needed
  else:
    dsig = act.deriv(h_prev @ w_hh.T + xs @ w_xh.T + b_h[None, None])

  def body(rho, inp):
    g_t, s_t, m_t = inp
    total = g_t + rho  # ∂L/∂h_t, everything that reaches h_t
    delta = jnp.where(m_t[:, None], s_t * total, 0)
    return delta @ w_hh + jnp.where(m_t[:, None], 0, total), delta

  dh0, deltas = jax.lax.scan(body, jnp.zeros_like(h0), (g, dsig, mask), reverse=True)
  n_hidden, n_in = w_xh.shape
  d_rows = deltas.reshape(-1, n_hidden)
  grads = LayerParams(
    d_rows.T @ xs.reshape(-1, n_in),
    d_rows.T @ h_prev.reshape(-1, n_hidden),
    jnp.sum(d_rows, axis=0),
  )
  return grads, dh0, deltas @ w_xh


def _flip(a):
  return jnp.flip(a, 0)


def _direction_states(layer: LayerParams, xs, h0, mask, act, reverse: bool):
  """``hs`` of one direction; a reverse direction runs on the time-flipped sequence."""
  if reverse:
    return _flip(layer_states(layer.w_xh, layer.w_hh, layer.b_h, _flip(xs), h0, _flip(mask), act))
  return layer_states(layer.w_xh, layer.w_hh, layer.b_h, xs, h0, mask, act)


def _direction_backward(layer: LayerParams, xs, h0, hs, mask, g, act, reverse: bool):
  """:func:`layer_backward` for either direction (a reverse one backwards on flipped time)."""
  if not reverse:
    return layer_backward(layer.w_xh, layer.w_hh, layer.b_h, xs, h0, hs, mask, g, act)
  grads, dh0, dxs = layer_backward(
    layer.w_xh, layer.w_hh, layer.b_h, _flip(xs), h0, _flip(hs), _flip(mask), _flip(g), act
  )
  return grads, dh0, _flip(dxs)


def _learnt_h0_grad(learnt, h0_given, dh0):
  """``∂L/∂params.h0``: the batch sum of ``∂L/∂h_0`` if it was used, zero if overridden."""
  if learnt is None:
    return None
  return jnp.zeros_like(learnt) if h0_given is not None else jnp.sum(dh0, axis=0)


def _caller_h0_grad(h0_arg, dh0):
  """``∂L/∂h0`` in the shape the caller gave ``h0``: an unbatched ``h0`` was broadcast."""
  if h0_arg is None:
    return None
  lead = jnp.ndim(h0_arg) - 1  # 0 for (H,) / (B, H) forms, 1 for the stack's (L·D, ...) forms
  return jnp.sum(dh0, axis=lead) if jnp.ndim(dh0) - jnp.ndim(h0_arg) == 1 else dh0


# ----------------------------------------------------------------------------- public API


def hand_loss_and_grads(
  params: RNNParams,
  xs: jax.Array,
  targets: jax.Array,
  *,
  loss: str = "squared_error",
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  h0: Optional[jax.Array] = None,
  reduction: str = "sum",
  time_major: bool = True,
  reverse: bool = False,
) -> HandGrads:
  """The loss of :func:`jrnn.forward` and all its gradients by the hand-written O(T) recursion.

  Forward: ``h_t = σ(W_hh h_{t-1} + W_xh x_t + b_h)``, ``y_t = σ_y(W_hy h_t + b_y)``,
  ``L = Σ_t L_t(y_t, ŷ_t)``. Backward, all by hand (see :func:`layer_backward` and
  :func:`loss_output_grad`): ``∂L/∂y_t`` from the loss, ``∂L/∂z_t = σ_y'(z_t) ⊙ ∂L/∂y_t``,
  ``∂L/∂W_hy = Σ_t ∂L/∂z_tᵀ h_t``, the direct term ``∂L_t/∂h_t = ∂L/∂z_t W_hy``, then the
  reverse recursion ``δ_t = σ'(a_t) ⊙ (∂L_t/∂h_t + W_hhᵀ δ_{t+1})`` and the weight gradients as
  sums over ``t`` of outer products. Jit-compatible (two ``lax.scan``).

  Args:
    params: :class:`RNNParams`; a learnt ``params.h0`` gets a gradient.
    xs: as :func:`jrnn.forward`: ``(T, I)``, ``(T, B, I)`` or ``(B, T, I)``.
    targets: squared error: ``xs.shape[:-1] + (O,)``; cross-entropy: integer labels
      ``xs.shape[:-1]``.
    loss: ``"squared_error"`` or ``"cross_entropy"``.
    activation, output_activation, mask, lengths, h0, time_major, reverse: as
      :func:`jrnn.forward`.
    reduction: ``"sum"``, ``"batch_mean"`` or ``"mean"`` (see :mod:`jrnn.losses`).

  Returns:
    :class:`HandGrads` ``(loss, grads, d_xs, d_h0)``: ``grads`` an :class:`RNNParams` of
    gradients (``h0`` ``None`` unless learnt), ``d_xs = ∂L/∂xs`` in the layout of ``xs``, and
    ``d_h0 = ∂L/∂h0`` in the shape of the ``h0`` argument (``None`` without one).
  """
  check_loss(loss, reduction)
  jax.eval_shape(
    functools.partial(
      forward,
      h0=h0,
      mask=mask,
      lengths=lengths,
      activation=activation,
      output_activation=output_activation,
      time_major=time_major,
    ),
    params,
    xs,
  )  # validates
  act = get_activation(activation)
  n_in, n_hidden, n_out = params.sizes
  dtype = jnp.result_type(params.w_hh)
  xs_shape = jnp.shape(xs)
  x, m, h0_in, layout = prepare(
    xs, mask, lengths, h0, n_in=n_in, n_hidden=n_hidden, dtype=dtype, time_major=time_major
  )
  tg = prepare_targets(targets, xs_shape, layout, n_out, loss, dtype)
  n_steps, n_batch = x.shape[:2]
  m = jnp.ones((n_steps, n_batch), bool) if m is None else m
  layer = params.layer
  h_init = h0_in if h0_in is not None else initial_state(params.layer, n_batch)

  hs = _direction_states(layer, x, h_init, m, act, reverse)
  ys = _readout(params.w_hy, params.b_y, hs, output_activation)
  value = loss_value(ys, tg, m, loss, reduction)

  dy = loss_output_grad(ys, tg, m, loss, reduction)
  dw_hy, db_y, g = readout_backward(params.w_hy, params.b_y, hs, dy, output_activation)
  lg, dh0, dxs = _direction_backward(layer, x, h_init, hs, m, g, act, reverse)
  grads = RNNParams(lg.w_xh, lg.w_hh, lg.b_h, dw_hy, db_y, _learnt_h0_grad(params.h0, h0, dh0))
  return HandGrads(value, grads, layout.restore(dxs), _caller_h0_grad(h0, dh0))


def hand_stacked_loss_and_grads(
  params: StackedParams,
  xs: jax.Array,
  targets: jax.Array,
  *,
  loss: str = "squared_error",
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  h0: Optional[jax.Array] = None,
  reduction: str = "sum",
  time_major: bool = True,
) -> HandGrads:
  """:func:`hand_loss_and_grads` for :func:`jrnn.stacked_forward`: stacked, bidirectional layers.

  Layer ``l`` reads ``X^{(l)}``, the states of layer ``l-1`` (``X^{(0)} = xs``); a bidirectional
  layer concatenates its directions, ``X^{(l+1)} = [H^{(l,→)}, H^{(l,←)}]``. Backwards, the
  gradient reaching ``X^{(l+1)}`` splits into the direct terms ``g`` of the two directions; each
  runs its own reverse recursion (the backward direction on flipped time, so it too goes
  against its own direction of computation), and the input gradients of both directions add:

  .. math::

     \\frac{∂L}{∂X^{(l)}_t} = δ^{(l,→)}_t W^{(l,→)}_{xh} + δ^{(l,←)}_t W^{(l,←)}_{xh}.

  Arguments as :func:`hand_loss_and_grads`; ``params`` must have a readout (``w_hy``), ``h0``
  is ``(L·D, H)`` or ``(L·D, B, H)`` as in :func:`jrnn.stacked_forward`.

  Returns:
    :class:`HandGrads` with ``grads`` a :class:`StackedParams`; ``d_h0`` in the shape of ``h0``.
  """
  check_loss(loss, reduction)
  if not isinstance(params, StackedParams) or params.w_hy is None:
    raise ValueError("params must be StackedParams with a readout (w_hy, b_y) to have a loss")
  jax.eval_shape(
    functools.partial(
      stacked_forward,
      h0=h0,
      mask=mask,
      lengths=lengths,
      activation=activation,
      output_activation=output_activation,
      time_major=time_major,
    ),
    params,
    xs,
  )  # validates
  act = get_activation(activation)
  n_hidden, n_dir = params.hidden_size, params.num_directions
  n_in = params.layers[0][0].w_xh.shape[1]
  dtype = jnp.result_type(params.layers[0][0].w_hh)
  xs_shape = jnp.shape(xs)
  x, m, h0_in, layout = prepare(
    xs,
    mask,
    lengths,
    h0,
    n_in=n_in,
    n_hidden=n_hidden,
    dtype=dtype,
    time_major=time_major,
    h0_lead=(params.num_layers * n_dir,),
  )
  tg = prepare_targets(targets, xs_shape, layout, params.w_hy.shape[0], loss, dtype)
  n_steps, n_batch = x.shape[:2]
  m = jnp.ones((n_steps, n_batch), bool) if m is None else m

  inputs, states, inits = [], [], []  # per layer: its input; per layer, per direction: hs, h0
  inp = x
  for l, layer in enumerate(params.layers):
    inputs.append(inp)
    outs, starts = [], []
    for j, p in enumerate(layer):
      start = initial_state(p, n_batch) if h0_in is None else h0_in[l * n_dir + j]
      outs.append(_direction_states(p, inp, start, m, act, reverse=j == 1))
      starts.append(start)
    states.append(outs)
    inits.append(starts)
    inp = jnp.concatenate(outs, axis=-1)
  ys = _readout(params.w_hy, params.b_y, inp, output_activation)
  value = loss_value(ys, tg, m, loss, reduction)

  dy = loss_output_grad(ys, tg, m, loss, reduction)
  dw_hy, db_y, g = readout_backward(params.w_hy, params.b_y, inp, dy, output_activation)
  layer_grads: list = [None] * params.num_layers  # filled top layer first
  dh0s: list = [None] * (params.num_layers * n_dir)
  for l in reversed(range(params.num_layers)):
    d_inp = 0
    grads_l = []
    for j, p in enumerate(params.layers[l]):
      g_j = g[..., j * n_hidden : (j + 1) * n_hidden]
      lg, dh0, dx = _direction_backward(
        p, inputs[l], inits[l][j], states[l][j], m, g_j, act, reverse=j == 1
      )
      d_inp = d_inp + dx
      dh0s[l * n_dir + j] = dh0
      grads_l.append(lg._replace(h0=_learnt_h0_grad(p.h0, h0, dh0)))
    layer_grads[l] = tuple(grads_l)
    g = d_inp
  grads = StackedParams(tuple(layer_grads), dw_hy, db_y)
  return HandGrads(value, grads, layout.restore(g), _caller_h0_grad(h0, jnp.stack(dh0s)))


def seed_formula_grads(
  params: RNNParams,
  xs: jax.Array,
  targets: jax.Array,
  *,
  loss: str = "squared_error",
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
  mask: Optional[jax.Array] = None,
  lengths: Optional[jax.Array] = None,
  reduction: str = "sum",
  time_major: bool = True,
) -> RNNParams:
  """The seed's gradient formula, summed literally: O(T²) Jacobian products, for teaching.

  .. math::

     \\frac{∂L}{∂W_{hh}} = \\sum_{t=1}^{T} \\sum_{k=1}^{t}
       \\frac{∂L_t}{∂h_t} \\frac{∂h_t}{∂h_k} \\frac{∂h_k}{∂W_{hh}},
     \\qquad \\frac{∂h_t}{∂h_k} = J_t J_{t-1} \\cdots J_{k+1},
     \\quad J_i = \\mathrm{diag}(σ'(a_i))\\, W_{hh}

  Here ``∂h_k/∂W_hh`` is the *immediate* derivative (``h_{k-1}`` held fixed): contracted with
  the row ``v = ∂L_t/∂h_t · ∂h_t/∂h_k`` it is the outer product ``(v ⊙ σ'(a_k))ᵀ h_{k-1}``.
  ``W_xh`` and ``b_h`` follow the same double sum with ``x_k`` and ``1`` in place of
  ``h_{k-1}``, and ``∂L/∂h_0 = Σ_t ∂L_t/∂h_t · ∂h_t/∂h_0``. The readout needs no sum over
  ``k``: ``∂L/∂W_hy = Σ_t ∂L_t/∂z_tᵀ h_t``. Every ``∂h_t/∂h_k`` is formed as an explicit
  ``H × H`` matrix per sequence, so the cost is ``O(T² H³)``: use it for small ``T`` and ``H``
  (the loops unroll when traced). :func:`hand_loss_and_grads` computes the same numbers in
  O(T) by sharing the products between ``t``'s.

  Args:
    params: :class:`RNNParams`.
    xs, targets, loss, activation, output_activation, mask, lengths, reduction, time_major:
      as :func:`hand_loss_and_grads`.

  Returns:
    :class:`RNNParams` of gradients; ``h0`` is ``∂L/∂params.h0`` when it is learnt, else None.
  """
  check_loss(loss, reduction)
  jax.eval_shape(
    functools.partial(
      forward,
      mask=mask,
      lengths=lengths,
      activation=activation,
      output_activation=output_activation,
      time_major=time_major,
    ),
    params,
    xs,
  )  # validates
  act = get_activation(activation)
  n_in, n_hidden, n_out = params.sizes
  dtype = jnp.result_type(params.w_hh)
  xs_shape = jnp.shape(xs)
  x, m, _, layout = prepare(
    xs, mask, lengths, None, n_in=n_in, n_hidden=n_hidden, dtype=dtype, time_major=time_major
  )
  tg = prepare_targets(targets, xs_shape, layout, n_out, loss, dtype)
  n_steps, n_batch = x.shape[:2]
  m = jnp.ones((n_steps, n_batch), bool) if m is None else m
  h_init = initial_state(params.layer, n_batch)

  hs = layer_states(params.w_xh, params.w_hh, params.b_h, x, h_init, m, act)
  h_prev = jnp.concatenate([h_init[None], hs[:-1]], axis=0)
  a = h_prev @ params.w_hh.T + x @ params.w_xh.T + params.b_h[None, None]
  dsig = act.deriv(a, hs)  # σ'(a_t)
  mf = m.astype(dtype)[..., None]  # (T, B, 1)
  ys = _readout(params.w_hy, params.b_y, hs, output_activation)
  dy = loss_output_grad(ys, tg, m, loss, reduction)
  dw_hy, db_y, dl_dh = readout_backward(params.w_hy, params.b_y, hs, dy, output_activation)

  # J_t per sequence, (T, B, H, H): diag(σ'(a_t)) W_hh, or I on a masked step.
  eye = jnp.eye(n_hidden, dtype=dtype)
  jac = (
    mf[..., None] * (dsig[..., :, None] * params.w_hh[None, None])
    + (1 - mf[..., None]) * eye[None, None]
  )

  dw_hh = jnp.zeros_like(params.w_hh)
  dw_xh = jnp.zeros_like(params.w_xh)
  db_h = jnp.zeros_like(params.b_h)
  dh0 = jnp.zeros((n_batch, n_hidden), dtype)
  for t in range(n_steps):
    prod = jnp.broadcast_to(eye, (n_batch, n_hidden, n_hidden))  # ∂h_t/∂h_t = I
    for k in range(t, -1, -1):
      v = jnp.einsum("bi,bij->bj", dl_dh[t], prod)  # ∂L_t/∂h_t · ∂h_t/∂h_k
      e = mf[k] * dsig[k] * v  # contracted with the immediate ∂h_k/∂a_k
      dw_hh = dw_hh + e.T @ h_prev[k]
      dw_xh = dw_xh + e.T @ x[k]
      db_h = db_h + jnp.sum(e, axis=0)
      prod = prod @ jac[k]  # ∂h_t/∂h_{k-1} = ∂h_t/∂h_k · J_k
    dh0 = dh0 + jnp.einsum("bi,bij->bj", dl_dh[t], prod)  # ∂L_t/∂h_t · ∂h_t/∂h_0
  return RNNParams(dw_xh, dw_hh, db_h, dw_hy, db_y, _learnt_h0_grad(params.h0, None, dh0))
