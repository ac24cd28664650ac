"""UORO: unbiased online recurrent optimisation (Tallec & Ollivier 2018).

UORO keeps a rank-one estimate ``\\tilde h_t \\tilde θ_tᵀ`` of RTRL's influence
``M_t = ∂h_t/∂θ`` (:mod:`jrnn.online.rtrl`) whose expectation is exact. With a fresh vector
``ν ∈ {-1, +1}^H`` of random signs every step (``E[ν νᵀ] = I``, drawn from an explicit PRNG key)
and the direct term ``D_t = ∂h_t/∂θ|_direct``:

.. math::

   \\tilde h_t = ρ_0 J_t \\tilde h_{t-1} + ρ_1 ν, \\qquad
   \\tilde θ_t = \\tilde θ_{t-1} / ρ_0 + νᵀ D_t / ρ_1, \\qquad
   \\widehat{∂L_t/∂θ} = \\bigl((∂L_t/∂h_t) \\tilde h_t\\bigr)\\, \\tilde θ_t

.. math::

   ρ_0 = \\sqrt{\\frac{‖\\tilde θ_{t-1}‖}{‖J_t \\tilde h_{t-1}‖ + ε}} + ε, \\qquad
   ρ_1 = \\sqrt{\\frac{‖νᵀ D_t‖}{‖ν‖ + ε}} + ε

Unbiased: ``\\tilde h_t \\tilde θ_tᵀ = J_t \\tilde h_{t-1} \\tilde θ_{t-1}ᵀ + ν νᵀ D_t`` plus
two cross terms odd in ``ν`` (``ρ_1`` is even in ``ν``), so
``E[\\tilde h_t \\tilde θ_tᵀ | past] = J_t E[\\tilde h_{t-1} \\tilde θ_{t-1}ᵀ] + D_t`` and by
induction ``E[\\tilde h_t \\tilde θ_tᵀ] = M_t``. The factors ``ρ_0, ρ_1`` balance the two
norms to keep the variance down (they cancel in the product). Both products are cheap:
``J_t \\tilde h = σ'(a_t) ⊙ (W_hh \\tilde h)`` and, with ``s = ν ⊙ σ'(a_t)``,
``νᵀ D_t = (s h_{t-1}ᵀ, s x_tᵀ, s)`` for ``(W_hh, W_xh, b_h)``.

A learnt ``h0`` has ``M_0 = I``: UORO starts from ``\\tilde h_0 = ν_0``, ``\\tilde θ_0 = ν_0``
on ``h0`` (zero elsewhere), again unbiased. Per step and stream: memory ``O(H + P)``, time
``O(H² + H·I)`` (the cost of the forward step).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.activations import ActivationLike, get_activation
from jrnn.online import core
from jrnn.params import LayerParams, RNNParams

DEFAULT_EPS = 1e-7


class UOROState(NamedTuple):
  """UORO's online state for one stream: the influence estimate is ``outer(h_tilde, θ̃)``."""

  h: jax.Array  # shape=(H,)
  h_tilde: jax.Array  # shape=(H,)
  theta_tilde: LayerParams  # shaped as the recurrent params: w_xh (H, I), w_hh (H, H), b_h (H,)


def check_key(key, api: str, name: str = "key") -> None:
  """Raises ``TypeError`` unless ``key`` is one typed PRNG key (``jax.random.key(seed)``).

  Raw ``uint32`` keys (``jax.random.PRNGKey``) are refused rather than guessed at: a ``(2,)``
  array of any other origin would pass as one. ``jax.random.wrap_key_data`` converts them.
  """
  if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise TypeError(
        f"{name} of {api} must be one PRNG key, shape (), got a key array of "
        f"shape {key.shape}; vmap over keys, or pass one of them"
      )
    return
  got = (
    f"{jnp.result_type(key)} array of shape {jnp.shape(key)}"
    if hasattr(key, "dtype") and hasattr(key, "shape")
    else f"{type(key).__name__} {key!r}"
  )
  raise TypeError(
    f"{name} of {api} must be a typed PRNG key from jax.random.key(seed), got "
    f"{got}; raw uint32 keys (jax.random.PRNGKey) are not accepted: wrap one "
    "with jax.random.wrap_key_data"
  )


def check_eps(eps, api: str) -> None:
  """Raises unless ``eps`` is a finite positive real number (``ε`` of ``ρ_0, ρ_1``)."""
  if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
    raise TypeError(
      f"eps of {api} must be a finite positive float (UORO's ε), got {type(eps).__name__} {eps!r}"
    )
  # typeshed's numbers.Real declares no comparison with int; every Real compares at runtime.
  if not (math.isfinite(eps) and eps > 0):  # type: ignore[operator]
    raise ValueError(
      f"eps of {api} must be a finite positive float (UORO's ε, default "
      f"{DEFAULT_EPS:g}), got {eps!r}"
    )


def _signs(key, n: int, dtype) -> jax.Array:
  return jax.random.rademacher(key, (n,), dtype=dtype)


def uoro_init(
  params: RNNParams, h: Optional[jax.Array] = None, *, key: Optional[jax.Array] = None
) -> UOROState:
  """The state at the start of a stream (``h`` as :func:`jrnn.online.rtrl_init`).

  ``key`` draws ``ν_0`` for a learnt ``h0`` (needed only then: ``M_0 = I`` is estimated by
  ``ν_0 ν_0ᵀ``); otherwise the estimate starts at zero.
  """
  core.check_params(params, "uoro_init")
  h_start = core.start_state(params, h)
  zeros = jnp.zeros_like
  theta = LayerParams(
    zeros(params.w_xh),
    zeros(params.w_hh),
    zeros(params.b_h),
    None if params.h0 is None else zeros(params.h0),
  )
  h_tilde = jnp.zeros_like(params.b_h)
  if key is not None:
    check_key(key, "uoro_init")
  if params.h0 is not None and h is None:
    if key is None:
      raise ValueError(
        "uoro_init needs key= when params.h0 is learnt (the estimate of "
        "∂h_0/∂h0 = I starts from random signs); pass key=jax.random.key(…)"
      )
    nu = _signs(key, params.sizes[1], params.w_hh.dtype)
    h_tilde, theta = nu, theta._replace(h0=nu)
  return UOROState(h_start, h_tilde, theta)


def _norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(tree)))


def uoro_step(
  params: RNNParams,
  state: UOROState,
  x: jax.Array,
  target,
  *,
  key: jax.Array,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  mask=None,
  loss_mask=None,
  eps: float = DEFAULT_EPS,
):
  """One step of UORO: the new rank-one estimate and an unbiased estimate of ``∂L_t/∂θ``.

  Args:
    key: the PRNG key of this step's signs ``ν`` (use a fresh one each step, e.g.
      ``jax.random.fold_in(key, t)``); the estimate is unbiased over it.
    eps: ``ε`` in ``ρ_0, ρ_1`` (guards the division when an estimate is zero).
    params, state, x, target, loss, activation, mask, loss_mask: as
      :func:`jrnn.online.rtrl_step`.

  Returns:
    ``(state, grads, L_t)`` as :func:`jrnn.online.rtrl_step`; the recurrent gradient is the
    unbiased estimate, the readout's exact. Time ``O(H² + H·I)``, memory ``O(H + P)``.
  """
  core.check_params(params, "uoro_step")
  check_key(key, "uoro_step")
  check_eps(eps, "uoro_step")
  core.check_step_inputs(params, state.h, x, target, loss, "uoro_step")
  valid, scored = core.check_step_masks(mask, loss_mask)
  x = core.inert_input(valid, x)
  act = get_activation(activation)
  fwd = core.cell_forward(params, state.h, x, act)
  nu = _signs(key, params.sizes[1], params.w_hh.dtype)
  s = nu * fwd.dsig
  nu_d = LayerParams(
    jnp.outer(s, x),
    jnp.outer(s, state.h),
    s,
    None if state.theta_tilde.h0 is None else jnp.zeros_like(s),
  )
  j_h = fwd.dsig * (params.w_hh @ state.h_tilde)
  rho0 = jnp.sqrt(_norm(state.theta_tilde) / (_norm(j_h) + eps)) + eps
  rho1 = jnp.sqrt(_norm(nu_d) / (_norm(nu) + eps)) + eps
  h_tilde = rho0 * j_h + rho1 * nu
  theta = jax.tree_util.tree_map(lambda a, b: a / rho0 + b / rho1, state.theta_tilde, nu_d)
  value, g_h, g_why, g_by = core.output_grads(params, fwd.h, target, core.step_loss(loss), scored)
  coef = g_h @ h_tilde
  recurrent = jax.tree_util.tree_map(lambda a: coef * a, theta)
  new_state = core.keep_where(valid, UOROState(fwd.h, h_tilde, theta), state)
  return new_state, core.full_grads(params, recurrent, g_why, g_by), value


def uoro_sequence(
  params: RNNParams,
  xs: jax.Array,
  targets,
  *,
  key: jax.Array,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  mask: Optional[jax.Array] = None,
  loss_mask: Optional[jax.Array] = None,
  h: Optional[jax.Array] = None,
  eps: float = DEFAULT_EPS,
) -> core.OnlineResult:
  """UORO over a whole sequence: ``Σ_t`` of its per-step estimates (as
  :func:`jrnn.online.rtrl_sequence`).

  Step ``t`` (0-based) draws its signs from ``fold_in(key, t + 1)``; ``ν_0`` of a learnt ``h0``
  from ``fold_in(key, 0)``. The result is an unbiased estimate of BPTT's gradient over ``key``.
  """
  check_key(key, "uoro_sequence")
  check_eps(eps, "uoro_sequence")
  state = uoro_init(params, h, key=jax.random.fold_in(key, 0))
  n_steps = jnp.shape(xs)[0]
  keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(1, n_steps + 1))

  def step_fn(p, st, x, tg, **kw):
    return uoro_step(p, st, x, tg, loss=loss, activation=activation, eps=eps, **kw)

  return core.scan_sequence(step_fn, params, state, xs, targets, mask, loss_mask, keys)
