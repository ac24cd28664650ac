"""Vanishing and exploding gradients, measured along one trajectory.

The seed bounds the Jacobian products of :mod:`jrnn.reference.jacobians` by

.. math::

   \\left\\|\\frac{∂h_t}{∂h_k}\\right\\|
   ≤ \\prod_{i=k+1}^{t} \\|\\mathrm{diag}(σ'(a_i))\\|\\,\\|W_{hh}\\|
   ≤ \\|W_{hh}\\|^{t-k}\\, \\|σ'\\|^{t-k},

with ``‖·‖`` the spectral norm (largest singular value). This module computes the left side
exactly (SVD of the explicit products, small ``H``) or by a matrix-free Lanczos estimate (any
``H``), the right side (:func:`seed_bound`), the share of each earlier step in each loss term
(:func:`loss_contributions`), the spectrum of ``W_hh``, the conditions of Pascanu, Mikolov &
Bengio (2013) and the Lyapunov exponents of the dynamics.

Time indices ``t, k`` run over ``0..T`` as in :mod:`jrnn.reference.jacobians`. Everything takes
one :class:`jrnn.reference.Trajectory`; ``jax.vmap`` it for a batch of sequences.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import validation
from jrnn.activations import ActivationLike, get_activation
from jrnn.reference.jacobians import (
  Trajectory,
  check_trajectory,
  jacobian_jvp,
  jacobian_products,
  jacobian_vjp,
)


def _lower(n: int) -> jax.Array:
  """``(n, n)`` boolean, true where ``t ≥ k`` (rows ``t``, columns ``k``)."""
  t, k = np.indices((n, n))
  return jnp.asarray(t >= k)


def jacobian_norms(traj: Trajectory) -> jax.Array:
  """Exact ``‖∂h_t/∂h_k‖₂`` for every pair, by SVD of the explicit products (small ``H``).

  Costs ``O(T² H³)``; for large ``H`` use :func:`lag_norm_estimates`.

  Returns:
    ``(T+1, T+1)``: entry ``[t, k]`` is the largest singular value of ``∂h_t/∂h_k`` for
    ``t ≥ k`` (``1`` on the diagonal) and ``0`` for ``t < k``.
  """
  prods = jacobian_products(traj)
  norms = jnp.linalg.svd(prods, compute_uv=False)[..., 0]
  return jnp.where(_lower(norms.shape[0]), norms, 0)


def spectral_norm(w: jax.Array) -> jax.Array:
  """``‖w‖₂``, the largest singular value."""
  return jnp.linalg.svd(w, compute_uv=False)[0]


def trajectory_gamma(traj: Trajectory) -> jax.Array:
  """``max |σ'(a_i)|`` over the valid steps and units of the trajectory (0 if none valid)."""
  check_trajectory(traj)
  return jnp.max(jnp.where(traj.mask[:, None], jnp.abs(traj.gains), 0), initial=0.0)


def seed_bound(traj: Trajectory, gamma: Union[float, str] = "trajectory") -> jax.Array:
  """The seed's bound ``(‖W_hh‖₂ γ)^{n(t,k)}`` for every pair ``t ≥ k``.

  ``n(t, k)`` is the number of valid steps in ``(k, t]`` (``t - k`` without a mask): a masked
  step has ``J_i = I`` and contributes a factor 1, not ``‖W_hh‖ γ``.

  Args:
    traj: a :class:`jrnn.reference.Trajectory`.
    gamma: ``‖σ'‖``. A number, e.g. ``jrnn.get_activation("tanh").gamma`` for the seed's
      ``sup_a |σ'(a)|`` (1 for tanh and ReLU, 1/4 for sigmoid): the bound for every input.
      ``"trajectory"`` (default) takes ``max |σ'(a_i)|`` over this trajectory
      (:func:`trajectory_gamma`): smaller, still a valid bound for this trajectory, since
      ``‖diag(σ'(a_i))‖₂ = max_j |σ'(a_{i,j})|``.

  Returns:
    ``(T+1, T+1)``, zero for ``t < k``.
  """
  check_trajectory(traj)
  if isinstance(gamma, str) and gamma != "trajectory":
    raise ValueError(f"gamma must be a number or 'trajectory', got {gamma!r}")
  g = trajectory_gamma(traj) if isinstance(gamma, str) else gamma
  factor = spectral_norm(traj.w_hh) * g
  valid = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(traj.mask.astype(jnp.int32))])
  steps = valid[:, None] - valid[None, :]
  lower = _lower(valid.shape[0])
  return jnp.where(lower, factor ** jnp.where(lower, steps, 0).astype(traj.w_hh.dtype), 0)


class LagProfile(NamedTuple):
  """Norms ``‖∂h_{k+ℓ}/∂h_k‖`` summarised over ``k`` (and over any batch) for each lag ``ℓ``."""

  lag: jax.Array  # shape=(T+1,), int: 0..T
  geo_mean: jax.Array  # shape=(T+1,): exp(mean log norm) over the nonzero norms; 0 if none
  max: jax.Array  # shape=(T+1,)
  min: jax.Array  # shape=(T+1,)
  # The public field name shadows tuple.count, as NamedTuple allows.
  count: jax.Array  # type: ignore[assignment]  # shape=(T+1,), int: pairs at this lag
  nonzero: jax.Array  # shape=(T+1,), int: pairs with a nonzero norm (ReLU can give exact 0)


def lag_profile(norms: jax.Array) -> LagProfile:
  """Summarises pairwise norms by lag ``ℓ = t - k``.

  Args:
    norms: ``(..., T+1, T+1)`` from :func:`jacobian_norms` (or :func:`seed_bound`); leading
      axes, e.g. a batch of sequences, are pooled with the pairs.

  Returns:
    :class:`LagProfile`. The geometric mean is the right average for products that grow or
    shrink geometrically; zero norms (a dead ReLU path) are left out of it and counted apart.
  """
  n = norms.shape[-1]
  if norms.ndim < 2 or norms.shape[-2] != n:
    raise ValueError(f"norms must have shape (..., T+1, T+1), got {norms.shape}")
  t, k = np.indices((n, n))
  lag = np.where(t >= k, t - k, n)  # pairs with t < k go to a discarded segment n
  seg = jnp.asarray(np.broadcast_to(lag, norms.shape).reshape(-1))
  flat = norms.reshape(-1)
  below = seg < n
  pos = below & (flat > 0)
  sum_log = jax.ops.segment_sum(jnp.where(pos, jnp.log(jnp.where(pos, flat, 1)), 0), seg, n + 1)
  n_pos = jax.ops.segment_sum(pos.astype(jnp.int32), seg, n + 1)[:n]
  count = jax.ops.segment_sum(below.astype(jnp.int32), seg, n + 1)[:n]
  geo = jnp.where(n_pos > 0, jnp.exp(sum_log[:n] / jnp.maximum(n_pos, 1)), 0)
  big = jax.ops.segment_max(jnp.where(below, flat, -jnp.inf), seg, n + 1)[:n]
  small = jax.ops.segment_min(jnp.where(below, flat, jnp.inf), seg, n + 1)[:n]
  return LagProfile(jnp.arange(n), geo, big, small, count, n_pos)


class RateFit(NamedTuple):
  """``‖∂h_{k+ℓ}/∂h_k‖ ≈ C ρ^ℓ`` fitted by least squares on the log geometric mean."""

  rate: jax.Array  # shape=(): ρ = exp(slope); < 1 vanishing, > 1 exploding
  log_slope: jax.Array  # shape=(): d log‖·‖ / dℓ
  log_intercept: jax.Array  # shape=(): log C
  num_lags: jax.Array  # shape=(), int: lags that entered the fit


def fit_rate(profile: LagProfile, *, min_lag: int = 1, max_lag: Optional[int] = None) -> RateFit:
  """Fits the per-lag growth factor ``ρ`` to ``log geo_mean(ℓ) ≈ log C + ℓ log ρ``.

  Lags in ``[min_lag, max_lag]`` with at least one nonzero norm enter, equally weighted.

  Args:
    profile: from :func:`lag_profile`.
    min_lag: first lag used (``1`` skips the identity at lag 0).
    max_lag: last lag used; ``None`` for ``T``.
  """
  lag = profile.lag.astype(profile.geo_mean.dtype)
  use = (profile.lag >= min_lag) & (profile.nonzero > 0)
  if max_lag is not None:
    use = use & (profile.lag <= max_lag)
  y = jnp.log(jnp.where(use, profile.geo_mean, 1))
  w = use.astype(lag.dtype)
  n = jnp.sum(w)
  mx = jnp.sum(w * lag) / n
  my = jnp.sum(w * y) / n
  slope = jnp.sum(w * (lag - mx) * (y - my)) / jnp.sum(w * (lag - mx) ** 2)
  return RateFit(jnp.exp(slope), slope, my - slope * mx, jnp.sum(use.astype(jnp.int32)))


class NormEstimate(NamedTuple):
  """A Lanczos estimate of a spectral norm."""

  norm: jax.Array  # the largest Ritz value: ≤ the true norm (up to rounding)
  error_bound: jax.Array  # some singular value lies within this of `norm` (see lanczos_norm)


def lanczos_norm(matvec, rmatvec, v0: jax.Array, num_iters: int) -> NormEstimate:
  """``‖A‖₂`` from products ``v ↦ A v`` and ``u ↦ Aᵀ u`` only: Golub–Kahan–Lanczos
  bidiagonalisation with full reorthogonalisation.

  After ``m = num_iters`` steps ``A V_m = U_m B_m`` with orthonormal ``U_m, V_m`` and
  ``B_m = U_mᵀ A V_m`` (upper bidiagonal up to rounding); the largest singular value ``σ`` of
  ``B_m`` (left vector ``p``) is returned with the residual ``β_m |p_m|``, where ``β_m`` is the
  norm of the next Lanczos vector: some singular value of ``A`` lies within it of ``σ``. That
  certifies ``σ`` as a singular value, not as the largest; but ``σ`` never exceeds ``‖A‖₂``,
  Lanczos finds the largest first, and it converges fast when the top singular value is well
  separated, as in long Jacobian products (in the tests, at ``H = 24``: 20 iterations match the
  SVD to ``1e-8`` at lag 1, 10 iterations to ``1e-9`` from lag 3). It is exact when
  ``m = n``. A Lanczos vector whose norm falls below
  ``n·ε·max(B)`` (an invariant subspace has been found) is set to zero rather than normalised.

  Args:
    matvec, rmatvec: ``(n,) -> (m',)`` and back.
    v0: a nonzero start vector ``(n,)`` (random, so that it meets the top singular vector).
    num_iters: ``m``, static; clipped to ``n``.
  """
  est = _lanczos_batch(
    lambda v: matvec(v[0])[None], lambda u: rmatvec(u[0])[None], v0[None], num_iters
  )
  return NormEstimate(est.norm[0], est.error_bound[0])


def _lanczos_batch(matvec, rmatvec, v0: jax.Array, num_iters: int) -> NormEstimate:
  """:func:`lanczos_norm` for ``N`` operators at once: ``v0 (N, n)``, ``matvec (N, n) ->
  (N, n')`` and ``rmatvec`` back, row ``i`` the products of operator ``i``; every vector
  operation is batched over the rows, so the operators' products can share matrix products.
  Returns arrays ``(N,)``."""
  n = v0.shape[-1]
  m = max(1, min(int(num_iters), n))
  dtype = v0.dtype
  eps = jnp.finfo(dtype).eps

  def orth(basis, x):  # basis (m, N, n): rows not yet filled are zero and add nothing
    c = jnp.einsum("jbn,bn->bj", basis, x)
    x = x - jnp.einsum("jbn,bj->bn", basis, c)
    c2 = jnp.einsum("jbn,bn->bj", basis, x)  # a second pass keeps the basis orthonormal
    return x - jnp.einsum("jbn,bj->bn", basis, c2), c + c2

  def normalise(x, scale):
    nx = jnp.linalg.norm(x, axis=-1)
    ok = nx > n * eps * scale
    return jnp.where(ok[:, None], x / jnp.where(ok, nx, 1)[:, None], 0), jnp.where(ok, nx, 0)

  def body(j, carry):
    us, vs, b, betas, scale = carry
    u0 = matvec(vs[j])
    u, c = orth(us, u0)
    scale = jnp.maximum(scale, jnp.linalg.norm(u0, axis=-1))
    u, alpha = normalise(u, scale)
    us = us.at[j].set(u)
    b = b.at[:, :, j].set(c.at[:, j].set(alpha))
    v, _ = orth(vs, rmatvec(u))
    v, beta = normalise(v, scale)
    return us, vs.at[j + 1].set(v), b, betas.at[j].set(beta), scale

  first = v0 / jnp.linalg.norm(v0, axis=-1, keepdims=True)
  batch = v0.shape[0]
  u_size = jax.eval_shape(matvec, first).shape[-1]
  init = (
    jnp.zeros((m, batch, u_size), dtype),
    jnp.zeros((m + 1, batch, n), dtype).at[0].set(first),
    jnp.zeros((batch, m, m), dtype),
    jnp.zeros((m, batch), dtype),
    jnp.zeros((batch,), dtype),
  )
  _, _, b, betas, _ = jax.lax.fori_loop(0, m, body, init)
  p, s, _ = jnp.linalg.svd(b)
  return NormEstimate(s[:, 0], betas[m - 1] * jnp.abs(p[:, m - 1, 0]))


def jacobian_norm_estimate(
  traj: Trajectory, t, k, *, key: jax.Array, num_iters: int = 20
) -> NormEstimate:
  """Matrix-free ``‖∂h_t/∂h_k‖₂`` for any ``H`` (:func:`lanczos_norm` on
  :func:`jrnn.reference.jacobian_jvp` and :func:`jrnn.reference.jacobian_vjp`; ``t ≥ k`` may be
  traced).

  Each iteration costs one forward and one reverse scan over the whole sequence, ``O(T H²)``;
  ``num_iters`` iterations (default 20, clipped to ``H``) cost ``O(num_iters · T H²)``.

  Args:
    traj: a :class:`jrnn.reference.Trajectory`.
    t, k: target and source steps, ``0 ≤ k ≤ t ≤ T``.
    key: PRNG key for the start vector.
    num_iters: Lanczos steps.
  """
  check_trajectory(traj)
  v0 = jax.random.normal(key, traj.w_hh.shape[:1], traj.w_hh.dtype)
  return lanczos_norm(
    lambda v: jacobian_jvp(traj, k, v)[t], lambda u: jacobian_vjp(traj, t, u)[k], v0, num_iters
  )


def _window(traj: Trajectory, k, length: int) -> Trajectory:
  """Steps ``k+1..k+length`` as a trajectory of their own, so its ``∂h_length/∂h_0`` is
  ``∂h_{k+length}/∂h_k`` of ``traj``."""
  cut = lambda a, n: jax.lax.dynamic_slice_in_dim(a, k, n)
  return Trajectory(
    traj.w_hh, cut(traj.hs, length + 1), cut(traj.gains, length), cut(traj.mask, length)
  )


def lag_norm_estimates(
  traj: Trajectory, lag: int, *, key: jax.Array, num_iters: int = 20
) -> NormEstimate:
  """Matrix-free ``‖∂h_{k+lag}/∂h_k‖₂`` for every start ``k = 0..T-lag``, for any ``H``.

  Each estimate runs :func:`lanczos_norm` on products over the ``lag`` steps of its window only,
  ``O(num_iters · lag · H²)`` per start; the starts are vmapped.

  Args:
    traj: a :class:`jrnn.reference.Trajectory`.
    lag: ``ℓ``, a static int in ``[0, T]``.
    key: PRNG key; each start gets its own start vector.
    num_iters: Lanczos steps (default 20, clipped to ``H``).

  Returns:
    :class:`NormEstimate` of arrays ``(T+1-lag,)``.
  """
  check_trajectory(traj)
  n_steps = traj.num_steps
  if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or not 0 <= lag <= n_steps:
    raise ValueError(f"lag must be a static int in [0, T={n_steps}], got {lag!r}")
  starts = jnp.arange(n_steps + 1 - lag)
  keys = jax.random.split(key, n_steps + 1 - lag)

  def one(k, kk):
    return jacobian_norm_estimate(_window(traj, k, lag), lag, 0, key=kk, num_iters=num_iters)

  return jax.vmap(one)(starts, keys)


def loss_contributions(traj: Trajectory, dloss_dh: jax.Array) -> jax.Array:
  """``‖∂L_t/∂h_k‖₂`` for every loss term ``L_t`` and earlier step ``k ≤ t``.

  .. math::

     \\frac{∂L_t}{∂h_k} = \\frac{∂L_t}{∂h_t} \\frac{∂h_t}{∂h_k}

  computed matrix-free by :func:`jrnn.reference.jacobian_vjp` for each ``t`` (``O(T² H²)``).

  Args:
    traj: a :class:`jrnn.reference.Trajectory`.
    dloss_dh: ``(T, H)``, row ``t-1`` the direct derivative ``∂L_t/∂h_t``. For per-step losses
      of a readout, ``jax.grad`` of the summed loss with respect to the states, holding the
      states independent, gives exactly these rows::

        g = jax.grad(lambda hs: jrnn.squared_error(
            jrnn.readout(p.w_hy, p.b_y, hs), targets))(traj.hs[1:])

  Returns:
    ``(T+1, T+1)``: entry ``[t, k]`` for ``1 ≤ t``, ``k ≤ t``; zero elsewhere (row 0: there is
    no ``L_0``).
  """
  check_trajectory(traj)
  n_steps, n_hidden = traj.gains.shape
  validation.check_float("dloss_dh", dloss_dh, traj.w_hh.dtype)
  validation.check_shape("dloss_dh", dloss_dh, (n_steps, n_hidden), "(T, H)")
  ts = jnp.arange(1, n_steps + 1)
  rows = jax.vmap(lambda t, g: jnp.linalg.norm(jacobian_vjp(traj, t, g), axis=-1))(ts, dloss_dh)
  return jnp.concatenate([jnp.zeros((1, n_steps + 1), rows.dtype), rows])


def _check_batch(trajs: Trajectory) -> Tuple[int, int, int]:
  """``(B, T, H)`` of a batch of trajectories of one ``W_hh``, or a ValueError."""
  w_hh, gains, mask = trajs.w_hh, trajs.gains, trajs.mask
  if np.ndim(w_hh) != 2 or np.ndim(gains) != 3 or np.shape(w_hh) != (np.shape(gains)[2],) * 2:
    raise ValueError(
      "trajs must hold one w_hh (H, H) and a batch of gains (B, T, H), "
      f"got w_hh {np.shape(w_hh)} and gains {np.shape(gains)}"
    )
  validation.check_shape("trajs.mask", mask, np.shape(gains)[:2], "(B, T)")
  return np.shape(gains)


def _check_lags(lags, n_steps: int) -> Tuple[int, ...]:
  bad = [k for k in lags if isinstance(k, bool) or not isinstance(k, (int, np.integer))]
  if not len(lags) or bad or any(not 1 <= k <= n_steps for k in lags):
    raise ValueError(f"lags must be static ints in [1, T={n_steps}], got {tuple(lags)!r}")
  return tuple(int(k) for k in lags)


def end_lag_norm_estimates(
  trajs: Trajectory, lags: Sequence[int], *, key: jax.Array, num_iters: int = 20
) -> NormEstimate:
  """Matrix-free ``‖∂h_T/∂h_{T-k}‖₂`` for every sequence of a batch and every lag ``k``.

  :func:`lanczos_norm` on all ``B·K`` products at once: the ``B`` sequences share ``W_hh``, so
  each of their steps is one matrix product ``(n, H) × (H, H)`` over every vector that still
  runs through it, not ``n`` matrix-vector products, and a lag's vectors enter (or leave) the
  sweep only for its own last ``k`` steps. Each iteration costs ``2 Σ_k k`` products of
  ``B`` rows with ``W_hh``, ``O(num_iters · B · Σ_k k · H²)``; the estimate of
  :func:`jacobian_norm_estimate` on each window (the same algorithm, other start vectors; exact
  when ``H ≤ num_iters``), in fewer, larger products.

  Args:
    trajs: the :class:`jrnn.reference.Trajectory` of ``B`` sequences of one layer: ``w_hh
      (H, H)``, ``hs (B, T+1, H)``, ``gains (B, T, H)``, ``mask (B, T)``.
    lags: static ints ``k`` in ``[1, T]``.
    key: PRNG key; each (sequence, lag) gets its own start vector.
    num_iters: Lanczos steps (default 20, clipped to ``H``).

  Returns:
    :class:`NormEstimate` of arrays ``(B, len(lags))``.

  Raises:
    ValueError: for a batch of the wrong shapes or lags outside ``[1, T]``.
  """
  batch, n_steps, n_hidden = _check_batch(trajs)
  lags = _check_lags(lags, n_steps)
  desc = sorted(set(lags), reverse=True)  # k_0 > k_1 > ...: the longest window first
  ends = desc[1:] + [0]
  w_hh = trajs.w_hh
  # W_hhᵀ as an array of its own: XLA:CPU multiplies x @ W_hhᵀ inside a loop a third slower
  # when it folds the transpose into the product.
  w_t = jax.lax.optimization_barrier(w_hh.T)
  gains = jnp.swapaxes(trajs.gains, 0, 1)  # (T, B, H)
  mask = jnp.swapaxes(trajs.mask, 0, 1)  # (T, B)

  def sweep(x, lo, hi, transpose):
    """Steps ``lo+1..hi`` (``J_t`` forward, ``J_tᵀ`` backward) on rows ``x (r·B, H)``."""
    reps = x.shape[0] // batch

    def step(x, inp):
      gain, valid = jnp.tile(inp[0], (reps, 1)), jnp.tile(inp[1], reps)[:, None]
      y = (gain * x) @ w_hh if transpose else gain * (x @ w_t)
      return jnp.where(valid, y, x), None

    return jax.lax.scan(step, x, (gains[lo:hi], mask[lo:hi]), reverse=transpose)[0]

  def matvec(v):  # row i·B + b: lag desc[i], sequence b; enters at step T - k + 1
    x = v[:0]
    for i, (k, end) in enumerate(zip(desc, ends, strict=True)):
      x = sweep(
        jnp.concatenate([x, v[i * batch : (i + 1) * batch]]), n_steps - k, n_steps - end, False
      )
    return x

  def rmatvec(u):  # every row starts at step T; lag desc[i] leaves after its k steps
    x, out = u, []
    for i in reversed(range(len(desc))):
      x = sweep(x, n_steps - desc[i], n_steps - ends[i], True)
      out.append(x[i * batch :])
      x = x[: i * batch]
    return jnp.concatenate(out[::-1])

  v0 = jax.random.normal(key, (len(desc) * batch, n_hidden), w_hh.dtype)
  est = _lanczos_batch(matvec, rmatvec, v0, num_iters)
  pick = np.array([desc.index(k) for k in lags])
  return jax.tree_util.tree_map(lambda a: a.reshape(len(desc), batch)[pick].T, est)


def lag_loss_contributions(
  trajs: Trajectory, dloss_dh: jax.Array, lags: Sequence[int]
) -> jax.Array:
  """``Σ_{t ≥ k} ‖∂L_t/∂h_{t-k}‖₂`` for every sequence of a batch and every lag ``k``: the sums
  along the diagonals ``t - k`` of :func:`loss_contributions`, for the given lags only.

  All ``B·T`` cotangents go back through the recurrence together, one matrix product with
  ``W_hh`` per step; a cotangent is dropped once no later lag can use it (``O(B · T · max(lags)
  · H²)`` at most).

  Args:
    trajs: ``B`` trajectories of one ``W_hh`` (as :func:`end_lag_norm_estimates`).
    dloss_dh: ``(B, T, H)``, ``[b, t-1]`` the direct derivative ``∂L_t/∂h_t`` of sequence ``b``.
    lags: static ints ``k`` in ``[1, T]``.

  Returns:
    ``(B, len(lags))``.

  Raises:
    ValueError: for shapes that do not match or lags outside ``[1, T]``.
  """
  batch, n_steps, n_hidden = _check_batch(trajs)
  lags = _check_lags(lags, n_steps)
  validation.check_float("dloss_dh", dloss_dh, trajs.w_hh.dtype)
  validation.check_shape("dloss_dh", dloss_dh, (batch, n_steps, n_hidden), "(B, T, H)")
  w_hh = trajs.w_hh
  # x[b, c] is the cotangent of L_{first + c + 1}, carried back j steps to h_{first + c + 1 - j}.
  x, first, j, sums = jnp.asarray(dloss_dh), 0, 0, {}
  for k in sorted(set(lags)):
    x, first = x[:, k - 1 - first :], k - 1  # L_t with t < k has no term at lag k or beyond
    width = n_steps - first

    def step(x, j, first=first, width=width):
      # L_t's cotangent at h_{t-j} goes through step t - j: J_{t-j}ᵀ, gains index t - j - 1.
      gain = jax.lax.dynamic_slice_in_dim(trajs.gains, first - j, width, axis=1)
      valid = jax.lax.dynamic_slice_in_dim(trajs.mask, first - j, width, axis=1)
      y = jnp.einsum("bch,hk->bck", gain * x, w_hh)
      return jnp.where(valid[..., None], y, x), None

    x = jax.lax.scan(step, x, jnp.arange(j, k))[0]
    j = k
    sums[k] = jnp.sum(jnp.linalg.norm(x, axis=-1), axis=1)
  return jnp.stack([sums[k] for k in lags], axis=1)


class WeightSpectrum(NamedTuple):
  """Spectral facts about ``W_hh``."""

  singular_values: jax.Array  # shape=(H,), descending
  spectral_norm: jax.Array  # shape=(): largest singular value
  spectral_radius: jax.Array  # shape=(): max |λ|
  eigenvalues: jax.Array  # shape=(H,), complex


def weight_spectrum(w_hh: jax.Array) -> WeightSpectrum:
  """Singular values, spectral norm, eigenvalues and spectral radius of ``W_hh``.

  ``max|λ| ≤ ‖W_hh‖₂``: the radius governs the long-run growth of ``W_hh^n`` (linear RNN), the
  norm bounds every single step. Eigenvalues use ``jnp.linalg.eigvals`` (CPU backend).
  """
  validation.check_float("w_hh", w_hh)
  if np.ndim(w_hh) != 2 or np.shape(w_hh)[0] != np.shape(w_hh)[1]:
    raise ValueError(f"w_hh must be square (H, H), got {np.shape(w_hh)}")
  sv = jnp.linalg.svd(w_hh, compute_uv=False)
  eig = jnp.linalg.eigvals(w_hh)
  return WeightSpectrum(sv, sv[0], jnp.max(jnp.abs(eig)), eig)


class PascanuVerdict(NamedTuple):
  """Pascanu, Mikolov & Bengio (2013), "On the difficulty of training RNNs", section 2.1.

  With ``λ₁ = σ_max(W_hh)`` and ``γ = sup|σ'|``: ``λ₁ < 1/γ`` is *sufficient* for the gradients
  to vanish (every ``‖J_t‖ ≤ λ₁ γ = η < 1``, so ``‖∂h_t/∂h_k‖ ≤ η^{t-k} → 0``); ``λ₁ > 1/γ`` is
  *necessary* for them to explode (not sufficient: saturation may still shrink them).
  """

  sigma_max: jax.Array  # shape=(): λ₁, largest singular value of W_hh
  gamma: jax.Array  # shape=(): γ = sup |σ'|
  threshold: jax.Array  # shape=(): 1/γ
  eta: jax.Array  # shape=(): λ₁ γ, the per-step contraction bound
  spectral_radius: jax.Array  # shape=(): max |λ(W_hh)|, for comparison
  vanishing_sufficient: jax.Array  # shape=(), bool: λ₁ < 1/γ, gradients must vanish
  exploding_necessary: jax.Array  # shape=(), bool: λ₁ > 1/γ, gradients can explode

  def summary(self) -> str:
    """One line for a log (outside ``jit``)."""
    head = (
      f"sigma_max(W_hh)={float(self.sigma_max):.4g}, 1/gamma={float(self.threshold):.4g}, "
      f"eta={float(self.eta):.4g}: "
    )
    if bool(self.vanishing_sufficient):
      return head + "sigma_max < 1/gamma, sufficient condition for vanishing gradients holds"
    if bool(self.exploding_necessary):
      return head + "sigma_max > 1/gamma, necessary condition for exploding gradients holds"
    return head + "sigma_max = 1/gamma, on the boundary"


def pascanu_conditions(
  w_hh: jax.Array, activation: ActivationLike = "tanh", *, gamma: Optional[float] = None
) -> PascanuVerdict:
  """The 2013 conditions for ``W_hh`` and an activation (see :class:`PascanuVerdict`).

  Args:
    w_hh: ``(H, H)``.
    activation: supplies ``γ = sup|σ'|`` (1 for tanh and ReLU, 1/4 for sigmoid).
    gamma: overrides the activation's ``γ`` (required for a callable, whose ``γ`` is unknown).
  """
  spec = weight_spectrum(w_hh)
  if gamma is None:
    gamma = get_activation(activation).gamma
    if gamma is None:
      raise ValueError("activation has no known gamma = sup|σ'|; pass gamma=")
  g = jnp.asarray(gamma, spec.spectral_norm.dtype)
  lam = spec.spectral_norm
  return PascanuVerdict(lam, g, 1 / g, lam * g, spec.spectral_radius, lam * g < 1, lam * g > 1)


def _start_basis(n_hidden: int, n: int, dtype) -> jax.Array:
  """The first ``n`` columns of the orthonormal DCT-II basis of ``R^H``, ``(H, n)``.

  Column ``j`` is ``c_j cos(π (i + ½) j / H)`` over units ``i``, with ``c_0 = 1/√H`` and
  ``c_j = √(2/H)``: every column but the constant one mixes all units with signs that differ,
  and none is a coordinate axis. Deterministic: no PRNG key.
  """
  i = np.arange(n_hidden)[:, None] + 0.5
  j = np.arange(n)[None, :]
  basis = np.cos(np.pi * i * j / n_hidden) * np.sqrt(2.0 / n_hidden)
  basis[:, 0] = 1.0 / np.sqrt(n_hidden)
  return jnp.asarray(basis, dtype)


def lyapunov_exponents(
  traj: Trajectory, *, num_exponents: Optional[int] = None, burn_in: int = 0
) -> jax.Array:
  """Lyapunov exponents of the hidden-state dynamics along the trajectory (QR method).

  .. math::

     J_t Q_{t-1} = Q_t R_t, \\qquad λ_i = \\frac{1}{N} \\sum_{t} \\log |(R_t)_{ii}|

  ``Q_0`` is ``I`` for all ``H`` exponents, and the first ``n < H`` columns of the orthonormal
  DCT-II basis (:func:`_start_basis`) for fewer: a fixed basis in general position, so that even one
  exponent is the largest one when ``W_hh`` leaves coordinate subspaces invariant (``W_hh = r·I`` or
  any diagonal ``W_hh``, where the first columns of ``I`` would only ever see their own units). With
  all ``H`` columns the start does not limit what is found, and ``I`` keeps a diagonal product
  diagonal: each unit's exact rate, and an exactly singular step (a ReLU unit off) gives ``-inf``
  only to that unit's exponent. The sum runs over the ``N`` valid steps after the first ``burn_in``
  steps (which only align ``Q``). ``λ_1`` is the average per-step log-growth of the Jacobian
  products along the trajectory, so ``e^{λ_1}`` is the asymptotic version of the per-lag rate of
  :func:`fit_rate`; ``Σ_i λ_i`` (all ``H``) is the mean ``log|det J_t|``. For a linear RNN (identity
  activation) ``λ_i → log|λ_i(W_hh)|``. A singular ``J_t`` (a dead ReLU unit) gives ``-inf`` for the
  lowest exponents.

  Args:
    traj: a :class:`jrnn.reference.Trajectory`.
    num_exponents: how many leading exponents (default ``H``), static.
    burn_in: static number of initial steps left out of the average.

  Returns:
    ``(num_exponents,)`` in natural log per step, descending.
  """
  check_trajectory(traj)
  n_steps, n_hidden = traj.gains.shape
  n = n_hidden if num_exponents is None else int(num_exponents)
  if not 1 <= n <= n_hidden:
    raise ValueError(f"num_exponents must lie in [1, H={n_hidden}], got {num_exponents!r}")
  if not 0 <= int(burn_in) < max(n_steps, 1):
    raise ValueError(f"burn_in must lie in [0, T={n_steps}), got {burn_in!r}")

  def body(q, inp):
    t, gain, valid = inp
    q_new, r = jnp.linalg.qr(gain[:, None] * (traj.w_hh @ q))
    use = valid & (t > burn_in)
    logs = jnp.where(use, jnp.log(jnp.abs(jnp.diagonal(r))), 0)
    return jnp.where(valid, q_new, q), logs

  q0 = (
    jnp.eye(n_hidden, dtype=traj.w_hh.dtype)
    if n == n_hidden
    else _start_basis(n_hidden, n, traj.w_hh.dtype)
  )
  ts = jnp.arange(1, n_steps + 1)
  _, logs = jax.lax.scan(body, q0, (ts, traj.gains, traj.mask))
  count = jnp.sum((traj.mask & (ts > burn_in)).astype(logs.dtype))
  return jnp.sort(jnp.sum(logs, axis=0) / count)[::-1]
