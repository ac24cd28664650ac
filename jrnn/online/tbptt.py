"""Truncated BPTT as an online method: the baseline RTRL and its approximations are judged by.

At every step, ``∂L_t/∂θ`` is backpropagated through the last ``τ`` valid steps only, the state
``h_{t-τ}`` before them held constant (Williams & Peng's BPTT(1, τ)):

.. math::

   \\widetilde{\\frac{∂L_t}{∂θ}} = \\frac{∂}{∂θ} L_t\\bigl(θ;\\ \\bar h_{t-τ}, x_{t-τ+1}, …,
   x_t\\bigr), \\qquad \\bar h = \\mathrm{stop\\_gradient}(h)

The state keeps the last ``τ`` inputs and the state before them; each step replays those ``τ``
steps with the current parameters and differentiates ``L_t`` through them (``jax.grad`` of a
``lax.scan``). As long as the window still reaches back to the start of the stream, the replay
starts from the learnt ``h0`` itself, so with ``τ ≥ T`` the summed gradient is exactly BPTT's.
Masked steps do not enter the window. Per step and stream: memory ``O(τ (H + I))``, time
``O(τ (H² + H·I))``.

Updating the parameters every ``k`` steps with the sum of these gradients is BPTT(k, τ) over
a stream (with ``k ≤ τ`` each loss term is backpropagated ``τ`` steps).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike, get_activation
from jrnn.online import core
from jrnn.params import RNNParams


class TBPTTState(NamedTuple):
  """Truncated BPTT's online state for one stream: a window of the last ``τ`` inputs."""

  h: jax.Array  # shape=(H,): h_t
  h_start: jax.Array  # shape=(H,): the state before the oldest input of the window
  xs: jax.Array  # shape=(τ, I): the window, oldest first
  valid: jax.Array  # shape=(τ,) bool: which window slots hold a step (early in the stream)
  from_h0: jax.Array  # shape=() bool: h_start is still the stream's h_0 (no step dropped yet)


def check_truncation(truncation) -> None:
  """Raises ``ValueError`` unless ``truncation`` (``τ``) is a positive int."""
  if isinstance(truncation, bool) or not isinstance(truncation, int) or truncation < 1:
    raise ValueError(
      f"truncation must be a positive int (τ, the steps each gradient goes "
      f"back), got {truncation!r}"
    )


def tbptt_init(params: RNNParams, h: Optional[jax.Array] = None, *, truncation: int) -> TBPTTState:
  """The state at the start of a stream (``h`` as :func:`jrnn.online.rtrl_init`)."""
  core.check_params(params, "tbptt_init")
  check_truncation(truncation)
  h_start = core.start_state(params, h)
  n_in = params.sizes[0]
  return TBPTTState(
    h_start,
    h_start,
    jnp.zeros((truncation, n_in), params.w_hh.dtype),
    jnp.zeros((truncation,), bool),
    jnp.asarray(h is None and params.h0 is not None),
  )


def _replay(params, h_start, xs, valid, act):
  def body(h, inp):
    x, v = inp
    h_new = core.cell_forward(params, h, x, act).h
    return jnp.where(v, h_new, h), None

  return jax.lax.scan(body, h_start, (xs, valid))[0]


def tbptt_step(
  params: RNNParams,
  state: TBPTTState,
  x: jax.Array,
  target,
  *,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  mask=None,
  loss_mask=None,
):
  """One step of online truncated BPTT(1, τ), ``τ`` the window length of ``state``.

  Arguments and return value as :func:`jrnn.online.rtrl_step`. Time ``O(τ (H² + H·I))``.
  """
  core.check_params(params, "tbptt_step")
  core.check_step_inputs(params, state.h, x, target, loss, "tbptt_step")
  valid, scored = core.check_step_masks(mask, loss_mask)
  x = core.inert_input(valid, x)
  act = get_activation(activation)
  loss_fn = core.step_loss(loss)
  # The oldest input leaves the window: h_start moves past it (with the current parameters).
  dropped = state.valid[0]
  h_start = jnp.where(
    dropped, core.cell_forward(params, state.h_start, state.xs[0], act).h, state.h_start
  )
  from_h0 = state.from_h0 & ~dropped
  xs = jnp.concatenate([state.xs[1:], x[None]])
  slots = jnp.concatenate([state.valid[1:], jnp.ones((1,), bool)])

  def loss_t(p):
    start = jax.lax.stop_gradient(h_start)
    if p.h0 is not None:
      start = jnp.where(from_h0, p.h0, start)
    h = _replay(p, start, xs, slots, act)
    y = p.w_hy @ h + p.b_y
    return loss_fn(y, target), h

  (value, h_t), grads = jax.value_and_grad(loss_t, has_aux=True)(params)
  zero = jnp.zeros((), value.dtype)
  value = jnp.where(scored, value, zero)
  grads = jax.tree_util.tree_map(lambda g: jnp.where(scored, g, zero), grads)
  new_state = core.keep_where(valid, TBPTTState(h_t, h_start, xs, slots, from_h0), state)
  return new_state, grads, value


def tbptt_sequence(
  params: RNNParams,
  xs: jax.Array,
  targets,
  *,
  truncation: int,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  mask: Optional[jax.Array] = None,
  loss_mask: Optional[jax.Array] = None,
  h: Optional[jax.Array] = None,
) -> core.OnlineResult:
  """Online truncated BPTT(1, τ) over a whole sequence (as :func:`jrnn.online.rtrl_sequence`)."""
  state = tbptt_init(params, h, truncation=truncation)

  def step_fn(p, st, x, tg, **kw):
    return tbptt_step(p, st, x, tg, loss=loss, activation=activation, **kw)

  return core.scan_sequence(step_fn, params, state, xs, targets, mask, loss_mask)
