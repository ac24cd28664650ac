"""Named activations for the recurrence and the readout.

Each activation carries what the hand-derived BPTT and the gradient diagnostics need:

* ``fn``: the elementwise map ``σ``;
* ``deriv_from_output``: ``σ'(a)`` written in terms of the output ``h = σ(a)`` where that is
  possible (``1 - h²`` for tanh, ``h (1 - h)`` for sigmoid, ``[h > 0]`` for ReLU), so the
  backward pass needs only the stored hidden states; ``None`` when it is not possible, in which
  case ``σ'`` is taken from the pre-activation by autodiff;
* ``gamma``: ``sup |σ'|``, the constant of Pascanu, Mikolov & Bengio (2013).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp


class Activation(NamedTuple):
  """An elementwise activation and the facts BPTT needs about it."""

  name: str
  fn: Callable[[jax.Array], jax.Array]
  deriv_from_output: Optional[Callable[[jax.Array], jax.Array]]
  gamma: Optional[float]  # sup |σ'|; None if unknown (user callables)

  def deriv(self, a: jax.Array, h: Optional[jax.Array] = None) -> jax.Array:
    """``σ'(a)``; uses ``h = σ(a)`` when a closed form in ``h`` exists."""
    if self.deriv_from_output is not None and h is not None:
      return self.deriv_from_output(h)
    return jax.vmap(jax.grad(self.fn))(a.reshape(-1)).reshape(a.shape)


def _relu_deriv(h):
  return (h > 0).astype(h.dtype)


def _leaky_relu(a):
  return jnp.where(a >= 0, a, 0.01 * a)


ACTIVATIONS = {
  "tanh": Activation("tanh", jnp.tanh, lambda h: 1 - h * h, 1.0),
  "relu": Activation("relu", jax.nn.relu, _relu_deriv, 1.0),
  "sigmoid": Activation("sigmoid", jax.nn.sigmoid, lambda h: h * (1 - h), 0.25),
  "identity": Activation("identity", lambda a: a, jnp.ones_like, 1.0),
  "leaky_relu": Activation(
    "leaky_relu", _leaky_relu, lambda h: jnp.where(h >= 0, 1.0, 0.01).astype(h.dtype), 1.0
  ),
  "softplus": Activation("softplus", jax.nn.softplus, lambda h: -jnp.expm1(-h), 1.0),
}

ActivationLike = Union[str, Callable[[jax.Array], jax.Array], Activation]


def get_activation(act: ActivationLike, *, argname: str = "activation") -> Activation:
  """Resolves a name, a callable or an :class:`Activation` to an :class:`Activation`.

  A user callable must be elementwise and differentiable; its derivative is taken by
  ``jax.grad`` from the pre-activation, and its ``gamma`` is unknown (``None``).
  """
  if isinstance(act, Activation):
    return act
  if isinstance(act, str):
    try:
      return ACTIVATIONS[act]
    except KeyError:
      raise ValueError(
        f"{argname} must be one of {sorted(ACTIVATIONS)} or a callable, got {act!r}"
      ) from None
  if callable(act):
    return Activation(getattr(act, "__name__", "custom"), act, None, None)
  raise TypeError(f"{argname} must be a name or a callable, got {type(act).__name__}")
