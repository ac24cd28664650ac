"""Each named activation's closed-form derivative and ``gamma`` against ``jax.grad``."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(jrnn.ACTIVATIONS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_derivative_from_output_matches_autodiff(name, dtype):
  act = jrnn.get_activation(name)
  assert act.name == name
  # Stay clear of a = 0, where ReLU-like derivatives jump.
  a = jnp.concatenate([jnp.linspace(-6, -0.01, 25), jnp.linspace(0.01, 6, 25)]).astype(dtype)
  h = act.fn(a)
  assert h.dtype == dtype
  want = jax.vmap(jax.grad(act.fn))(a)
  tol = 1e-6 if dtype == jnp.float32 else 1e-12
  np.testing.assert_allclose(act.deriv(a, h), want, rtol=tol, atol=tol)
  np.testing.assert_allclose(act.deriv(a), want, rtol=tol, atol=tol)
  assert act.deriv(a, h).dtype == dtype
  # gamma bounds |σ'| (and is attained or approached, so the bound is tight).
  np.testing.assert_array_less(np.abs(want), act.gamma + tol)
  assert float(jnp.max(jnp.abs(want))) > 0.95 * act.gamma


def test_user_callable_derivative_comes_from_autodiff():
  act = jrnn.get_activation(jnp.arctan)
  assert act.deriv_from_output is None and act.gamma is None
  a = jnp.linspace(-3, 3, 7)
  np.testing.assert_allclose(act.deriv(a, act.fn(a)), 1 / (1 + a ** 2), rtol=1e-12)
