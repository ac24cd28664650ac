"""What every online gradient method shares: one step of the cell, the loss of one step, masks.

Notation (column vectors, as :mod:`jrnn.params`): at step ``t``

.. math::

   a_t = W_{hh} h_{t-1} + W_{xh} x_t + b_h, \\qquad h_t = σ(a_t), \\qquad
   y_t = W_{hy} h_t + b_y, \\qquad L_t = \\ell(y_t, \\hat y_t)

``θ = (W_xh, W_hh, b_h[, h0])`` are the recurrent parameters, ``P = H·I + H² + H (+ H)`` of
them. The readout ``(W_hy, b_y)`` touches only ``y_t``, so its gradient is immediate:
``∂L_t/∂W_hy = g^y_t h_tᵀ``, ``∂L_t/∂b_y = g^y_t`` with ``g^y_t = ∂ℓ/∂y_t``. The online methods
differ only in how they carry the influence ``M_t = ∂h_t/∂θ`` (``H × P``) from which
``∂L_t/∂θ = (∂L_t/∂h_t) M_t`` with ``∂L_t/∂h_t = W_hyᵀ g^y_t``.

Every method works on one stream, unbatched: ``h (H,)``, ``x (I,)``, a target ``(O,)`` (squared
error) or ``()`` (an integer label for cross-entropy). Batch streams with ``jax.vmap``
(:func:`jrnn.online.init_streams` and :func:`jrnn.online.make_online_train_step` do).

Masks, per step: ``mask`` (``False``: the step does not happen; ``h`` and the influence stay as
they were and ``L_t`` is not counted, as ``jrnn.forward``'s ``mask``) and ``loss_mask``
(``False``: the step happens but ``L_t`` is not scored, as ``jrnn.training.Batch.mask``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import validation
from jrnn.activations import Activation
from jrnn.losses import softmax_cross_entropy, squared_error
from jrnn.params import LayerParams, RNNParams

LOSSES = ("squared_error", "cross_entropy")

LossLike = Union[str, Callable[[jax.Array, jax.Array], jax.Array]]


class OnlineResult(NamedTuple):
  """What a whole-sequence form returns."""

  loss: jax.Array  # shape=(): Σ_t L_t over the scored steps
  grads: RNNParams  # Σ_t ∂L_t/∂θ as the method gives it; h0 None unless learnt
  state: object  # the method's state after the last step (to carry on a stream)


class StepForward(NamedTuple):
  """One step of the cell and what the influence recursions need from it."""

  h: jax.Array  # shape=(H,): h_t
  dsig: jax.Array  # shape=(H,): σ'(a_t)


def check_params(params, api: str) -> None:
  """Checks ``params`` is a consistent :class:`jrnn.RNNParams` (a stack is not supported)."""
  if not isinstance(params, RNNParams):
    raise TypeError(
      f"{api} takes jrnn.RNNParams (one layer with a readout), got "
      f"{type(params).__name__}; stacked layers are not supported online yet"
    )
  validation.check_params_consistent(params.w_xh, params.w_hh, params.b_h, params.h0)
  n_hidden = np.shape(params.w_hh)[0]
  validation.check_shape("params.w_hy", params.w_hy, (None, n_hidden), "(O, H)")
  validation.check_shape("params.b_y", params.b_y, (np.shape(params.w_hy)[0],), "(O,)")
  dtype = jnp.result_type(params.w_hh)
  validation.check_float("params.w_hy", params.w_hy, dtype)
  validation.check_float("params.b_y", params.b_y, dtype)


def num_recurrent_params(params: RNNParams) -> int:
  """``P``: the number of recurrent parameters ``H·I + H² + H`` (``+ H`` with a learnt ``h0``)."""
  n_in, n_hidden, _ = params.sizes
  return (
    n_hidden * n_in + n_hidden * n_hidden + n_hidden + (n_hidden if params.h0 is not None else 0)
  )


def tree_bytes(tree) -> int:
  """Bytes held by the arrays of a pytree (shapes and dtypes only; works on tracers)."""
  return int(
    sum(
      np.prod(np.shape(a)) * jnp.dtype(jnp.result_type(a)).itemsize
      for a in jax.tree_util.tree_leaves(tree)
    )
  )


def start_state(params: RNNParams, h: Optional[jax.Array]) -> jax.Array:
  """The state a stream starts from: ``h`` if given, else the learnt ``h0``, else zeros."""
  if h is None:
    return params.h0 if params.h0 is not None else jnp.zeros_like(params.b_h)
  validation.check_float("h", h, jnp.result_type(params.w_hh))
  validation.check_shape("h", h, (params.sizes[1],), "(H,)")
  return jnp.asarray(h)


def step_loss(loss: LossLike) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``ℓ(y_t, ŷ_t)`` of one step as a scalar function of ``y (O,)``.

  ``"squared_error"``: ``Σ_o (y_o - ŷ_o)²`` (no ½, as :func:`jrnn.squared_error`);
  ``"cross_entropy"``: ``logsumexp(y) - y_c`` with an integer label ``c``. A callable
  ``loss(y, target) -> ()`` is used as given (it may apply an output activation itself).
  """
  if callable(loss):
    return loss
  if loss == "squared_error":
    return lambda y, t: squared_error(y[None], t[None], reduction="sum")
  if loss == "cross_entropy":
    return lambda y, t: softmax_cross_entropy(y[None], t[None], reduction="sum")
  raise ValueError(
    f"loss must be one of {LOSSES} or a callable (y, target) -> scalar, got {loss!r}"
  )


def check_step_inputs(params: RNNParams, h, x, target, loss: LossLike, api: str) -> None:
  """Trace-time checks of one step's ``h (H,)``, ``x (I,)`` and target."""
  n_in, n_hidden, n_out = params.sizes
  dtype = jnp.result_type(params.w_hh)
  validation.check_float("x", x, dtype)
  validation.check_shape("x", x, (n_in,), f"(I,) for {api}, one stream; vmap over streams")
  validation.check_shape("state.h", h, (n_hidden,), "(H,)")
  if loss == "squared_error":
    validation.check_float("target", target, dtype)
    validation.check_shape("target", target, (n_out,), "(O,)")
  elif loss == "cross_entropy":
    if not jnp.issubdtype(jnp.result_type(target), jnp.integer):
      raise TypeError(
        f"target must be an integer label for cross_entropy, got {jnp.result_type(target)}"
      )
    validation.check_shape("target", target, (), "() (one label)")


def check_step_masks(mask, loss_mask) -> Tuple[jax.Array, jax.Array]:
  """``(valid, scored)`` booleans of one step from ``mask`` and ``loss_mask`` (``None``: True)."""
  out = []
  for name, m in (("mask", mask), ("loss_mask", loss_mask)):
    if m is None:
      out.append(jnp.asarray(True))
      continue
    validation.check_shape(name, m, (), "() for one step")
    validation.check_mask_dtype(m)
    out.append(jnp.asarray(m).astype(bool))
  valid, scored = out
  return valid, valid & scored


def inert_input(valid, x: jax.Array) -> jax.Array:
  """``x`` at a valid step, zeros at a masked one: a masked step's input (NaN or Inf included)
  then touches neither ``L_t`` nor any gradient (``0 · NaN`` would be NaN in the influence)."""
  return jnp.where(valid, x, jnp.zeros((), jnp.result_type(x)))


def cell_forward(params, h_prev: jax.Array, x: jax.Array, act: Activation) -> StepForward:
  """``h_t = σ(W_hh h_{t-1} + W_xh x_t + b_h)`` and ``σ'(a_t)`` for one stream."""
  a = params.w_hh @ h_prev + params.w_xh @ x + params.b_h
  h = act.fn(a)
  return StepForward(h, act.deriv(a, h))


def output_grads(params: RNNParams, h: jax.Array, target, loss_fn, scored):
  """``(L_t, ∂L_t/∂h_t (H,), ∂L_t/∂W_hy (O, H), ∂L_t/∂b_y (O,))``, all zero unless ``scored``.

  ``g^y = ∂ℓ/∂y_t`` is taken by ``jax.grad`` of the one-step loss (``2(y - ŷ)`` for squared
  error, ``softmax(y) - onehot(c)`` for cross-entropy); everything else is by hand.
  """
  y = params.w_hy @ h + params.b_y
  value, g_y = jax.value_and_grad(loss_fn)(y, target)
  zero = jnp.zeros((), value.dtype)
  value = jnp.where(scored, value, zero)
  g_y = jnp.where(scored, g_y, zero)
  return value, params.w_hy.T @ g_y, jnp.outer(g_y, h), g_y


def full_grads(params: RNNParams, recurrent: LayerParams, w_hy, b_y) -> RNNParams:
  """An :class:`RNNParams`-shaped gradient from the recurrent part and the readout's."""
  return RNNParams(
    recurrent.w_xh,
    recurrent.w_hh,
    recurrent.b_h,
    w_hy,
    b_y,
    recurrent.h0 if params.h0 is not None else None,
  )


def keep_where(valid, new, old):
  """``new`` where the step is valid, else ``old``: a masked step changes nothing."""
  return jax.tree_util.tree_map(lambda n, o: jnp.where(valid, n, o), new, old)


def zeros_grads(params: RNNParams) -> RNNParams:
  """A zero gradient shaped like ``params``."""
  return jax.tree_util.tree_map(jnp.zeros_like, params)


def scan_sequence(step_fn, params: RNNParams, state, xs, targets, mask, loss_mask, keys=None):
  """Runs ``step_fn(params, state, x, target, mask=, loss_mask=[, key=])`` over a sequence.

  ``xs (T, I)``, ``targets (T, …)``, ``mask``/``loss_mask`` ``(T,)`` or ``None``, ``keys (T,)``
  or ``None``. Returns :class:`OnlineResult` with the summed loss and gradient.
  """
  if np.ndim(xs) != 2:
    raise ValueError(
      f"xs must have shape (T, I) (one stream; vmap over streams), got {np.shape(xs)}"
    )
  n_steps = np.shape(xs)[0]
  validation.check_shape("targets", targets, (n_steps,) + tuple(np.shape(targets)[1:]), "(T, ...)")
  for name, m in (("mask", mask), ("loss_mask", loss_mask)):
    if m is not None:
      validation.check_shape(name, m, (n_steps,), "(T,)")
      validation.check_mask_dtype(m)

  def body(carry, inp):
    st, total, grads = carry
    x, tg, m, lm, k = inp
    extra = {} if k is None else {"key": k}
    st, g, value = step_fn(params, st, x, tg, mask=m, loss_mask=lm, **extra)
    grads = jax.tree_util.tree_map(jnp.add, grads, g)
    return (st, total + value, grads), None

  zero = jnp.zeros((), jnp.result_type(params.w_hh))
  (state, total, grads), _ = jax.lax.scan(
    body, (state, zero, zeros_grads(params)), (xs, targets, mask, loss_mask, keys)
  )
  return OnlineResult(total, grads, state)
