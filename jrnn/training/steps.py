"""Compiled training: one pure step from any jrnn loss and any optax optimiser.

A step is gradient descent on a loss ``L(θ)`` (e.g. the seed's ``L = Σ_t L_t(y_t, ŷ_t)``), the
gradient given by BPTT:

.. math::

   g = ∇_θ L(θ), \\qquad (u, s') = \\mathrm{opt.update}(\\mathrm{clip}(g), s, θ),
   \\qquad θ' = θ + u

where ``clip(g) = g · min(1, c / ‖g‖₂)`` over the global norm of all gradients when a clip
norm ``c`` is given.

* :func:`make_train_step` builds ``train_step(params, opt_state, batch) -> (params, opt_state,
  metrics)``; jitted once with ``params`` and ``opt_state`` donated, so the update happens in
  place and later calls with same-shaped arguments reuse the compiled program.
* :func:`make_stream_train_step` is the stateful variant for long streams (truncated BPTT):
  ``(params, opt_state, h, batch) -> (params, opt_state, h', metrics)``. The state ``h'`` at the
  end of one window starts the next; ``stop_gradient`` cuts the gradient there, so each step
  backpropagates through its own window of ``T`` steps only while the forward pass sees the whole
  stream's history.
* :func:`make_eval_step` evaluates a loss without updating anything.
* :func:`sequence_loss` turns the forward pass and a jrnn loss into such a loss function.

Non-finite guard: with ``guard=True`` a step checks, inside the compiled program, that the loss,
the gradient norm and every new array of the state are finite; when one is not, it returns the
state it was given unchanged (no NaN or inf ever enters it) and ``metrics["ok"]`` is false. The
check is a few reductions fused into the update; the caller reads ``ok`` when it next syncs
with the device (e.g. at a log step), so no step waits for the host.

Batches are time-major, ``(T, B, …)``, as :func:`jrnn.forward`'s default layout.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from jrnn import validation
from jrnn.activations import ActivationLike
from jrnn.cell import readout
from jrnn.init import check_key
from jrnn.losses import softmax_cross_entropy, squared_error
from jrnn.params import StackedParams
from jrnn.training.optimizers import check_positive
from jrnn.unroll import forward, stacked_forward

LOSSES = ("cross_entropy", "squared_error")

Metrics = Dict[str, jax.Array]


class Batch(NamedTuple):
  """One time-major batch.

  ``mask`` weights the loss only (e.g. the copy task scores its answer steps); it does not stop
  the recurrence, which runs over every step of ``xs``. ``key`` feeds dropout in training
  (derive it per step, e.g. ``fold_in(key, step)``); ``None`` turns dropout off (evaluation).
  """

  xs: jax.Array  # shape=(T, B, I) float, or (T, B) int tokens with sequence_loss(one_hot=I)
  targets: jax.Array  # shape=(T, B) int labels, or (T, B, O) float targets
  mask: Optional[jax.Array] = None  # shape=(T, B), bool; None scores every step
  key: Optional[jax.Array] = None  # PRNG key for dropout; None: no dropout


def sequence_loss(
  kind: str = "cross_entropy",
  *,
  one_hot: Optional[int] = None,
  reduction: str = "mean",
  activation: ActivationLike = "tanh",
  unroll: int = 1,
  grad: str = "hand",
  kernel: str = "auto",
  solver: str = "sequential",
  dropout: float = 0.0,
) -> Callable[..., Tuple[jax.Array, jax.Array]]:
  """The loss of :func:`jrnn.forward` on a :class:`Batch`, as ``loss(params, batch, h0=None)``.

  ``params`` may be :class:`jrnn.RNNParams` (``h0``/``h_last`` of shape ``(B, H)``) or
  :class:`jrnn.StackedParams` with a readout (run by :func:`jrnn.stacked_forward`; ``h0`` and
  ``h_last`` of shape ``(L·D, B, H)``).

  ``loss`` returns ``(L, h_last)``: the loss (``"cross_entropy"``: softmax cross-entropy with
  integer targets; ``"squared_error"``: ``Σ_o (y - ŷ)²``), reduced by ``reduction`` over the
  steps ``batch.mask`` scores (see :mod:`jrnn.losses`), and the final state ``(B, H)`` to carry
  into the next window of a stream.

  Args:
    kind: one of :data:`LOSSES`.
    one_hot: if given, ``batch.xs`` holds integer tokens ``(T, B)`` in ``[0, one_hot)`` that are
      one-hot encoded to ``(T, B, one_hot)`` (so ``W_xh x_t`` is column ``x_t`` of ``W_xh``).
      A token outside that range is a ``ValueError`` when ``batch.xs`` is concrete; under
      ``jit`` it makes the loss and gradients NaN (which ``make_train_step(guard=True)`` skips).
    reduction: as :func:`jrnn.squared_error`; ``"mean"`` is per scored step.
    activation, unroll, grad, kernel, solver: passed to :func:`jrnn.forward`.
    dropout: ``p ∈ [0, 1)``: when ``batch.key`` is given, the readout sees
      ``h_t ⊙ z_t / (1 - p)`` with ``z_t ~ Bernoulli(1 - p)`` per unit, step and sequence
      (dropout on the non-recurrent connection only, so the recurrence and its carried state
      are untouched). A regulariser for small data sets such as the char-LM corpus.
  """
  if kind not in LOSSES:
    raise ValueError(f"kind must be one of {LOSSES}, got {kind!r}")
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
  if one_hot is not None:
    check_positive("one_hot", one_hot, int)

  def loss(params, batch: Batch, h0: Optional[jax.Array] = None):
    xs = batch.xs
    if one_hot is not None:
      if not jnp.issubdtype(jnp.result_type(xs), jnp.integer):
        raise TypeError(
          f"batch.xs must hold integer tokens with one_hot={one_hot}, "
          f"got dtype {jnp.result_type(xs)}"
        )
      dtype = jnp.result_type(jax.tree_util.tree_leaves(params)[0])
      valid = (xs >= 0) & (xs < one_hot)
      if not isinstance(xs, jax.core.Tracer) and not jnp.all(valid):
        raise ValueError(
          f"batch.xs must hold tokens in [0, one_hot={one_hot}), got tokens from "
          f"{int(jnp.min(xs))} to {int(jnp.max(xs))}"
        )
      # Traced tokens cannot be checked: one out of range makes its input NaN (not the zero
      # vector one_hot would give), so the loss and gradients are NaN, never quietly wrong.
      xs = jnp.where(valid[..., None], jax.nn.one_hot(xs, one_hot, dtype=dtype), jnp.nan)
    run = stacked_forward if isinstance(params, StackedParams) else forward
    out = run(
      params,
      xs,
      h0=h0,
      activation=activation,
      unroll=unroll,
      grad=grad,
      kernel=kernel,
      solver=solver,
    )
    ys = out.ys
    if dropout and batch.key is not None:
      check_key("batch.key", batch.key)
      keep = jax.random.bernoulli(batch.key, 1.0 - dropout, out.hs.shape)
      hs = jnp.where(keep, out.hs / (1.0 - dropout), jnp.zeros((), out.hs.dtype))
      ys = readout(params.w_hy, params.b_y, hs)  # out.ys is then dead code, removed by XLA
    if kind == "cross_entropy":
      # ys is None only for a stack without a readout: the loss raises TypeError naming ys.
      value = softmax_cross_entropy(ys, batch.targets, batch.mask, reduction=reduction)  # type: ignore[arg-type]
    else:
      value = squared_error(ys, batch.targets, batch.mask, reduction=reduction)  # type: ignore[arg-type]
    return value, out.h_last

  return loss


def all_finite(tree: Any) -> jax.Array:
  """``True`` (a device bool, shape ``()``) when every floating leaf of ``tree`` is finite."""
  leaves = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree_util.tree_leaves(tree)
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
  ]
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def select_tree(ok: jax.Array, new: Any, old: Any) -> Any:
  """``new`` where the scalar ``ok`` holds, else ``old``, leaf by leaf (same structures)."""
  return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _update(loss_and_grad, optimizer, params, opt_state, *args, guard=False):
  (loss, aux), grads = loss_and_grad(params, *args)
  updates, new_opt_state = optimizer.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
  if not guard:
    return new_params, new_opt_state, aux, metrics
  ok = (
    jnp.isfinite(loss)
    & jnp.isfinite(metrics["grad_norm"])
    & all_finite(new_params)
    & all_finite(new_opt_state)
    & all_finite(aux)
  )
  new_params, new_opt_state = select_tree(ok, (new_params, new_opt_state), (params, opt_state))
  return new_params, new_opt_state, aux, dict(metrics, ok=ok)


def _jit(fn, jit, donate, out_shardings):
  if not jit:
    return fn
  # Input shardings are taken from the arguments (placed by jrnn.training.sharding.replicate
  # and shard_batch); fixing the outputs' keeps params replicated from one step to the next.
  kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
  return jax.jit(fn, donate_argnums=donate, **kwargs)


def _check_step_args(builder: str, loss_fn, optimizer=None, **flags) -> None:
  """At construction: a callable loss, an optax-like optimiser, boolean flags."""
  if not callable(loss_fn):
    raise TypeError(
      f"{builder}: loss_fn must be callable, loss_fn(params, batch, ...), got "
      f"{type(loss_fn).__name__} {loss_fn!r:.60}"
    )
  if optimizer is not None and not (
    callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
  ):
    raise TypeError(
      f"{builder}: optimizer must be an optax.GradientTransformation (init and "
      f"update), got {type(optimizer).__name__}"
    )
  for name, value in flags.items():
    validation.check_bool(name, value)


def _split_loss(
  builder: str,
  out,
  has_aux: bool,
  fix: str = "pass has_aux=False for a loss that returns a scalar",
  scalar: bool = True,
):
  """``(loss, aux)`` from what ``loss_fn`` returned, at trace time; one-line errors for a pair
  given without ``has_aux=True``, a scalar with it, or a loss that is not a float scalar."""
  is_pair = isinstance(out, (tuple, list))
  if is_pair and not has_aux:
    raise TypeError(
      f"{builder}: loss_fn returned a {type(out).__name__} of {len(out)}, not a "
      "scalar; for a loss that returns (loss, aux), such as sequence_loss's "
      "(L, h_last), pass has_aux=True"
    )
  if has_aux and not (is_pair and len(out) == 2):
    got = (
      f"a {type(out).__name__} of {len(out)}" if is_pair else f"one value of shape {jnp.shape(out)}"
    )
    raise TypeError(f"{builder}: loss_fn must return a pair (loss, aux) here, got {got}; {fix}")
  loss, aux = out if has_aux else (out, None)
  if scalar and (jnp.shape(loss) != () or not jnp.issubdtype(jnp.result_type(loss), jnp.floating)):
    raise TypeError(
      f"{builder}: loss_fn's loss must be a float scalar (shape ()), got shape "
      f"{jnp.shape(loss)} and dtype {jnp.result_type(loss)}; reduce it over the "
      "batch and steps (e.g. reduction='mean')"
    )
  return loss, aux


def make_train_step(
  loss_fn: Callable[..., Any],
  optimizer: optax.GradientTransformation,
  *,
  has_aux: bool = False,
  jit: bool = True,
  donate: bool = True,
  mesh: Optional[jax.sharding.Mesh] = None,
  guard: bool = False,
) -> Callable[[Any, Any, Any], Tuple[Any, Any, Metrics]]:
  """Builds ``train_step(params, opt_state, batch) -> (params, opt_state, metrics)``.

  Args:
    loss_fn: ``loss_fn(params, batch)`` returning a float scalar, or ``(scalar, aux)`` with
      ``has_aux=True`` (``aux`` is dropped; :func:`sequence_loss` returns ``h_last`` there, so
      it needs ``has_aux=True``). A pair without ``has_aux=True``, a scalar with it, or a loss
      that is not a float scalar is a ``TypeError`` when the step is first traced; a
      ``loss_fn`` that is not callable, or an ``optimizer`` without ``init``/``update``, a
      ``TypeError`` here.
    optimizer: any ``optax.GradientTransformation`` (see :func:`make_optimizer`).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    jit: compile with ``jax.jit`` (``False`` for debugging).
    donate: donate ``params`` and ``opt_state``: the caller must not reuse the arrays it
      passed in, only those returned.
    mesh: a device mesh from :func:`jrnn.training.sharding.data_mesh` for data parallelism: pass
      ``params``/``opt_state`` placed by :func:`jrnn.training.sharding.replicate` and ``batch`` by
      :func:`jrnn.training.sharding.shard_batch` (split along its batch axis 1); the step keeps the
      returned ``params``/``opt_state`` replicated, and XLA sums the gradient across devices.
    guard: skip a non-finite update (see the module docstring): when the loss, the gradient
      norm or any new parameter or optimiser-state entry is NaN or inf, return ``params`` and
      ``opt_state`` unchanged, with ``metrics["ok"]`` false.

  Returns:
    The step. ``metrics`` holds ``"loss"`` and ``"grad_norm"`` (before clipping), and with
    ``guard=True`` the bool ``"ok"``, as device scalars: fetch them only when logging, so steps
    are not synchronised with the host.
  """
  _check_step_args("make_train_step", loss_fn, optimizer, has_aux=has_aux)

  def scalar_loss(params, batch):
    return _split_loss("make_train_step", loss_fn(params, batch), has_aux)

  grad_fn = jax.value_and_grad(scalar_loss, has_aux=True)

  def train_step(params, opt_state, batch):
    params, opt_state, _, metrics = _update(
      grad_fn, optimizer, params, opt_state, batch, guard=guard
    )
    return params, opt_state, metrics

  shardings = None
  if mesh is not None:
    from jrnn.training import sharding  # pylint: disable=import-outside-toplevel

    shardings = sharding.replicated(mesh)
  return _jit(train_step, jit, (0, 1) if donate else (), shardings)


def make_stream_train_step(
  loss_fn: Callable[..., Tuple[jax.Array, jax.Array]],
  optimizer: optax.GradientTransformation,
  *,
  jit: bool = True,
  donate: bool = True,
  mesh: Optional[jax.sharding.Mesh] = None,
  carry_axis: int = 0,
  guard: bool = False,
) -> Callable[[Any, Any, jax.Array, Any], Tuple[Any, Any, jax.Array, Metrics]]:
  """Builds the truncated-BPTT step ``(params, opt_state, h, batch) -> (params, opt_state, h',
  metrics)``.

  Args:
    loss_fn: ``loss_fn(params, batch, h0) -> (loss, h_last)``, e.g. :func:`sequence_loss`.
    optimizer, jit, mesh: as :func:`make_train_step`; with a mesh, pass ``h`` split along its
      batch axis (``shard_batch(h, mesh, batch_axis=carry_axis)``), as the step returns it.
    carry_axis: the batch axis of ``h``: 0 for ``(B, H)``, 1 for a stack's ``(L·D, B, H)``.
    donate: donate ``params``, ``opt_state`` and ``h``.
    guard: as :func:`make_train_step`; a skipped step also returns ``h`` unchanged (``h'``
      joins the arrays that must be finite).

  ``h`` enters under ``stop_gradient``: the gradient of window ``k`` stops at its first step,
  ``∂L_k/∂θ = Σ_{t in window k} …`` with ``h`` treated as a constant (truncated BPTT with
  ``k₁ = k₂ = T``).
  """
  _check_step_args("make_stream_train_step", loss_fn, optimizer)

  def pair_loss(params, batch, h):
    return _split_loss(
      "make_stream_train_step",
      loss_fn(params, batch, h),
      True,
      "a stream step's loss_fn(params, batch, h0) returns (loss, h_last), as sequence_loss does",
    )

  grad_fn = jax.value_and_grad(pair_loss, has_aux=True)

  def stream_step(params, opt_state, h, batch):
    h = jax.lax.stop_gradient(h)
    params, opt_state, h_last, metrics = _update(
      grad_fn, optimizer, params, opt_state, batch, h, guard=guard
    )
    h_last = jax.lax.stop_gradient(h_last)
    if guard:
      h_last = jnp.where(metrics["ok"], h_last, h)
    return params, opt_state, h_last, metrics

  shardings = None
  if mesh is not None:
    from jrnn.training import sharding  # pylint: disable=import-outside-toplevel

    rep, state = sharding.replicated(mesh), sharding.batch_sharding(mesh, carry_axis)
    shardings = (rep, rep, state, rep)
  return _jit(stream_step, jit, (0, 1, 2) if donate else (), shardings)


def make_eval_step(
  loss_fn: Callable[..., Any], *, has_aux: bool = False, jit: bool = True
) -> Callable[..., Metrics]:
  """Builds ``eval_step(params, batch, *rest) -> {"loss": …}`` (no gradient, no update).

  Extra arguments (e.g. ``h0`` for :func:`sequence_loss`) are passed on to ``loss_fn``. With
  ``has_aux=True`` the loss is the first of the pair ``loss_fn`` returns (a pair without it, or a
  single value with it, is a ``TypeError``); it may be an array (e.g. ``reduction="none"``).
  """
  _check_step_args("make_eval_step", loss_fn, has_aux=has_aux)

  def eval_step(params, batch, *rest):
    out = loss_fn(params, batch, *rest)  # not necessarily a scalar: reduction="none" is fine
    return {"loss": _split_loss("make_eval_step", out, has_aux, scalar=False)[0]}

  return jax.jit(eval_step) if jit else eval_step
