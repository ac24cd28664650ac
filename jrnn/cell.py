"""The Elman cell: one time step, with ``lax.scan``'s signature ``(carry, x) -> (carry, y)``.

.. math::

   h_t = σ(W_{hh} h_{t-1} + W_{xh} x_t + b_h), \\qquad y_t = σ_y(W_{hy} h_t + b_y)

``σ_y`` is the optional output activation: the seed's formula applies one, its NumPy code does
not (``output_activation=None``, the default).
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp

from jrnn import validation
from jrnn.activations import ActivationLike, get_activation
from jrnn.params import LayerParams, RNNParams


def add_bias(z: jax.Array, b: jax.Array) -> jax.Array:
  """``z + b`` for ``z (..., N)``, ``b (N,)``.

  The bias is reshaped to ``z``'s rank first, so the sum stays valid when a user (or our tests)
  sets ``jax_numpy_rank_promotion="raise"``.
  """
  return z + jnp.reshape(b, (1,) * (jnp.ndim(z) - 1) + jnp.shape(b))


def readout(
  w_hy: jax.Array, b_y: jax.Array, hs: jax.Array, output_activation: Optional[ActivationLike] = None
) -> jax.Array:
  """``y = σ_y(h W_hyᵀ + b_y)`` for ``hs (..., H)``; returns ``(..., O)``."""
  ys = add_bias(hs @ w_hy.T, b_y)
  if output_activation is not None:
    ys = get_activation(output_activation, argname="output_activation").fn(ys)
  return ys


def step(
  params: Union[RNNParams, LayerParams],
  h: jax.Array,
  x: jax.Array,
  *,
  activation: ActivationLike = "tanh",
  output_activation: Optional[ActivationLike] = None,
) -> Tuple[jax.Array, jax.Array]:
  """One step ``(h_{t-1}, x_t) -> (h_t, y_t)``, unbatched or with a leading batch axis.

  Args:
    params: :class:`RNNParams` (then ``y_t`` is the readout) or :class:`LayerParams` (then
      ``y_t = h_t``).
    h: ``h_{t-1}``, shape ``(H,)`` or ``(B, H)`` (``(H,)`` with a batched ``x`` is shared by
      every sequence).
    x: ``x_t``, shape ``(I,)`` or ``(B, I)``.
    activation: ``σ``, a name in :data:`jrnn.ACTIVATIONS` or a callable.
    output_activation: ``σ_y`` or ``None``.

  Returns:
    ``(h_t, y_t)`` with shapes ``(…, H)`` and ``(…, O)``.

  Raises:
    TypeError, ValueError: at trace time, as :func:`jrnn.forward` does: ``params`` of another
      type or with inconsistent shapes or dtypes, ``h``/``x`` of the wrong size, rank or dtype,
      batch sizes of ``h`` and ``x`` that differ, an unknown activation.

  ``jax.lax.scan(functools.partial(jrnn.step, params), h0, xs)`` unrolls it over ``xs (T, …)``.
  """
  if not isinstance(params, (RNNParams, LayerParams)):
    raise TypeError(
      f"params must be RNNParams or LayerParams, got {type(params).__name__}; "
      "step one layer of StackedParams with params.layers[l][d]"
    )
  validation.check_params_consistent(params.w_xh, params.w_hh, params.b_h, params.h0)
  n_hidden, n_in = jnp.shape(params.w_xh)
  dtype = jnp.result_type(params.w_hh)
  if isinstance(params, RNNParams):
    validation.check_shape("params.w_hy", params.w_hy, (None, n_hidden), f"(O, H={n_hidden})")
    n_out = jnp.shape(params.w_hy)[0]
    validation.check_shape("params.b_y", params.b_y, (n_out,), f"(O={n_out},)")
    validation.check_float("params.w_hy", params.w_hy, dtype)
    validation.check_float("params.b_y", params.b_y, dtype)
  h, x = validation.from_nested(h), validation.from_nested(x)
  for name, a, n, axis in (("h", h, n_hidden, "H"), ("x", x, n_in, "I")):
    validation.check_float(name, a, dtype)
    if jnp.ndim(a) not in (1, 2) or jnp.shape(a)[-1] != n:
      raise ValueError(
        f"{name} must have shape (..., {axis}={n}) with at most one batch axis, got {jnp.shape(a)}"
      )
  if jnp.ndim(h) == 1 and jnp.ndim(x) == 2:  # one state shared by the batch, as forward's h0
    h = jnp.broadcast_to(h, (jnp.shape(x)[0], n_hidden))
  if jnp.shape(h)[:-1] != jnp.shape(x)[:-1]:
    raise ValueError(
      f"h and x must share their batch axis: (B, H) and (B, I), or (H,) with "
      f"(I,) or (B, I); got {jnp.shape(h)} and {jnp.shape(x)}"
    )
  act = get_activation(activation)
  if output_activation is not None:
    get_activation(output_activation, argname="output_activation")
  h = act.fn(add_bias(h @ params.w_hh.T + x @ params.w_xh.T, params.b_h))
  if isinstance(params, RNNParams):
    return h, readout(params.w_hy, params.b_y, h, output_activation)
  return h, h
