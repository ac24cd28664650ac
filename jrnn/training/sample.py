"""Sampling text (any token sequence) from a trained one-hot-input RNN.

After a prime ``c_1 … c_n`` has set the state, each step draws

.. math::

   c_{t+1} \\sim \\mathrm{softmax}(y_t / τ), \\qquad h_{t+1} = σ(W_{hh} h_t + W_{xh}
   \\mathrm{onehot}(c_{t+1}) + b_h), \\quad y_{t+1} = W_{hy} h_{t+1} + b_y

with temperature ``τ > 0``: ``τ = 1`` samples the model's distribution, ``τ → 0`` approaches
greedy decoding, ``τ > 1`` flattens it.
"""

from __future__ import annotations

import functools
import numbers
from typing import Union

import jax
import jax.numpy as jnp

from jrnn.init import check_key
from jrnn.params import RNNParams, StackedParams
from jrnn.unroll import forward, stacked_forward
from jrnn.validation import from_nested


def sample_tokens(
  params: Union[RNNParams, StackedParams],
  key: jax.Array,
  prime: jax.Array,
  length: int,
  *,
  temperature: float = 1.0,
  activation: str = "tanh",
) -> jax.Array:
  """Draws ``length`` tokens following ``prime``.

  Args:
    params: :class:`RNNParams`, or :class:`StackedParams` with a readout, whose inputs and
      outputs are the same ``V`` tokens (``I = O = V``), every value finite.
    key: one PRNG key (``jax.random.key``).
    prime: int tokens ``(n,)``, ``n >= 1``, each in ``[0, V)``, fed first.
    length: how many tokens to draw, an int ``>= 0``.
    temperature: ``τ > 0``.
    activation: the hidden activation the model was trained with.

  Returns:
    ``(length,)`` int32 tokens.

  Raises:
    TypeError, ValueError: naming the argument: a key that is not one PRNG key, a negative or
      non-int ``length``, ``temperature <= 0``, a ``prime`` that is not a non-empty vector of
      integers or holds a token outside ``[0, V)``, params whose inputs and outputs differ or
      that hold NaN or inf.

  The token range and finiteness checks read concrete values (one small reduction on the
  device, then the sampling program, compiled once per shape). Called inside ``jit``, where
  ``prime`` and ``params`` are traced, they cannot run: an out-of-range prime token is then
  one-hot encoded as a zero vector and NaN params give arbitrary tokens, so check them before.
  """
  if isinstance(params, StackedParams):
    if params.w_hy is None:
      raise ValueError("sampling needs StackedParams with a readout (w_hy, b_y)")
    n_in, n_out = params.layers[0][0].w_xh.shape[1], params.w_hy.shape[0]
  elif isinstance(params, RNNParams):
    n_in, _, n_out = params.sizes
  else:
    raise TypeError(f"params must be RNNParams or StackedParams, got {type(params).__name__}")
  if n_in != n_out:
    raise ValueError(
      f"sampling needs params with I == O (tokens in and out), got I={n_in}, O={n_out}"
    )
  check_key("key", key)
  if isinstance(length, bool) or not isinstance(length, int) or length < 0:
    raise ValueError(f"length must be an int >= 0, got {length!r}")
  if (
    isinstance(temperature, bool)
    or not isinstance(temperature, numbers.Real)
    or not (0 < temperature < float("inf"))
  ):
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
  prime = from_nested(prime)
  if jnp.ndim(prime) != 1 or jnp.shape(prime)[0] < 1:
    raise ValueError(f"prime must have shape (n,) with n >= 1, got {jnp.shape(prime)}")
  if not jnp.issubdtype(jnp.result_type(prime), jnp.integer):
    raise TypeError(f"prime must hold integer tokens, got dtype {jnp.result_type(prime)}")
  if not isinstance(prime, jax.core.Tracer):
    low, high = int(jnp.min(prime)), int(jnp.max(prime))
    if low < 0 or high >= n_in:
      raise ValueError(
        f"prime must hold tokens in [0, V={n_in}) (the vocabulary the params "
        f"read), got tokens from {low} to {high}"
      )
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  if not any(isinstance(leaf, jax.core.Tracer) for _, leaf in leaves):
    finite = jax.device_get([jnp.all(jnp.isfinite(leaf)) for _, leaf in leaves])
    bad = [
      jax.tree_util.keystr(path) for (path, _), ok in zip(leaves, finite, strict=True) if not ok
    ]
    if bad:
      raise ValueError(
        f"params must be finite to sample from, but params{bad[0]} holds NaN or "
        f"inf ({len(bad)} array(s): {', '.join(bad)})"
      )
  return _sample(params, key, prime, length, temperature=temperature, activation=activation)


@functools.partial(jax.jit, static_argnames=("length", "temperature", "activation"))
def _sample(params, key, prime, length, *, temperature, activation):
  """The draw itself, compiled once per shape and static choice (arguments checked above)."""
  run = stacked_forward if isinstance(params, StackedParams) else forward
  n_in = (params.layers[0][0] if isinstance(params, StackedParams) else params).w_xh.shape[1]
  dtype = jax.tree_util.tree_leaves(params)[0].dtype
  # Batched layout (B = 1) throughout, so one code path serves both kinds of params.
  out = run(params, jax.nn.one_hot(prime, n_in, dtype=dtype)[:, None], activation=activation)

  def draw(carry, k):
    h, logits = carry
    c = jax.random.categorical(k, logits / temperature).astype(jnp.int32)
    step = run(
      params, jax.nn.one_hot(c, n_in, dtype=dtype)[None, None], h0=h, activation=activation
    )
    return (step.h_last, step.ys[0, 0]), c  # type: ignore[index]  # readout checked above

  ys = out.ys
  assert ys is not None  # sample_tokens refused params without a readout
  _, tokens = jax.lax.scan(draw, (out.h_last, ys[-1, 0]), jax.random.split(key, length))
  return tokens
