"""Shared test fixtures-as-functions (imported by test modules; pytest puts tests/ on sys.path)."""
import jax
import jax.numpy as jnp

import jrnn


def random_params(key, n_in=2, n_hidden=3, n_out=2, learn_h0=True):
  """float64 :class:`jrnn.RNNParams` with non-zero ``b_h`` and ``h0``, so every gradient is exercised."""
  p = jrnn.init_params(key, n_in, n_hidden, n_out, scheme="glorot", dtype=jnp.float64,
                       learn_h0=learn_h0)
  k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
  p = p._replace(b_h=0.3 * jax.random.normal(k1, p.b_h.shape, jnp.float64))
  if learn_h0:
    p = p._replace(h0=0.5 * jax.random.normal(k2, p.h0.shape, jnp.float64))
  return p
