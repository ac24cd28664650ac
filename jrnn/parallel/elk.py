"""ELK and quasi-ELK: DEER's steps damped by Levenberg–Marquardt, solved as a Kalman smoother.

Where undamped Newton overshoots (unstable or chaotic stretches of a trajectory), ELK
(Gonzalez et al., NeurIPS 2024, "Towards scalable and stable parallelization of nonlinear
RNNs") replaces each Newton step by a trust-region step: with ``J_t``, ``c_t`` the
linearisation of :mod:`jrnn.parallel.newton` about ``h⁽ⁱ⁾`` (``c_1`` holding ``h_0``), the next
iterate minimises

.. math::

   \\sum_t \\tfrac12 \\|h_t − J_t h_{t-1} − c_t\\|^2 + \\tfrac{λ}{2} \\sum_t \\|h_t − h_t^{(i)}\\|^2

(``λ`` is :attr:`Solver.damping`; ``λ → 0`` is DEER). That objective is the negative log
posterior of a linear-Gaussian state-space model: dynamics ``h_t = J_t h_{t-1} + c_t + w_t``,
``w_t ~ N(0, I)``, observations ``y_t = h⁽ⁱ⁾_t = h_t + v_t``, ``v_t ~ N(0, I/λ)``, ``h_0``
known. Its minimiser is the Kalman smoother's mean, which Särkkä & García-Fernández (2021, "Temporal
parallelization of Bayesian smoothers") compute with two associative scans.

**Filter.** With ``κ = λ/(1+λ)`` (the Kalman gain: ``S = I + I/λ`` for every step) each step is
the element ``(A, b, C, η, J)`` of the conditional ``p(h_t | h_{t-1}, y_t) = N(A h_{t-1} + b, C)``
and the information-form likelihood ``p(y_t | h_{t-1}) ∝ N_I(η, J)``:

.. math::

   A_t = (1−κ) J_t,\\quad b_t = (1−κ) c_t + κ y_t,\\quad C_t = (1−κ) I,\\quad
   η_t = κ J_t^T (y_t − c_t),\\quad \\mathcal{J}_t = κ J_t^T J_t

(``A_1 = η_1 = \\mathcal{J}_1 = 0``: ``h_0`` is known), combined (``i`` earlier, ``j`` later) by

.. math::

   X = I + C_i \\mathcal{J}_j,\\ Z = X^{-1} A_i:\\quad
   A = A_j Z,\\ b = A_j X^{-1}(b_i + C_i η_j) + b_j,\\ C = A_j X^{-1} C_i A_j^T + C_j,\\
   η = Z^T(η_j − \\mathcal{J}_j b_i) + η_i,\\ \\mathcal{J} = Z^T \\mathcal{J}_j A_i + \\mathcal{J}_i

(``(I + \\mathcal{J}_j C_i)^{-1} = X^{-T}`` as ``C`` and ``\\mathcal{J}`` are symmetric). The
prefix ``b``, ``C`` are the filtered means ``m_t`` and covariances ``P_t``.

**Smoother.** The smoothed means obey the reverse linear recurrence

.. math::

   x_t = E_t x_{t+1} + (m_t − E_t (J_{t+1} m_t + c_{t+1})),\\qquad
   E_t = P_t J_{t+1}^T (J_{t+1} P_t J_{t+1}^T + I)^{-1}, \\quad x_T = m_T

solved by :mod:`jrnn.parallel.linear_scan` in reverse. Quasi-ELK uses the diagonal of ``J_t``:
then every matrix above is diagonal and the whole step is elementwise (``O(T·B·H)``).
A masked step keeps ``J_t = I``, ``c_t = 0`` and is not damped: it is exactly linear, so it
enters as a hard copy ``h_t = h_{t-1}`` (the identity element of the combine, ``E_{t-1} = I`` in
the smoother), and a padded sequence converges as its valid prefix does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn.parallel import linear_scan
from jrnn.parallel.newton import Linearisation, diagonal_jacobians, full_jacobians, offsets


def _mv(m, v):
  return jnp.einsum("...ij,...j->...i", m, v)


def _t(m):
  return jnp.swapaxes(m, -1, -2)


def _eye_like(m):
  """The identity broadcast to the shape of the stack of matrices ``m``."""
  return jnp.broadcast_to(jnp.eye(m.shape[-1], dtype=m.dtype), m.shape)


def _combine_full(early, late):
  a_i, b_i, c_i, eta_i, j_i = early
  a_j, b_j, c_j, eta_j, j_j = late
  n = a_i.shape[-1]
  x = _eye_like(c_i) + c_i @ j_j
  rhs = jnp.concatenate([a_i, c_i, (b_i + _mv(c_i, eta_j))[..., None]], axis=-1)
  sol = jnp.linalg.solve(x, rhs)
  z, xc, xb = sol[..., :n], sol[..., n : 2 * n], sol[..., 2 * n]
  c = a_j @ xc @ _t(a_j) + c_j
  return (
    a_j @ z,
    _mv(a_j, xb) + b_j,
    0.5 * (c + _t(c)),
    _mv(_t(z), eta_j - _mv(j_j, b_i)) + eta_i,
    _t(z) @ j_j @ a_i + j_i,
  )


def _combine_diagonal(early, late):
  a_i, b_i, c_i, eta_i, j_i = early
  a_j, b_j, c_j, eta_j, j_j = late
  x = 1 + c_i * j_j
  z = a_i / x
  return (
    a_j * z,
    a_j * (b_i + c_i * eta_j) / x + b_j,
    a_j * a_j * c_i / x + c_j,
    z * (eta_j - j_j * b_i) + eta_i,
    z * j_j * a_i + j_i,
  )


def _zero_first(x):
  return x.at[0].set(0)


def _step_weights(damping: float, mask, dtype):
  """``κ_t`` per step, ``(T, B, 1)`` (or a scalar without a mask): ``λ/(1+λ)`` at a valid
  step, ``0`` at a masked one, and whether each step is valid (``None``: all).

  A masked step ``h_t = h_{t-1}`` is exactly linear, so its Newton step needs no trust region:
  it enters the smoother as a hard copy (no observation, no process noise: ``A = I``,
  ``b = 0``, ``C = 0``, ``η = 0``, ``\\mathcal{J} = 0``, the identity element of the combine)
  rather than as a damped soft constraint. Damped, a run of ``L`` masked steps acts as a
  diffusion that needs ``O(λ L²)`` iterations to carry the state across it (quasi-ELK with
  lengths did not converge in 3,000 iterations at ``T = 100``).
  """
  kappa = damping / (1 + damping)
  if mask is None:
    return kappa, None
  valid = mask[..., None]
  return jnp.where(valid, jnp.asarray(kappa, dtype), jnp.zeros((), dtype)), valid


def elk_step_full(w_hh, mask, hs, lin: Linearisation, damping: float) -> jax.Array:
  """One ELK iteration with full Jacobians: the next iterate ``(T, B, H)``."""
  jac = full_jacobians(w_hh, lin.gain, mask)
  c = offsets(jac, lin)
  kappa, valid = _step_weights(damping, mask, hs.dtype)
  kap = kappa if valid is None else kappa[..., None]  # (T, B, 1, 1) against (T, B, H, H)
  a = _zero_first((1 - kap) * jac)
  b = (1 - kappa) * c + kappa * hs
  cov = (1 - kap) * _eye_like(jac)
  if valid is not None:
    cov = jnp.where(valid[..., None], cov, 0)
  eta = _zero_first(kappa * _mv(_t(jac), hs - c))
  info = _zero_first(kap * _t(jac) @ jac)
  _, means, covs, _, _ = jax.lax.associative_scan(_combine_full, (a, b, cov, eta, info), axis=0)
  # Smoother gains E_t = P_t J_{t+1}ᵀ S⁻¹ with S = J_{t+1} P_t J_{t+1}ᵀ + I symmetric, so
  # E_tᵀ = S⁻¹ J_{t+1} P_t; the last step has E_T = 0. Before a masked step (a hard copy,
  # no process noise) E_t = I: the smoothed state is the next one.
  j_next = jac[1:]
  s = j_next @ covs[:-1] @ _t(j_next) + _eye_like(j_next)
  gains = _t(jnp.linalg.solve(s, j_next @ covs[:-1]))
  if valid is not None:
    gains = jnp.where(valid[1:, ..., None], gains, _eye_like(gains))
  gains = jnp.concatenate([gains, jnp.zeros_like(gains[:1])], axis=0)
  pred = jnp.concatenate([_mv(j_next, means[:-1]) + c[1:], means[-1:]], axis=0)
  return linear_scan.solve_full(gains, means - _mv(gains, pred), reverse=True)


def elk_step_diagonal(w_hh, mask, hs, lin: Linearisation, damping: float) -> jax.Array:
  """One quasi-ELK iteration (diagonal Jacobians, elementwise): the next iterate ``(T, B, H)``."""
  jac = diagonal_jacobians(w_hh, lin.gain, mask)
  c = offsets(jac, lin)
  kappa, valid = _step_weights(damping, mask, hs.dtype)
  a = _zero_first((1 - kappa) * jac)
  b = (1 - kappa) * c + kappa * hs
  cov = jnp.broadcast_to(1 - kappa, hs.shape).astype(hs.dtype)
  if valid is not None:
    cov = jnp.where(valid, cov, 0)
  eta = _zero_first(kappa * jac * (hs - c))
  info = _zero_first(kappa * jac * jac)
  _, means, covs, _, _ = jax.lax.associative_scan(_combine_diagonal, (a, b, cov, eta, info), axis=0)
  j_next = jac[1:]
  gains = covs[:-1] * j_next / (j_next * j_next * covs[:-1] + 1)
  if valid is not None:
    gains = jnp.where(valid[1:], gains, 1)  # before a masked step (a hard copy): E_t = 1
  gains = jnp.concatenate([gains, jnp.zeros_like(gains[:1])], axis=0)
  pred = jnp.concatenate([j_next * means[:-1] + c[1:], means[-1:]], axis=0)
  return linear_scan.solve_diagonal(gains, means - gains * pred, reverse=True)
