"""Exact real-time recurrent learning (RTRL; Williams & Zipser 1989).

RTRL carries the influence of every recurrent parameter on the state forward in time instead
of storing the history for a backward pass:

.. math::

   M_t = \\frac{∂h_t}{∂θ} = J_t M_{t-1} + \\left.\\frac{∂h_t}{∂θ}\\right|_{\\text{direct}},
   \\qquad J_t = \\frac{∂h_t}{∂h_{t-1}} = \\operatorname{diag}(σ'(a_t)) W_{hh},
   \\qquad \\frac{∂L_t}{∂θ} = \\frac{∂L_t}{∂h_t} M_t

with ``M_0 = 0`` for ``(W_xh, W_hh, b_h)`` and ``M_0 = I`` for a learnt ``h0``. The direct term
is ``diag(σ'(a_t))`` times the derivative of ``a_t`` with ``h_{t-1}`` held fixed:

.. math::

   \\frac{∂a_{t,i}}{∂W_{hh,jk}} = δ_{ij} h_{t-1,k}, \\qquad
   \\frac{∂a_{t,i}}{∂W_{xh,jk}} = δ_{ij} x_{t,k}, \\qquad
   \\frac{∂a_{t,i}}{∂b_{h,j}} = δ_{ij}

so a step is ``M_t = diag(σ'(a_t)) (W_hh M_{t-1} + ∂a_t/∂θ|_direct)``. Summed over a sequence,
``Σ_t (∂L_t/∂h_t) M_t`` is exactly BPTT's gradient of ``Σ_t L_t`` (the two are the forward-
and reverse-mode orders of the same chain rule), but it is available at every step.

Cost per step and stream, with ``P = H² + H·I + H`` recurrent parameters:

* memory ``O(H·P)``: the influence ``M`` holds ``H·P`` numbers (``H³`` for ``W_hh`` alone);
* time ``O(H²·P)``: the product ``W_hh M_{t-1}`` is ``H·H·P`` multiply-adds (``O(H⁴)``).

Against BPTT's ``O(H²)`` per step this is ``P`` times the work, so :func:`rtrl_init` refuses
influences above ``max_influence_bytes`` (64 MiB per stream by default: ``H`` of about 250 with
float32 and few inputs) with a ``ValueError``; raise the limit to go further.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn.activations import ActivationLike, get_activation
from jrnn.online import core
from jrnn.params import LayerParams, RNNParams

DEFAULT_MAX_INFLUENCE_BYTES = 64 * 2**20


class RTRLState(NamedTuple):
  """Exact RTRL's online state for one stream.

  ``influence`` is ``M_t = ∂h_t/∂θ`` laid out as the parameters with a leading axis for the
  unit of ``h_t``: ``influence.w_hh[i, j, k] = ∂h_{t,i}/∂W_hh[j, k]``.
  """

  h: jax.Array  # shape=(H,)
  influence: LayerParams  # w_xh (H, H, I), w_hh (H, H, H), b_h (H, H), h0 (H, H) or None


def rtrl_influence_bytes(params: RNNParams) -> int:
  """Bytes of exact RTRL's influence for one stream: ``H·P`` numbers of the params' dtype."""
  n_hidden = params.sizes[1]
  return n_hidden * core.num_recurrent_params(params) * jnp.dtype(params.w_hh.dtype).itemsize


def check_max_influence_bytes(max_influence_bytes) -> None:
  """Raises ``ValueError`` unless ``max_influence_bytes`` is a positive int or ``None``."""
  if max_influence_bytes is None:
    return
  if (
    isinstance(max_influence_bytes, bool)
    or not isinstance(max_influence_bytes, int)
    or (max_influence_bytes < 1)
  ):
    raise ValueError(
      f"max_influence_bytes must be a positive int or None, got {max_influence_bytes!r}"
    )


def check_influence_size(params: RNNParams, max_influence_bytes: Optional[int]) -> None:
  """Refuses exact RTRL when its influence is larger than ``max_influence_bytes``."""
  if max_influence_bytes is None:
    return
  check_max_influence_bytes(max_influence_bytes)
  nbytes = rtrl_influence_bytes(params)
  if nbytes > max_influence_bytes:
    n_in, n_hidden, _ = params.sizes
    n_par = core.num_recurrent_params(params)
    raise ValueError(
      f"exact RTRL at H={n_hidden}, I={n_in} ({n_par} recurrent parameters P) keeps an "
      f"influence of H·P = {n_hidden * n_par} numbers, {nbytes / 2**20:.1f} MiB per stream, "
      f"over max_influence_bytes={max_influence_bytes} ({max_influence_bytes / 2**20:.1f} "
      f"MiB); each step costs about H²·P = {n_hidden * n_hidden * n_par:.2e} multiply-adds. "
      f"Use snap1 or uoro, a smaller H, or pass max_influence_bytes={nbytes} (or None) to "
      f"allow it."
    )


def rtrl_init(
  params: RNNParams,
  h: Optional[jax.Array] = None,
  *,
  max_influence_bytes: Optional[int] = DEFAULT_MAX_INFLUENCE_BYTES,
) -> RTRLState:
  """The state at the start of a stream: ``h_0`` and ``M_0``.

  Args:
    params: :class:`jrnn.RNNParams`.
    h: ``h_0 (H,)``, treated as a constant (``M_0 = 0``); ``None`` starts from the learnt
      ``params.h0`` (``M_0 = I`` for it) or from zeros.
    max_influence_bytes: refuse (``ValueError``) when ``M`` would take more bytes than this;
      ``None`` never refuses.

  Returns:
    :class:`RTRLState`.
  """
  core.check_params(params, "rtrl_init")
  check_influence_size(params, max_influence_bytes)
  h_start = core.start_state(params, h)
  n_hidden = params.sizes[1]
  dtype = params.w_hh.dtype
  lead = lambda a: jnp.zeros((n_hidden,) + a.shape, dtype)
  h0_influence = None
  if params.h0 is not None:
    h0_influence = jnp.eye(n_hidden, dtype=dtype) if h is None else lead(params.h0)
  return RTRLState(
    h_start, LayerParams(lead(params.w_xh), lead(params.w_hh), lead(params.b_h), h0_influence)
  )


def rtrl_step(
  params: RNNParams,
  state: RTRLState,
  x: jax.Array,
  target,
  *,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  mask=None,
  loss_mask=None,
):
  """One step of exact RTRL: ``(h_{t-1}, M_{t-1}) -> (h_t, M_t)`` and ``∂L_t/∂θ``.

  Args:
    params: :class:`jrnn.RNNParams`.
    state: :class:`RTRLState` from :func:`rtrl_init` or the previous step.
    x: ``x_t (I,)``.
    target: ``ŷ_t``: ``(O,)`` for ``"squared_error"``, an integer ``()`` for
      ``"cross_entropy"``.
    loss: ``"squared_error"``, ``"cross_entropy"`` or a callable ``(y (O,), target) -> ()``.
    activation: ``σ``, a name or a callable.
    mask: ``()`` bool: ``False`` skips the step (state unchanged, no loss).
    loss_mask: ``()`` bool: ``False`` runs the step but does not score ``L_t``.

  Returns:
    ``(state, grads, L_t)``: the new :class:`RTRLState`; ``∂L_t/∂θ`` as
    :class:`jrnn.RNNParams` (the readout's included; zero when not scored); the loss ``()``.
    Time ``O(H²·P)``, memory ``O(H·P)`` (see the module docstring).
  """
  core.check_params(params, "rtrl_step")
  core.check_step_inputs(params, state.h, x, target, loss, "rtrl_step")
  valid, scored = core.check_step_masks(mask, loss_mask)
  x = core.inert_input(valid, x)
  act = get_activation(activation)
  fwd = core.cell_forward(params, state.h, x, act)
  m = state.influence
  idx = jnp.arange(params.sizes[1])

  def propagate(leaf):  # diag(σ') W_hh M_{t-1}, contracted over the unit axis of M
    return jnp.tensordot(params.w_hh, leaf, axes=1)

  new = LayerParams(
    propagate(m.w_xh).at[idx, idx].add(x),
    propagate(m.w_hh).at[idx, idx].add(state.h),
    propagate(m.b_h).at[idx, idx].add(1),
    None if m.h0 is None else propagate(m.h0),
  )
  new = jax.tree_util.tree_map(
    lambda leaf: fwd.dsig.reshape((-1,) + (1,) * (leaf.ndim - 1)) * leaf, new
  )
  value, g_h, g_why, g_by = core.output_grads(params, fwd.h, target, core.step_loss(loss), scored)
  recurrent = jax.tree_util.tree_map(lambda leaf: jnp.tensordot(g_h, leaf, axes=1), new)
  new_state = core.keep_where(valid, RTRLState(fwd.h, new), state)
  return new_state, core.full_grads(params, recurrent, g_why, g_by), value


def rtrl_sequence(
  params: RNNParams,
  xs: jax.Array,
  targets,
  *,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  mask: Optional[jax.Array] = None,
  loss_mask: Optional[jax.Array] = None,
  h: Optional[jax.Array] = None,
  max_influence_bytes: Optional[int] = DEFAULT_MAX_INFLUENCE_BYTES,
) -> core.OnlineResult:
  """Exact RTRL over a whole sequence: ``Σ_t ∂L_t/∂θ``, equal to BPTT's gradient of ``Σ_t L_t``.

  Args:
    params: :class:`jrnn.RNNParams`.
    xs: ``(T, I)``, one stream (``jax.vmap`` over streams).
    targets: ``(T, O)`` or integer ``(T,)``.
    loss, activation: as :func:`rtrl_step`.
    mask, loss_mask: ``(T,)`` booleans or ``None`` (see :func:`rtrl_step`).
    h, max_influence_bytes: as :func:`rtrl_init`.

  Returns:
    :class:`jrnn.online.OnlineResult` ``(loss, grads, state)``.
  """
  state = rtrl_init(params, h, max_influence_bytes=max_influence_bytes)

  def step_fn(p, st, x, tg, **kw):
    return rtrl_step(p, st, x, tg, loss=loss, activation=activation, **kw)

  return core.scan_sequence(step_fn, params, state, xs, targets, mask, loss_mask)
