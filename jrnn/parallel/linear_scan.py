"""Linear recurrences solved in ``O(log T)`` depth by ``jax.lax.associative_scan``.

Every parallel solver of :mod:`jrnn.parallel` reduces its work to linear recurrences

.. math::

   x_t = A_t x_{t-1} + b_t \\quad (t = 1..T,\\ x_0 = 0), \\qquad
   x_t = A_t x_{t+1} + b_t \\quad (t = T..1,\\ x_{T+1} = 0,\\ \\text{reverse})

An initial state ``x_0 ≠ 0`` is folded into the first element by the caller
(``b_1 ← b_1 + A_1 x_0``). The pairs ``(A_t, b_t)`` compose as affine maps: applying
``(A_e, b_e)`` first and ``(A_l, b_l)`` after gives

.. math::

   (A_l, b_l) ∘ (A_e, b_e) = (A_l A_e,\\ A_l b_e + b_l)

which is associative, so the prefix compositions (whose ``b`` parts are the ``x_t``) come out of
one associative scan: about ``2T`` combines in ``2 log₂ T`` dependent rounds. In reverse the
scan processes ``t = T`` first; the combine is the same.

Two forms of ``A_t`` (column convention: ``A_t`` maps a column vector ``x_{t-1}``):

* full, ``A (T, ..., H, H)``: each combine is a batched ``H × H`` matrix product
  (``O(H³)``); exact Newton (DEER) and the exact parallel adjoint use it;
* diagonal, ``A (T, ..., H)`` holding ``diag(A_t)``: each combine is elementwise (``O(H)``);
  quasi-DEER uses it.

``b`` is ``(T, ..., H)`` in both; ``...`` is any batch shape (jrnn's ``B``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _combine_full(early, late):
  a_e, b_e = early
  a_l, b_l = late
  return a_l @ a_e, jnp.einsum("...ij,...j->...i", a_l, b_e) + b_l


def _combine_diagonal(early, late):
  a_e, b_e = early
  a_l, b_l = late
  return a_l * a_e, a_l * b_e + b_l


def solve_full(a: jax.Array, b: jax.Array, *, reverse: bool = False) -> jax.Array:
  """``x (T, ..., H)`` of ``x_t = A_t x_{t∓1} + b_t`` with full ``A (T, ..., H, H)``.

  Args:
    a: ``(T, ..., H, H)``; ``a[t]`` maps column vectors (``x_t = a[t] @ x_{t-1} + b[t]``).
      ``a[0]`` (``a[T-1]`` in reverse) multiplies the zero initial state, so its value is
      irrelevant.
    b: ``(T, ..., H)``.
    reverse: solve ``x_t = A_t x_{t+1} + b_t`` from ``t = T`` down instead.

  Returns:
    ``x (T, ..., H)``.
  """
  if a.shape != b.shape + b.shape[-1:]:
    raise ValueError(f"a must have shape b.shape + (H,) = {b.shape + b.shape[-1:]}, got {a.shape}")
  return jax.lax.associative_scan(_combine_full, (a, b), reverse=reverse, axis=0)[1]


def solve_diagonal(a: jax.Array, b: jax.Array, *, reverse: bool = False) -> jax.Array:
  """``x (T, ..., H)`` of ``x_t = a_t ⊙ x_{t∓1} + b_t`` with diagonal ``a (T, ..., H)``.

  As :func:`solve_full` with ``A_t = diag(a_t)``.
  """
  if a.shape != b.shape:
    raise ValueError(f"a must have the shape of b, {b.shape}, got {a.shape}")
  return jax.lax.associative_scan(_combine_diagonal, (a, b), reverse=reverse, axis=0)[1]


def solve_sequential(a: jax.Array, b: jax.Array, *, reverse: bool = False) -> jax.Array:
  """The same recurrence as :func:`solve_full` (or :func:`solve_diagonal` when
  ``a.shape == b.shape``) by a plain ``lax.scan``: the reference the tests hold the scans to."""
  diagonal = a.shape == b.shape

  def body(x, inp):
    a_t, b_t = inp
    x = a_t * x + b_t if diagonal else jnp.einsum("...ij,...j->...i", a_t, x) + b_t
    return x, x

  return jax.lax.scan(body, jnp.zeros_like(b[0]), (a, b), reverse=reverse)[1]
