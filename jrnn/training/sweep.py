"""Hyperparameter sweeps as one compiled program: ``N`` configurations (seeds × learning rates ×
init scales × clipping thresholds × weight decays) trained side by side by ``jax.vmap``.

A grid is the product of a few axes (:func:`parse_sweep` reads ``"lr=1e-3,3e-3;seed=0:5"``,
:func:`sweep_grid` expands it into one dict per member). Members differ only in numbers, so
:mod:`jrnn.training.seeds`' idea carries over: every leaf of the parameters and optimiser state
gains a leading member axis, and so do the hyperparameters, which enter the compiled step as
per-member *arrays* (:class:`SweepState`'s ``hparams``) rather than Python constants. Member
``n`` at step ``k`` follows

.. math::

   θ_n^{(k+1)} = θ_n^{(k)} + u\\big(\\mathrm{clip}_{c_n}(∇_θ L(θ_n^{(k)}; \\mathrm{batch}(d_n, k)));
   \\; η_n(k), λ_n, s_n^{(k)}\\big)

with its own learning rate ``η_n`` (and schedule), clipping threshold ``c_n``, weight decay
``λ_n`` and data key ``d_n``; seeds and init scales enter through each member's initial
parameters. :func:`sweep_optimizer` builds the optimiser of :func:`jrnn.training.make_optimizer`
from such arrays, so one program serves every member.

Each member has its own non-finite guard: a member whose loss, gradient norm, new parameters or
optimiser state is NaN or inf at step ``k`` keeps its last finite state from then on, and
``SweepState.diverged_at[n]`` records ``k``. The members share no arithmetic (``vmap`` batches
each product along the member axis), so a diverging member leaves the others' numbers exactly as
they would be with a finite one in its place.

Equality with one-at-a-time runs: member ``n`` computes what :func:`jrnn.training.make_train_step`
computes for its configuration alone, the same operations in the same order; only the matrix
products are batched (a member axis), so results agree to float rounding: bit for bit where XLA
runs the batched and unbatched products alike, otherwise within a few ulps per step
(docs/training.md reports what was measured).

Example::

  >>> import jax, jax.numpy as jnp
  >>> import jrnn
  >>> from jrnn.training import (Batch, init_sweep, make_sweep_chunk, parse_sweep, sequence_loss,
  ...                            sweep_grid, sweep_optimizer)
  >>> loss_fn = sequence_loss("squared_error")  # returns (loss, h_last): has_aux=True below
  >>> def make_batch(key, k):  # batch k of one member: inputs (T, B, I), their running sum
  ...   xs = jax.random.normal(jax.random.fold_in(key, k), (8, 4, 2))
  ...   return Batch(xs, jnp.cumsum(xs[..., :1], axis=0))
  >>> members = sweep_grid(parse_sweep("lr=1e-3,3e-3;seed=0:2"),  # 4 members
  ...                      base=dict(clip=1.0, weight_decay=0.0))  # the hparams not swept
  >>> opt = sweep_optimizer("adam")
  >>> data_keys = jnp.stack([jax.random.key(100 + m["seed"]) for m in members])  # one per member
  >>> state = init_sweep(members, lambda m: jrnn.init_params(jax.random.key(m["seed"]), 2, 16, 1),
  ...                    opt, data_keys)
  >>> chunk = make_sweep_chunk(loss_fn, opt, make_batch, steps=3, has_aux=True)
  >>> state, metrics = chunk(state, 0)  # metrics["loss"]: (4, 3)
  >>> metrics["loss"].shape
  (4, 3)
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrnn import validation
from jrnn.training.optimizers import make_optimizer, make_schedule
from jrnn.training.steps import Metrics, make_train_step, select_tree

# The axes a sweep may vary, in the order a member's dict and the tables list them.
SWEEP_AXES = ("seed", "lr", "init_scale", "clip", "weight_decay")
# The axes that live in the compiled step as per-member arrays (the others shape the init).
HPARAMS = ("lr", "clip", "weight_decay")
_INT_AXES = ("seed",)
_RANGE = re.compile(r"^(-?\d+):(-?\d+)$")


def _spec_error(what: str) -> ValueError:
  return ValueError(f"--sweep: {what}")


def _parse_value(axis: str, text: str):
  if axis in _INT_AXES:
    try:
      return int(text)
    except ValueError:
      raise _spec_error(f"{axis} takes integers, got {text!r}") from None
  try:
    value = float(text)
  except ValueError:
    raise _spec_error(f"{axis} takes numbers, got {text!r}") from None
  if not math.isfinite(value) or value < 0 or (axis == "lr" and value == 0):
    need = "positive" if axis == "lr" else ">= 0"
    raise _spec_error(f"{axis} values must be finite and {need}, got {text!r}")
  return value


def parse_sweep(text: str) -> Dict[str, List[Any]]:
  """The axes of a sweep from its command-line spec.

  Syntax: axes separated by ``;``, each ``name=values``; values a ``,``-separated list
  (``lr=1e-3,3e-3``) or, for the integer axis ``seed``, a range ``a:b`` meaning
  ``a, a+1, …, b-1`` as Python's ``range(a, b)`` (``seed=0:5`` is five seeds). Names: one of
  :data:`SWEEP_AXES` (``seed``, ``lr``, ``init_scale``, ``clip``, ``weight_decay``), each at
  most once. ``clip=0`` turns clipping off, ``init_scale=0`` keeps the init scheme's default.

  Returns:
    ``{axis: [values]}`` in the order given (:func:`sweep_grid` expands it).

  Raises:
    ValueError: one line naming the bad part: an unknown or repeated axis, a part without
      ``=``, an empty list or value, a reversed or empty range, a range on a float axis, a
      value that is not a number, negative, or (``lr``) zero, or a repeated value.
  """
  if not isinstance(text, str):
    raise TypeError(f"--sweep must be a string such as 'lr=1e-3,3e-3;seed=0:5', got {text!r}")
  if not text.strip():
    raise _spec_error("the spec is empty; write e.g. 'lr=1e-3,3e-3;seed=0:5'")
  axes: Dict[str, List[Any]] = {}
  for part in text.split(";"):
    part = part.strip()
    if not part:
      raise _spec_error(f"empty axis between ';' in {text!r}")
    name, eq, values = (s.strip() for s in part.partition("="))
    if not eq:
      raise _spec_error(f"{part!r} is not name=values (e.g. lr=1e-3,3e-3)")
    if name not in SWEEP_AXES:
      raise _spec_error(f"unknown axis {name!r} (allowed: {', '.join(SWEEP_AXES)})")
    if name in axes:
      raise _spec_error(f"axis {name!r} given twice")
    if not values:
      raise _spec_error(f"axis {name!r} has an empty list of values")
    m = _RANGE.match(values)
    if m:
      if name not in _INT_AXES:
        raise _spec_error(f"a:b ranges are for integer axes ({', '.join(_INT_AXES)}), not {name!r}")
      a, b = int(m.group(1)), int(m.group(2))
      if b <= a:
        raise _spec_error(f"{name}={values}: the range a:b must have a < b (it is range(a, b))")
      axes[name] = list(range(a, b))
      continue
    items = [v.strip() for v in values.split(",")]
    if any(not v for v in items):
      raise _spec_error(f"axis {name!r} has an empty value in {values!r}")
    parsed = [_parse_value(name, v) for v in items]
    if len(set(parsed)) != len(parsed):
      raise _spec_error(f"axis {name!r} repeats a value in {values!r}")
    axes[name] = parsed
  return axes


def format_sweep(axes: Mapping[str, Sequence[Any]]) -> str:
  """The spec :func:`parse_sweep` reads back as ``axes`` (lists written out, ``repr`` floats)."""
  return ";".join(f"{k}={','.join(repr(v) for v in vs)}" for k, vs in axes.items())


def sweep_grid(
  axes: Mapping[str, Sequence[Any]], base: Optional[Mapping[str, Any]] = None
) -> List[Dict[str, Any]]:
  """The members of the product of ``axes``: one dict per configuration.

  Args:
    axes: ``{axis: values}`` (:func:`parse_sweep`), axes from :data:`SWEEP_AXES`.
    base: values of the axes not swept (e.g. ``{"seed": 0, "lr": 1e-3, "clip": 1.0, ...}``);
      every member carries them, overridden by its swept values.

  Returns:
    ``[{axis: value}]`` in row-major order of ``axes`` as given (the last axis varies fastest),
    each with the keys of ``base`` and of ``axes`` in :data:`SWEEP_AXES` order.
  """
  unknown = [k for k in list(axes) + list(base or {}) if k not in SWEEP_AXES]
  if unknown:
    raise ValueError(f"sweep axes must come from {SWEEP_AXES}, got {unknown}")
  if any(len(v) == 0 for v in axes.values()):
    raise ValueError(f"every sweep axis needs at least one value, got {dict(axes)}")
  members = []
  for combo in itertools.product(*axes.values()):
    member = {**dict(base or {}), **dict(zip(axes, combo, strict=True))}
    members.append({k: member[k] for k in SWEEP_AXES if k in member})
  return members


def sweep_optimizer(
  name: str = "adam",
  *,
  momentum: float = 0.9,
  schedule: str = "constant",
  total_steps: Optional[int] = None,
  warmup_steps: int = 0,
  final_fraction: float = 0.1,
) -> Callable[[Mapping[str, jax.Array]], optax.GradientTransformation]:
  """:func:`jrnn.training.make_optimizer` with its learning rate, clipping threshold and weight
  decay taken from arrays, so one compiled program serves every member of a sweep.

  Args:
    name, momentum, schedule, total_steps, warmup_steps, final_fraction: as
      :func:`jrnn.training.make_optimizer` (shared by every member; checked here).

  Returns:
    ``build(hparams) -> optax.GradientTransformation`` for one member, ``hparams`` a dict of
    scalars ``"lr"`` (``η₀ > 0``), ``"clip"`` (global-norm threshold; ``0`` turns clipping off)
    and ``"weight_decay"`` (``λ >= 0``; AdamW's decoupled decay for ``"adam"``, an L2 term on the
    gradient otherwise), traced or not. Whatever their values, the optimiser state has one
    structure (clipping and decay are always in the chain; ``clip = 0`` clips at ``+inf`` and
    ``λ = 0`` adds ``0·θ``), so the states of all members stack; the updates equal
    :func:`jrnn.training.make_optimizer`'s for the same numbers.
  """
  # Every shared choice is checked once, with placeholder numbers.
  make_optimizer(
    name,
    1.0,
    momentum=momentum,
    schedule=schedule,
    total_steps=total_steps,
    warmup_steps=warmup_steps,
    final_fraction=final_fraction,
  )

  def build(hparams: Mapping[str, jax.Array]) -> optax.GradientTransformation:
    missing = [k for k in HPARAMS if k not in hparams]
    if missing:
      raise KeyError(f"hparams must hold {HPARAMS}, missing {missing}")
    lr = make_schedule(
      hparams["lr"],
      schedule=schedule,
      total_steps=total_steps,
      warmup_steps=warmup_steps,
      final_fraction=final_fraction,
    )
    decay = hparams["weight_decay"]
    if name == "adam":
      opt = optax.adamw(lr, weight_decay=decay)
    else:
      if name == "sgd":
        inner = optax.sgd(lr)
      elif name == "momentum":
        inner = optax.sgd(lr, momentum=momentum)
      elif name == "adagrad":
        inner = optax.adagrad(lr)
      else:
        inner = optax.rmsprop(lr)
      opt = optax.chain(optax.add_decayed_weights(decay), inner)
    clip = hparams["clip"]
    return optax.chain(optax.clip_by_global_norm(jnp.where(clip > 0, clip, jnp.inf)), opt)

  return build


SweepOptimizer = Callable[[Mapping[str, jax.Array]], optax.GradientTransformation]


class SweepState(NamedTuple):
  """Everything one compiled sweep updates; every leaf leads with the member axis ``N``."""

  params: Any  # each leaf (N, ...): the members' parameters
  opt_state: Any  # each leaf (N, ...): their optimiser states (sweep_optimizer's structure)
  hparams: Dict[str, jax.Array]  # "lr", "clip", "weight_decay": shape=(N,), the params' dtype
  data_keys: jax.Array  # shape=(N,) PRNG keys: member n trains on make_batch(data_keys[n], k)
  diverged_at: jax.Array  # shape=(N,), int32: the first step whose update was non-finite; -1: none
  ema: Any = None  # each leaf (N, ...): the running average of params, or None (no average)


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def init_sweep(
  members: Sequence[Mapping[str, Any]],
  init_fn: Callable[[Mapping[str, Any]], Any],
  optimizer: SweepOptimizer,
  data_keys: jax.Array,
  *,
  ema: bool = False,
) -> SweepState:
  """The stacked :class:`SweepState` of ``members`` before their first step.

  Args:
    members: one dict per member (:func:`sweep_grid`), each holding ``"lr"``, ``"clip"`` and
      ``"weight_decay"`` (and whatever ``init_fn`` reads, e.g. ``"seed"``, ``"init_scale"``).
    init_fn: ``member -> params``, run for each member in turn (eagerly: member ``n``'s initial
      parameters are exactly those of the same configuration initialised alone).
    optimizer: :func:`sweep_optimizer`'s ``build``.
    data_keys: ``(N,)`` PRNG keys, one per member (e.g. :func:`jrnn.training.seeds.seed_keys`).
    ema: keep a running average of each member's parameters (starts at the initial ones).

  Returns:
    A :class:`SweepState` with ``diverged_at = -1`` and the hyperparameters as arrays of the
    parameters' dtype.
  """
  if not members:
    raise ValueError("members must hold at least one member (sweep_grid)")
  for n, member in enumerate(members):
    missing = [k for k in HPARAMS if k not in member]
    if missing:
      raise ValueError(
        f"members[{n}] lacks {missing}: every member needs {HPARAMS} "
        "(pass the unswept values as sweep_grid's base)"
      )
  if not callable(init_fn):
    raise TypeError(f"init_fn must be a function member -> params, got {type(init_fn).__name__}")
  if not (
    isinstance(data_keys, jax.Array) and jnp.issubdtype(data_keys.dtype, jax.dtypes.prng_key)
  ):
    raise TypeError(
      f"data_keys must be typed PRNG keys of shape (N,) (seed_keys), got {data_keys!r:.80}"
    )
  if data_keys.shape != (len(members),):
    raise ValueError(
      f"data_keys must have shape (N,)=({len(members)},), one key per member, got {data_keys.shape}"
    )
  validation.check_bool("ema", ema)
  params = [init_fn(m) for m in members]
  dtype = jnp.result_type(jax.tree_util.tree_leaves(params[0])[0])
  hparams = [{k: jnp.asarray(m[k], dtype) for k in HPARAMS} for m in members]
  opt_states = [optimizer(hp).init(p) for hp, p in zip(hparams, params, strict=True)]
  stacked = _stack(params)
  return SweepState(
    stacked,
    _stack(opt_states),
    _stack(hparams),
    data_keys,
    jnp.full((len(members),), -1, jnp.int32),
    jax.tree_util.tree_map(jnp.copy, stacked) if ema else None,
  )


def make_sweep_chunk(
  loss_fn: Callable[..., Any],
  optimizer: SweepOptimizer,
  make_batch: Callable[[jax.Array, jax.Array], Any],
  *,
  steps: int,
  has_aux: bool = False,
  jit: bool = True,
  donate: bool = True,
) -> Callable[..., Tuple[SweepState, Metrics]]:
  """``steps`` guarded training steps of every member as one compiled ``lax.scan`` over a
  ``vmap`` over members.

  Member ``n``'s step ``k`` is :func:`jrnn.training.make_train_step` (``guard=True``) with the
  optimiser ``optimizer(hparams[n])`` on ``make_batch(data_keys[n], k)``; once a step of member
  ``n`` is not finite, ``diverged_at[n] = k`` and its parameters, optimiser state and average
  stay as they were before that step.

  Args:
    loss_fn, has_aux: as :func:`jrnn.training.make_train_step`.
    optimizer: :func:`sweep_optimizer`'s ``build``.
    make_batch: ``(data_key, step) -> batch`` for one member, traceable (``step`` an int32
      scalar); shapes must not depend on either.
    steps: updates per call (positive).
    jit, donate: compile with ``jax.jit``; donate the state.

  Returns:
    ``chunk(state, start, decays=None) -> (state, metrics)``: ``start`` the global index of the
    chunk's first step; ``decays`` (``(steps,)``, with an averaging state only) the average's
    decay ``d`` at each step, ``θ̄ ← d θ̄ + (1 - d) θ``. ``metrics["loss"]``,
    ``metrics["grad_norm"]`` (before clipping) and ``metrics["ok"]`` (the step was applied)
    have shape ``(N, steps)``.
  """
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive int, got {steps!r}")
  if not callable(make_batch):
    raise TypeError(
      f"make_batch must be a function (data_key, step) -> batch, got {type(make_batch).__name__}"
    )
  if not callable(optimizer):
    raise TypeError(
      f"optimizer must be sweep_optimizer's build(hparams), got {type(optimizer).__name__}"
    )
  validation.check_bool("jit", jit)
  validation.check_bool("donate", donate)

  def one_member(params, opt_state, hparams, data_key, diverged_at, ema, start, decays):
    step_fn = make_train_step(loss_fn, optimizer(hparams), has_aux=has_aux, jit=False, guard=True)

    def body(carry, inputs):
      params, opt_state, ema, bad = carry
      k, decay = inputs
      new_params, new_opt, m = step_fn(params, opt_state, make_batch(data_key, k))
      healthy = bad < 0
      new_ema = ema
      if ema is not None:
        new_ema = jax.tree_util.tree_map(lambda a, b: decay * a + (1 - decay) * b, ema, new_params)
      ok = m["ok"] & healthy
      params, opt_state, ema = select_tree(
        ok, (new_params, new_opt, new_ema), (params, opt_state, ema)
      )
      bad = jnp.where(healthy & ~m["ok"], k, bad).astype(jnp.int32)
      return (params, opt_state, ema, bad), dict(m, ok=ok)

    ks = start + jnp.arange(steps, dtype=jnp.int32)
    (params, opt_state, ema, diverged_at), metrics = jax.lax.scan(
      body, (params, opt_state, ema, diverged_at), (ks, decays)
    )
    return params, opt_state, ema, diverged_at, metrics

  batched = jax.vmap(one_member, in_axes=(0, 0, 0, 0, 0, 0, None, None))

  def chunk_fn(state: SweepState, start, decays):
    params, opt_state, ema, diverged_at, metrics = batched(
      state.params,
      state.opt_state,
      state.hparams,
      state.data_keys,
      state.diverged_at,
      state.ema,
      start,
      decays,
    )
    return SweepState(params, opt_state, state.hparams, state.data_keys, diverged_at, ema), metrics

  compiled = jax.jit(chunk_fn, donate_argnums=(0,) if donate else ()) if jit else chunk_fn

  def chunk(state: SweepState, start, decays=None):
    if not isinstance(state, SweepState):
      raise TypeError(f"state must be a SweepState (init_sweep), got {type(state).__name__}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer, jax.Array)):
      raise TypeError(f"start must be an int step index >= 0, got {start!r}")
    if not isinstance(start, jax.core.Tracer) and not 0 <= int(start) <= 2**31 - 1 - steps:
      raise ValueError(f"start must be an int in [0, {2**31 - 1 - steps}], got {int(start)}")
    if (state.ema is None) != (decays is None):
      raise ValueError(
        "decays (the average's decay per step, shape (steps,)) must be given exactly when "
        f"state has an average (init_sweep(ema=True)); state.ema is "
        f"{'None' if state.ema is None else 'set'}, decays is {'None' if decays is None else 'set'}"
      )
    dtype = jnp.result_type(jax.tree_util.tree_leaves(state.params)[0])
    if decays is None:
      decays = jnp.zeros((steps,), dtype)
    elif jnp.shape(decays) != (steps,):
      raise ValueError(f"decays must have shape (steps,)=({steps},), got {jnp.shape(decays)}")
    return compiled(state, jnp.asarray(start, jnp.int32), jnp.asarray(decays, dtype))

  return chunk


def members_finite(state: SweepState) -> np.ndarray:
  """``(N,)`` bools: which members never diverged (``diverged_at < 0``), on the host."""
  return np.asarray(state.diverged_at) < 0


__all__ = (
  "HPARAMS",
  "SWEEP_AXES",
  "SweepState",
  "format_sweep",
  "init_sweep",
  "make_sweep_chunk",
  "members_finite",
  "parse_sweep",
  "sweep_grid",
  "sweep_optimizer",
)
