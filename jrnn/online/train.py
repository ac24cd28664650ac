"""Training online: the parameters move every ``k`` steps of a stream, the influence carries on.

An online method is a pair of pure functions (optax's pattern), configured once by
:func:`online_method`:

* ``init(params, h=None, *, key=None) -> state`` starts one stream;
* ``step(params, state, x, target, *, key=None, mask=None, loss_mask=None) -> (state, grads,
  L_t)`` advances it one step and returns ``∂L_t/∂θ`` (exact, estimated or truncated).

:func:`make_online_train_step` runs ``B`` streams side by side (``jax.vmap``) over a window of
``T`` steps and applies the optimiser every ``k`` steps to the accumulated gradient

.. math::

   g = \\frac{1}{N} \\sum_{b=1}^{B} \\sum_{t ∈ \\text{the last } k \\text{ steps}}
       \\frac{∂L_{b,t}}{∂θ}, \\qquad (u, s') = \\mathrm{opt.update}(g, s, θ), \\qquad
       θ' = θ + u

(``N`` the number of scored steps for ``reduction="mean"``, ``B`` for ``"batch_mean"``, 1 for
``"sum"``). When none of the ``k`` steps is scored (e.g. the copy task's waiting steps), the
update is skipped: parameters and optimiser state stay as they are. Unlike truncated BPTT over
windows, the state (``h`` and the influence) is never cut: it carries on across updates and
windows, computed with whatever parameters were current at each step, which is what makes these
methods online.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from jrnn import validation
from jrnn.activations import ActivationLike, get_activation
from jrnn.online import core, rtrl, snap, tbptt, uoro
from jrnn.params import RNNParams

METHODS = ("rtrl", "uoro", "snap1", "tbptt")
REDUCTIONS = ("mean", "batch_mean", "sum")

Metrics = Dict[str, jax.Array]


class OnlineMethod(NamedTuple):
  """An online gradient method as pure functions (see the module docstring)."""

  name: str
  init: Callable[..., Any]  # (params, h=None, *, key=None) -> state
  step: Callable[..., Any]  # (params, state, x, target, *, key=None, mask=None, loss_mask=None)
  needs_key: bool  # whether step draws random numbers (UORO): it then needs key=
  state_bytes: Callable[[RNNParams], int]  # bytes of one stream's state


class OnlineBatch(NamedTuple):
  """A time-major window of ``B`` streams.

  ``loss_mask`` is first so that ``OnlineBatch(*jrnn.training.Batch(xs, targets, mask)[:3])``
  keeps that batch's meaning (its mask scores steps; the recurrence runs over all of them).
  """

  xs: jax.Array  # shape=(T, B, I)
  targets: jax.Array  # shape=(T, B, O) float, or (T, B) int labels
  loss_mask: Optional[jax.Array] = None  # shape=(T, B) bool: scored steps; None scores all
  mask: Optional[jax.Array] = None  # shape=(T, B) bool: steps that happen; None: all


def online_method(
  name: str,
  *,
  loss: core.LossLike = "squared_error",
  activation: ActivationLike = "tanh",
  truncation: Optional[int] = None,
  max_influence_bytes: Optional[int] = rtrl.DEFAULT_MAX_INFLUENCE_BYTES,
  eps: float = uoro.DEFAULT_EPS,
) -> OnlineMethod:
  """Configures one of :data:`METHODS` as an :class:`OnlineMethod`.

  Args:
    name: ``"rtrl"`` (exact, time ``O(H²·P)``, memory ``O(H·P)``), ``"uoro"`` (unbiased
      rank-one, ``O(H² + P)``), ``"snap1"`` (SnAp-1, ``O(H² + P)``) or ``"tbptt"`` (truncated
      BPTT(1, τ), ``O(τ (H² + H·I))``).
    loss: ``"squared_error"``, ``"cross_entropy"`` or a callable ``(y (O,), target) -> ()``.
    activation: ``σ``.
    truncation: ``τ`` for ``"tbptt"`` (required there, refused elsewhere).
    max_influence_bytes: exact RTRL's refusal limit per stream (see :mod:`jrnn.online.rtrl`).
    eps: UORO's ``ε``.
  """
  if not isinstance(name, str) or name not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {name!r}")
  if (name == "tbptt") != (truncation is not None):
    raise ValueError(
      "truncation (τ) must be given for method 'tbptt' and only there, got "
      f"method={name!r}, truncation={truncation!r}"
    )
  # Every argument is checked now, not at the first step inside a compiled train step.
  core.step_loss(loss)
  get_activation(activation)
  if name == "tbptt":
    tbptt.check_truncation(truncation)
  if name == "rtrl":
    rtrl.check_max_influence_bytes(max_influence_bytes)
  uoro.check_eps(eps, "online_method")
  cfg: Dict[str, Any] = dict(loss=loss, activation=activation)
  if name == "rtrl":
    return OnlineMethod(
      name,
      lambda p, h=None, *, key=None: rtrl.rtrl_init(p, h, max_influence_bytes=max_influence_bytes),
      lambda p, s, x, t, *, key=None, **kw: rtrl.rtrl_step(p, s, x, t, **cfg, **kw),
      False,
      lambda p: core.tree_bytes(
        jax.eval_shape(functools.partial(rtrl.rtrl_init, max_influence_bytes=None), p)
      ),
    )
  if name == "uoro":

    def uoro_step(p, s, x, t, *, key=None, **kw):
      if key is None:
        raise ValueError("the uoro method's step needs key= (its random signs)")
      return uoro.uoro_step(p, s, x, t, key=key, eps=eps, **cfg, **kw)

    return OnlineMethod(
      name,
      lambda p, h=None, *, key=None: uoro.uoro_init(p, h, key=key),
      uoro_step,
      True,
      lambda p: core.tree_bytes(
        jax.eval_shape(lambda q: uoro.uoro_init(q, jnp.zeros_like(q.b_h)), p)
      ),
    )
  if name == "snap1":
    return OnlineMethod(
      name,
      lambda p, h=None, *, key=None: snap.snap1_init(p, h),
      lambda p, s, x, t, *, key=None, **kw: snap.snap1_step(p, s, x, t, **cfg, **kw),
      False,
      lambda p: core.tree_bytes(jax.eval_shape(snap.snap1_init, p)),
    )
  assert truncation is not None  # check_truncation refused anything but a positive int
  tau = truncation
  return OnlineMethod(
    f"tbptt{truncation}",
    lambda p, h=None, *, key=None: tbptt.tbptt_init(p, h, truncation=tau),
    lambda p, s, x, t, *, key=None, **kw: tbptt.tbptt_step(p, s, x, t, **cfg, **kw),
    False,
    lambda p: core.tree_bytes(
      jax.eval_shape(functools.partial(tbptt.tbptt_init, truncation=tau), p)
    ),
  )


def init_streams(
  method: OnlineMethod,
  params: RNNParams,
  n_streams: int,
  *,
  h: Optional[jax.Array] = None,
  key: Optional[jax.Array] = None,
):
  """``B = n_streams`` fresh states stacked on a leading axis (``h (B, H)`` optional).

  ``key`` is split over the streams (UORO with a learnt ``h0`` needs it).
  """
  if isinstance(n_streams, bool) or not isinstance(n_streams, int) or n_streams < 1:
    raise ValueError(f"n_streams must be a positive int, got {n_streams!r}")
  if h is not None:
    validation.check_shape("h", h, (n_streams, params.sizes[1]), "(B, H)")
  if key is not None:
    uoro.check_key(key, "init_streams")
  keys = None if key is None else jax.random.split(key, n_streams)
  return jax.vmap(lambda hb, k: method.init(params, hb, key=k), axis_size=n_streams)(h, keys)


def make_online_train_step(
  method: OnlineMethod,
  optimizer: optax.GradientTransformation,
  *,
  every: int = 1,
  reduction: str = "mean",
  jit: bool = True,
  donate: bool = True,
) -> Callable[..., Tuple[Any, Any, Any, Metrics]]:
  """Builds ``train_step(params, opt_state, state, batch, key=None) -> (params, opt_state,
  state, metrics)``.

  Args:
    method: from :func:`online_method`.
    optimizer: any ``optax.GradientTransformation`` (e.g. :func:`jrnn.training.make_optimizer`).
    every: ``k``: the parameters are updated every ``k`` steps; the window's ``T`` must be a
      multiple of ``k`` (``k = 1``: after every step, fully online).
    reduction: how the accumulated gradient is scaled (see the module docstring).
    jit: compile with ``jax.jit`` (``False`` to ``vmap`` the step over seeds yourself).
    donate: donate ``params``, ``opt_state`` and ``state``.

  The step takes ``state`` for ``B`` streams (from :func:`init_streams`), an
  :class:`OnlineBatch` with ``xs (T, B, I)``, and ``key`` (required by UORO; step ``t`` of the
  window and stream ``b`` use ``fold_in(fold_in(key, t), b)``: derive ``key`` per window, e.g.
  ``fold_in(run_key, window)``). ``metrics``: ``"loss"`` (mean ``L_t`` over the window's
  scored steps), ``"grad_norm"`` (of the last update's gradient), ``"scored"`` (their number).
  """
  if not isinstance(method, OnlineMethod):
    raise TypeError(
      f"method must be an OnlineMethod from online_method(), got {type(method).__name__}"
    )
  if isinstance(every, bool) or not isinstance(every, int) or every < 1:
    raise ValueError(f"every must be a positive int (steps between updates), got {every!r}")
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
  validation.check_bool("jit", jit)
  validation.check_bool("donate", donate)

  def train_step(params, opt_state, state, batch: OnlineBatch, key=None):
    if method.needs_key and key is None:
      raise ValueError(f"the {method.name} train step needs key= (a fresh key per window)")
    if key is not None:
      uoro.check_key(key, "the online train step")
    xs = batch.xs
    if jnp.ndim(xs) != 3:
      raise ValueError(f"batch.xs must have shape (T, B, I), got {jnp.shape(xs)}")
    n_steps, n_streams = jnp.shape(xs)[:2]
    if n_steps % every:
      raise ValueError(f"the window's T={n_steps} must be a multiple of every={every}")
    for name, m in zip(
      ("batch.loss_mask", "batch.mask"), (batch.loss_mask, batch.mask), strict=True
    ):
      if m is not None:
        validation.check_shape(name, m, (n_steps, n_streams), "(T, B)")
        validation.check_mask_dtype(m)
    masks = [
      jnp.ones((n_steps, n_streams), bool) if m is None else jnp.asarray(m).astype(bool)
      for m in (batch.loss_mask, batch.mask)
    ]
    seq = (xs, batch.targets, masks[0], masks[1], jnp.arange(n_steps))
    chunks = jax.tree_util.tree_map(
      lambda a: a.reshape((n_steps // every, every) + a.shape[1:]), seq
    )

    def one_step(p, carry, inp):
      st, gsum, lsum, count = carry
      x, tg, lm, m, t = inp
      if key is None:
        keys = None
      else:
        kt = jax.random.fold_in(key, t)
        keys = jax.vmap(lambda b: jax.random.fold_in(kt, b))(jnp.arange(n_streams))
      run = lambda s, xb, tb, lb, mb, kb: method.step(p, s, xb, tb, key=kb, mask=mb, loss_mask=lb)
      st, g, value = jax.vmap(run)(st, x, tg, lm, m, keys)
      gsum = jax.tree_util.tree_map(lambda a, b: a + jnp.sum(b, 0), gsum, g)
      return (st, gsum, lsum + jnp.sum(value), count + jnp.sum(lm & m, dtype=jnp.int32)), None

    def one_update(carry, chunk):
      p, o, st, lsum, count, _ = carry
      zero = jnp.zeros((), p.w_hh.dtype)
      start = (st, core.zeros_grads(p), zero, jnp.zeros((), jnp.int32))
      (st, g, lk, ck), _ = jax.lax.scan(functools.partial(one_step, p), start, chunk)
      div = {"mean": jnp.maximum(ck, 1).astype(zero.dtype), "batch_mean": n_streams, "sum": 1}[
        reduction
      ]
      g = jax.tree_util.tree_map(lambda a: a / div, g)
      updates, new_o = optimizer.update(g, o, p)
      # No scored step, no update: a zero gradient would still move Adam's or momentum's
      # parameters and decay their statistics.
      p, o = core.keep_where(ck > 0, (optax.apply_updates(p, updates), new_o), (p, o))
      return (p, o, st, lsum + lk, count + ck, optax.tree.norm(g)), None

    zero = jnp.zeros((), params.w_hh.dtype)
    (params, opt_state, state, lsum, count, gnorm), _ = jax.lax.scan(
      one_update, (params, opt_state, state, zero, jnp.zeros((), jnp.int32), zero), chunks
    )
    metrics = {"loss": lsum / jnp.maximum(count, 1), "grad_norm": gnorm, "scored": count}
    return params, opt_state, state, metrics

  if not jit:
    return train_step
  return jax.jit(train_step, donate_argnums=(0, 1, 2) if donate else ())
