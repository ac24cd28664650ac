"""Gradient clipping against exploding gradients: plain functions on pytrees and optax transforms.

* Global-norm clipping, Algorithm 1 of Pascanu, Mikolov & Bengio (2013): with
  ``‖g‖ = sqrt(Σ_leaves Σ g²)`` over the whole gradient pytree,

  .. math::

     g ← \\frac{θ}{\\|g\\|}\\, g \\quad \\text{if } \\|g\\| ≥ θ,
     \\qquad g \\text{ unchanged otherwise.}

  The direction is kept; only the step length is capped. (At ``‖g‖ = θ`` both branches agree,
  so this equals ``optax.clip_by_global_norm``.)

* Elementwise clipping, as the classic NumPy char-RNN does
  (``np.clip(dparam, -5, 5, out=dparam)`` for every parameter): ``g ← min(max(g, -c), c)``.
  It caps every coordinate separately, so it can turn the gradient's direction.

The optax transforms are stateless apart from a record of the norm, for logging; chain them
before the optimiser: ``optax.chain(jrnn.training.global_norm_clipping(1.0), optax.adam(1e-3))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax


def _check_positive(name: str, value) -> None:
  if isinstance(value, jax.core.Tracer):
    return
  if not float(value) > 0:
    raise ValueError(f"{name} must be positive, got {value!r}")


def global_norm(tree: Any) -> jax.Array:
  """``sqrt(Σ_leaves Σ g²)`` over every leaf of a pytree of arrays."""
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    return jnp.zeros(())
  return jnp.sqrt(sum(jnp.sum(jnp.square(jnp.abs(g))) for g in leaves))


def clip_tree_by_global_norm(tree: Any, threshold: float) -> Tuple[Any, jax.Array]:
  """Pascanu et al.'s rescaling ``g ← θ g / ‖g‖`` when ``‖g‖ ≥ θ``.

  Args:
    tree: a gradient pytree.
    threshold: ``θ > 0``.

  Returns:
    ``(clipped tree, ‖g‖ before clipping)``.
  """
  _check_positive("threshold", threshold)
  norm = global_norm(tree)
  clip = norm >= threshold
  # the safe denominator keeps a zero gradient (never clipped) free of 0/0
  factor = jnp.where(clip, threshold / jnp.where(clip, norm, 1), 1)
  return jax.tree_util.tree_map(lambda g: (g * factor).astype(g.dtype), tree), norm


def clip_elementwise(tree: Any, limit: float = 5.0) -> Any:
  """``np.clip(g, -limit, limit)`` on every leaf (the NumPy char-RNN uses ``limit = 5``)."""
  _check_positive("limit", limit)
  return jax.tree_util.tree_map(lambda g: jnp.clip(g, -limit, limit), tree)


class ClippingState(NamedTuple):
  """What the clipping transforms remember, for logging only."""

  norm: jax.Array  # shape=(): global norm of the last incoming update, before clipping
  clipped: jax.Array  # shape=(), int32: how many updates have been clipped so far


def _init(params) -> ClippingState:
  del params
  return ClippingState(jnp.zeros(()), jnp.zeros((), jnp.int32))


def global_norm_clipping(threshold: float) -> optax.GradientTransformation:
  """`clip_tree_by_global_norm` as an optax transform (``ClippingState`` counts clipped steps)."""
  _check_positive("threshold", threshold)

  def update(updates, state, params=None):
    del params
    clipped, norm = clip_tree_by_global_norm(updates, threshold)
    hit = (norm >= threshold).astype(jnp.int32)
    return clipped, ClippingState(norm.astype(state.norm.dtype), state.clipped + hit)

  return optax.GradientTransformation(_init, update)


def elementwise_clipping(limit: float = 5.0) -> optax.GradientTransformation:
  """:func:`clip_elementwise` as an optax transform (``ClippingState`` counts updates with any
  coordinate beyond ``limit``)."""
  _check_positive("limit", limit)

  def update(updates, state, params=None):
    del params
    norm = global_norm(updates)
    over = jax.tree_util.tree_leaves(
      jax.tree_util.tree_map(lambda g: jnp.any(jnp.abs(g) > limit), updates)
    )
    hit = jnp.any(jnp.stack(over)).astype(jnp.int32) if over else jnp.zeros((), jnp.int32)
    return clip_elementwise(updates, limit), ClippingState(
      norm.astype(state.norm.dtype), state.clipped + hit
    )

  return optax.GradientTransformation(_init, update)
