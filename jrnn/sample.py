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

import jax
import jax.numpy as jnp

from jrnn.cell import step
from jrnn.params import RNNParams
from jrnn.unroll import forward


@functools.partial(jax.jit, static_argnames=("length", "temperature", "activation"))
def sample_tokens(params: RNNParams, key: jax.Array, prime: jax.Array, length: int, *,
           temperature: float = 1.0, activation: str = "tanh") -> jax.Array:
  """Draws ``length`` tokens following ``prime``.

  Args:
    params: an :class:`RNNParams` whose inputs and outputs are the same ``V`` tokens
      (``I = O = V``).
    key: PRNG key.
    prime: int tokens ``(n,)``, ``n >= 1``, fed first.
    length: how many tokens to draw.
    temperature: ``τ > 0``.
    activation: the hidden activation the model was trained with.

  Returns:
    ``(length,)`` int32 tokens.
  """
  n_in, _, n_out = params.sizes
  if n_in != n_out:
    raise ValueError(f"sampling needs params with I == O (tokens in and out), got I={n_in}, "
                     f"O={n_out}")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if jnp.ndim(prime) != 1 or jnp.shape(prime)[0] < 1:
    raise ValueError(f"prime must have shape (n,) with n >= 1, got {jnp.shape(prime)}")
  dtype = params.w_hh.dtype
  out = forward(params, jax.nn.one_hot(prime, n_in, dtype=dtype), activation=activation)

  def draw(carry, k):
    h, logits = carry
    c = jax.random.categorical(k, logits / temperature).astype(jnp.int32)
    h, y = step(params, h, jax.nn.one_hot(c, n_in, dtype=dtype), activation=activation)
    return (h, y), c

  _, tokens = jax.lax.scan(draw, (out.h_last, out.ys[-1]), jax.random.split(key, length))
  return tokens
