"""SnAp-1: the influence kept only where one step reaches (Menick et al. 2021).

Exact RTRL (:mod:`jrnn.online.rtrl`) propagates a dense ``H × P`` influence. After one step,
a parameter of unit ``i``'s row (``W_hh[i, :]``, ``W_xh[i, :]``, ``b_h[i]``) has touched only
``h_{t,i}``: the direct term ``∂h_t/∂θ|_direct`` is zero off that pattern. SnAp-1 keeps the
influence on exactly that pattern and drops the rest after every step:

.. math::

   \\tilde M_t = \\bigl(J_t \\tilde M_{t-1} + ∂h_t/∂θ|_{\\text{direct}}\\bigr) ⊙ S, \\qquad
   S_{i,(j,k)} = δ_{ij}

With ``\\tilde M_{t-1}`` on the pattern, the diagonal of ``W_hh \\tilde M_{t-1}`` needs only
``diag(W_hh)``, so per unit ``i`` and input ``k`` (``m^{hh}_{ik} ≈ ∂h_{t,i}/∂W_{hh,ik}``):

.. math::

   m^{hh}_{t,ik} = σ'(a_{t,i}) (W_{hh,ii}\\, m^{hh}_{t-1,ik} + h_{t-1,k}), \\quad
   m^{xh}_{t,ik} = σ'(a_{t,i}) (W_{hh,ii}\\, m^{xh}_{t-1,ik} + x_{t,k}), \\quad
   m^{b}_{t,i} = σ'(a_{t,i}) (W_{hh,ii}\\, m^{b}_{t-1,i} + 1)

and ``∂L_t/∂W_{hh,ik} ≈ (∂L_t/∂h_{t,i}) m^{hh}_{t,ik}`` (likewise the others). A learnt ``h0``
keeps the diagonal of its influence (``M_0 = I``): ``m^{0}_{t,i} = σ'(a_{t,i}) W_{hh,ii}
m^{0}_{t-1,i}``.

It is exact where ``J_t`` is diagonal (a diagonal ``W_hh``: no unit reads another) and for the
first step from a zero influence; otherwise it drops the paths through other units, a biased
but cheap approximation. Per step and stream: memory ``O(P)`` (the influence has the
parameters' shapes), time ``O(P)`` beside the forward step's ``O(H² + H·I)``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike, get_activation
from jrnn.online import core
from jrnn.params import LayerParams, RNNParams


class SnApState(NamedTuple):
  """SnAp-1's online state for one stream.

  ``influence`` holds only unit ``i``'s own row: ``influence.w_hh[i, k] ≈ ∂h_{t,i}/∂W_hh[i, k]``
  (RTRL's ``M[i, i, k]``), likewise ``w_xh``; ``b_h[i] ≈ ∂h_{t,i}/∂b_h[i]``,
  ``h0[i] ≈ ∂h_{t,i}/∂h0[i]``.
  """

  h: jax.Array  # shape=(H,)
  influence: LayerParams  # w_xh (H, I), w_hh (H, H), b_h (H,), h0 (H,) or None


def snap1_init(params: RNNParams, h: Optional[jax.Array] = None) -> SnApState:
  """The state at the start of a stream (``h`` as :func:`jrnn.online.rtrl_init`)."""
  core.check_params(params, "snap1_init")
  h_start = core.start_state(params, h)
  h0_influence = None
  if params.h0 is not None:
    h0_influence = (jnp.ones_like if h is None else jnp.zeros_like)(params.h0)
  zeros = jnp.zeros_like
  return SnApState(
    h_start, LayerParams(zeros(params.w_xh), zeros(params.w_hh), zeros(params.b_h), h0_influence)
  )


def snap1_step(
  params: RNNParams,
  state: SnApState,
  x: jax.Array,
  target,
  *,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  mask=None,
  loss_mask=None,
):
  """One step of SnAp-1: ``(h_{t-1}, \\tilde M_{t-1}) -> (h_t, \\tilde M_t)`` and ``∂L_t/∂θ``.

  Arguments and return value as :func:`jrnn.online.rtrl_step`; the gradient of the recurrent
  parameters is SnAp-1's approximation (exact for the readout). Time and memory ``O(P)``.
  """
  core.check_params(params, "snap1_step")
  core.check_step_inputs(params, state.h, x, target, loss, "snap1_step")
  valid, scored = core.check_step_masks(mask, loss_mask)
  x = core.inert_input(valid, x)
  act = get_activation(activation)
  fwd = core.cell_forward(params, state.h, x, act)
  d, s, m = jnp.diagonal(params.w_hh), fwd.dsig, state.influence
  new = LayerParams(
    s[:, None] * (d[:, None] * m.w_xh + x[None, :]),
    s[:, None] * (d[:, None] * m.w_hh + state.h[None, :]),
    s * (d * m.b_h + 1),
    None if m.h0 is None else s * d * m.h0,
  )
  value, g_h, g_why, g_by = core.output_grads(params, fwd.h, target, core.step_loss(loss), scored)
  recurrent = LayerParams(
    g_h[:, None] * new.w_xh,
    g_h[:, None] * new.w_hh,
    g_h * new.b_h,
    None if new.h0 is None else g_h * new.h0,
  )
  new_state = core.keep_where(valid, SnApState(fwd.h, new), state)
  return new_state, core.full_grads(params, recurrent, g_why, g_by), value


def snap1_sequence(
  params: RNNParams,
  xs: jax.Array,
  targets,
  *,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  mask: Optional[jax.Array] = None,
  loss_mask: Optional[jax.Array] = None,
  h: Optional[jax.Array] = None,
) -> core.OnlineResult:
  """SnAp-1 over a whole sequence: ``Σ_t`` of its per-step gradients (as
  :func:`jrnn.online.rtrl_sequence`)."""
  state = snap1_init(params, h)

  def step_fn(p, st, x, tg, **kw):
    return snap1_step(p, st, x, tg, loss=loss, activation=activation, **kw)

  return core.scan_sequence(step_fn, params, state, xs, targets, mask, loss_mask)


def snap1_to_dense(influence: LayerParams) -> LayerParams:
  """SnAp-1's influence in exact RTRL's dense layout (zeros off the pattern), for comparison."""
  n_hidden = influence.b_h.shape[0]
  eye = jnp.eye(n_hidden, dtype=influence.b_h.dtype)
  return LayerParams(
    eye[:, :, None] * influence.w_xh[:, None, :],
    eye[:, :, None] * influence.w_hh[:, None, :],
    eye * influence.b_h[:, None],
    None if influence.h0 is None else eye * influence.h0[:, None],
  )


def dense_to_snap1(influence: LayerParams) -> LayerParams:
  """The SnAp-1 pattern of a dense RTRL influence: unit ``i``'s own row, ``M[i, i, …]``."""
  idx = jnp.arange(influence.b_h.shape[0])
  return LayerParams(
    influence.w_xh[idx, idx],
    influence.w_hh[idx, idx],
    influence.b_h[idx, idx],
    None if influence.h0 is None else influence.h0[idx, idx],
  )
