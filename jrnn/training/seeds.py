"""Several seeds as one compiled program: ``jax.vmap`` over each seed's parameters, optimiser
state and data keys.

A result about how an RNN learns needs its spread over seeds, not one run. Seeds differ only in
their numbers, never in their shapes, so ``S`` independent runs are one run of a function
``vmap``-ed over a leading seed axis: every leaf of ``params`` and ``opt_state`` gains a first
axis of size ``S``, and so do the data keys. Seed ``s`` then follows exactly the updates it
would follow alone,

.. math::

   θ_s^{(k+1)} = θ_s^{(k)} + u\\big(∇_θ L(θ_s^{(k)}; \\mathrm{batch}(d_s, k)), \\; s_s^{(k)}\\big),
   \\qquad s = 1, …, S,

(``d_s`` its data key, ``k`` the step), while XLA sees one program whose products are ``S``
times wider. On a CPU, where a small RNN's per-step cost is mostly loop overhead rather than
arithmetic, five seeds cost little more than one.

* :func:`seed_keys` makes ``S`` keys (from integer seeds or by splitting one key);
* :func:`init_seeds` builds the stacked ``(params, opt_state)``;
* :func:`make_multi_seed_train_step` is :func:`jrnn.training.make_train_step` over the seed
  axis, ``(params, opt_state, batch) -> (params, opt_state, metrics)`` with ``(S, …)`` leaves;
* :func:`make_multi_seed_train_chunk` runs ``steps`` such updates in one ``lax.scan``, each seed
  drawing batch ``k`` as ``make_batch(data_key_s, k)`` on the device: no batch crosses the host;
* :func:`take_seed` picks one seed's slice of any stacked pytree.

Example::

  >>> import jax, optax
  >>> import jrnn
  >>> from jrnn.data import adding
  >>> from jrnn.training.seeds import init_seeds, make_multi_seed_train_chunk, seed_keys
  >>> def loss_fn(params, batch):  # squared error of the last step's output, batch mean
  ...   ys = jrnn.forward(params, batch.xs).ys[-1]  # xs (T, B, 2) -> ys[-1] (B, 1)
  ...   return jrnn.squared_error(ys, batch.targets[:, None], reduction="mean")
  >>> opt = optax.adam(1e-3)
  >>> keys, data_keys = seed_keys([0, 1, 2, 3, 4]), seed_keys([10, 11, 12, 13, 14])  # (5,) each
  >>> params, opt_state = init_seeds(lambda k: jrnn.init_params(k, 2, 32, 1), opt, keys)
  >>> make_batch = lambda key, k: adding.batch(jax.random.fold_in(key, k), 8, 20)  # B=8, T=20
  >>> chunk = make_multi_seed_train_chunk(loss_fn, opt, make_batch, steps=3)
  >>> params, opt_state, metrics = chunk(params, opt_state, data_keys, 0)  # metrics: (5, 3)
  >>> metrics["loss"].shape
  (5, 3)
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrnn import validation
from jrnn.training.steps import Metrics, make_train_step

_INT64 = (-(2**63), 2**63)  # the seeds jax.random.key takes


def seed_keys(seeds: Union[Sequence[int], jax.Array], n: Optional[int] = None) -> jax.Array:
  """``S`` PRNG keys, one per seed, stacked along a leading axis.

  Args:
    seeds: integer seeds (``seed_keys([0, 1, 2])`` gives ``key(0), key(1), key(2)``: seed ``s``
      run in a stack is the same as seed ``s`` run alone with ``jax.random.key(s)``), or one
      PRNG key to split into ``n``.
    n: with a key, how many keys to split it into; must be ``None`` with integer seeds.

  Returns:
    Typed keys of shape ``(S,)``.

  Raises:
    TypeError: ``seeds`` is one int (``seed_keys(5)`` is ambiguous between seed 5 and five
      seeds: pass ``[5]`` or ``range(5)``), a string, or not iterable.
    ValueError: an empty sequence, a seed that is not an int (``1.5``, ``True``) or outside
      ``[-2**63, 2**63)``, a repeated seed (two identical runs would understate the spread
      over seeds), a key that is not a single key, or a bad ``n``.
  """
  if isinstance(seeds, jax.Array) and jnp.issubdtype(seeds.dtype, jax.dtypes.prng_key):
    if seeds.shape != ():
      raise ValueError(f"seeds must be one key of shape () to split, got shape {seeds.shape}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise ValueError(f"n must be a positive int when seeds is a key, got {n!r}")
    return jax.random.split(seeds, n)
  if n is not None:
    raise ValueError("n is only for splitting a key; with integer seeds leave it None")
  if isinstance(seeds, (numbers.Integral, np.integer)) and not isinstance(seeds, bool):
    raise TypeError(
      f"seeds must be a sequence of ints, got the int {seeds}; pass [{seeds}] for "
      f"that one seed or range({seeds}) for seeds 0..{seeds - 1}"
    )
  if isinstance(seeds, (str, bytes)):
    raise TypeError(f"seeds must be a sequence of ints, got the string {seeds!r}")
  if isinstance(seeds, (np.ndarray, jax.Array)):
    if seeds.ndim != 1 or not jnp.issubdtype(seeds.dtype, jnp.integer):
      raise ValueError(
        f"seeds must be a 1-D array of ints, got {seeds.dtype} of shape {seeds.shape}"
      )
    seeds = np.asarray(seeds).tolist()
  try:
    seeds = list(seeds)
  except TypeError:
    raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}") from None
  if not seeds or any(
    isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) for s in seeds
  ):
    raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
  seeds = [int(s) for s in seeds]
  bad = [s for s in seeds if not _INT64[0] <= s < _INT64[1]]
  if bad:
    raise ValueError(f"seeds must lie in [-2**63, 2**63) (jax.random.key's range), got {bad}")
  repeated = sorted({s for s in seeds if seeds.count(s) > 1})
  if repeated:
    raise ValueError(f"seeds must be distinct, got {repeated} more than once in {seeds}")
  return jnp.stack([jax.random.key(s) for s in seeds])


def init_seeds(
  init_fn: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation, keys: jax.Array
) -> Tuple[Any, Any]:
  """Stacked ``(params, opt_state)``: ``init_fn(keys[s])`` and its optimiser state per seed.

  Args:
    init_fn: ``key -> params``, e.g. ``lambda k: jrnn.init_params(k, I, H, O, scheme=...)``
      (traced: sizes and options are Python values it closes over).
    optimizer: the ``optax.GradientTransformation`` every seed trains with.
    keys: ``(S,)`` PRNG keys (:func:`seed_keys`).

  Returns:
    ``(params, opt_state)``, every leaf with a leading axis ``S``.
  """
  if not callable(init_fn):
    raise TypeError(f"init_fn must be a function key -> params, got {type(init_fn).__name__}")
  if not (isinstance(keys, jax.Array) and jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)):
    raise TypeError(
      f"keys must be typed PRNG keys of shape (S,) (seed_keys), got "
      f"{type(keys).__name__} of dtype {jnp.result_type(keys)} and shape "
      f"{jnp.shape(keys)}"
    )
  if jnp.ndim(keys) != 1:
    raise ValueError(f"keys must have shape (S,), got {jnp.shape(keys)}")

  def one(key):
    params = init_fn(key)
    return params, optimizer.init(params)

  # Compiled: an initialiser run eagerly under vmap dispatches (and compiles) op by op.
  return jax.jit(jax.vmap(one))(keys)


def take_seed(tree: Any, s: int) -> Any:
  """Seed ``s``'s slice of a stacked pytree (every leaf indexed ``[s]``).

  ``s`` is an int in ``[-S, S)`` (negative counts from the end, as Python's indexing), ``S``
  the leading axis every leaf shares. An index out of range is an ``IndexError`` (JAX alone
  would clamp it and return the last seed). A traced ``s`` (inside ``jit``) cannot be checked
  and is clamped into range as JAX does.
  """
  n_seeds = _seed_count("tree", tree)
  if isinstance(s, jax.core.Tracer):
    if jnp.ndim(s) != 0 or not jnp.issubdtype(jnp.result_type(s), jnp.integer):
      raise TypeError(
        f"s must be an integer scalar, got {jnp.result_type(s)} of shape {jnp.shape(s)}"
      )
  elif (
    isinstance(s, (bool, np.bool_))
    or not isinstance(s, (int, np.integer))
    and not (
      isinstance(s, (np.ndarray, jax.Array))
      and s.ndim == 0
      and jnp.issubdtype(s.dtype, jnp.integer)
    )
  ):
    raise TypeError(f"s must be an int seed index, got {s!r}")
  elif n_seeds is not None and not -n_seeds <= int(s) < n_seeds:
    raise IndexError(
      f"seed index s={int(s)} is out of range for {n_seeds} seeds (the leading "
      f"axis): use 0..{n_seeds - 1}, or -{n_seeds}..-1 from the end"
    )
  return jax.tree_util.tree_map(lambda x: x[s], tree)


def _seed_count(
  name: str, tree: Any, expected: Optional[int] = None, expected_from: str = "params"
) -> Optional[int]:
  """``S``, the leading (seed) axis every array leaf of ``tree`` shares; ``None`` for no leaves.

  Raises ``ValueError`` naming the leaf (``name`` and its path) for a leaf without a leading
  axis, for leaves that disagree, or, with ``expected``, for a size other than ``expected``
  (read off ``expected_from``).
  """
  first = None
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    where, shape = name + jax.tree_util.keystr(path), np.shape(leaf)
    if not shape:
      raise ValueError(f"{where} has shape (): every leaf needs a leading seed axis (S, ...)")
    if expected is None:
      expected, first = shape[0], where
    elif shape[0] != expected:
      source = first or expected_from
      raise ValueError(
        f"{where} has {shape[0]} on its leading (seed) axis, but {source} has "
        f"S={expected} seeds; every leaf needs the leading seed axis (S, ...)"
      )
  return expected


def make_multi_seed_train_step(
  loss_fn: Callable[..., Any],
  optimizer: optax.GradientTransformation,
  *,
  has_aux: bool = False,
  batch_axis: Optional[int] = 0,
  jit: bool = True,
  donate: bool = True,
) -> Callable[[Any, Any, Any], Tuple[Any, Any, Metrics]]:
  """:func:`jrnn.training.make_train_step`, ``vmap``-ed over a leading seed axis.

  Args:
    loss_fn, optimizer, has_aux: as :func:`jrnn.training.make_train_step`.
    batch_axis: the seed axis of ``batch``'s leaves: ``0`` for one batch per seed (every leaf
      ``(S, …)``), ``None`` for one batch shared by every seed.
    jit: compile with ``jax.jit``.
    donate: donate ``params`` and ``opt_state``.

  Returns:
    ``step(params, opt_state, batch) -> (params, opt_state, metrics)``: ``params`` and
    ``opt_state`` as :func:`init_seeds` returns them; ``metrics["loss"]`` and
    ``metrics["grad_norm"]`` of shape ``(S,)``. Before it runs, ``step`` checks that every
    leaf of ``params``, ``opt_state`` and (``batch_axis=0``) ``batch`` has the same leading
    seed axis ``S``, and names the leaf that does not (a ``ValueError``).
  """
  if isinstance(batch_axis, bool) or batch_axis not in (0, None):
    raise ValueError(f"batch_axis must be 0 or None, got {batch_axis!r}")
  validation.check_bool("jit", jit)
  validation.check_bool("donate", donate)
  one = make_train_step(loss_fn, optimizer, has_aux=has_aux, jit=False)
  step = jax.vmap(one, in_axes=(0, 0, batch_axis))
  if jit:
    step = jax.jit(step, donate_argnums=(0, 1) if donate else ())

  def checked(params, opt_state, batch):
    # vmap's own message ("inconsistent sizes for array axes") names no argument.
    n_seeds = _seed_count("params", params)
    _seed_count("opt_state", opt_state, n_seeds)
    if batch_axis == 0:
      try:
        _seed_count("batch", batch, n_seeds)
      except ValueError as e:
        raise ValueError(
          f"{e}. For one batch shared by every seed, build the step with batch_axis=None"
        ) from None
    return step(params, opt_state, batch)

  return checked


def make_multi_seed_train_chunk(
  loss_fn: Callable[..., Any],
  optimizer: optax.GradientTransformation,
  make_batch: Callable[[jax.Array, jax.Array], Any],
  *,
  steps: int,
  has_aux: bool = False,
  jit: bool = True,
  donate: bool = True,
) -> Callable[[Any, Any, jax.Array, Any], Tuple[Any, Any, Metrics]]:
  """``steps`` training steps of every seed as one compiled ``lax.scan``.

  Seed ``s`` at step ``k`` trains on ``make_batch(data_keys[s], k)``, drawn on the device: the
  same batches whether the seed runs in a stack or alone and whatever the chunking (``k`` is the
  global step ``start + i``). Fresh data each step is ``fold_in(key, k)``; epochs over a fixed
  set are a permutation from ``fold_in(key, k // steps_per_epoch)``.

  Args:
    loss_fn, optimizer, has_aux: as :func:`jrnn.training.make_train_step`.
    make_batch: ``(data_key, step) -> batch`` for one seed, ``step`` a traced int32 scalar
      (shapes must not depend on either).
    steps: updates per call (positive).
    jit, donate: as :func:`make_multi_seed_train_step`.

  Returns:
    ``chunk(params, opt_state, data_keys, start) -> (params, opt_state, metrics)`` with
    ``data_keys (S,)`` and ``start`` the global index of the chunk's first step;
    ``metrics["loss"]`` and ``metrics["grad_norm"]`` of shape ``(S, steps)``. ``chunk``
    checks that ``params``, ``opt_state`` and ``data_keys`` share the leading seed axis ``S``
    (``ValueError`` naming the leaf) and that ``start`` is an int in ``[0, 2**31 - 1 - steps]``
    (``TypeError`` for ``2.5``, ``ValueError`` for ``-5``; a traced ``start`` is checked for
    its dtype only).
  """
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive int, got {steps!r}")
  if not callable(make_batch):
    raise TypeError(
      f"make_batch must be a function (data_key, step) -> batch, got {type(make_batch).__name__}"
    )
  validation.check_bool("jit", jit)
  validation.check_bool("donate", donate)
  one_step = make_train_step(loss_fn, optimizer, has_aux=has_aux, jit=False)

  def one_seed(params, opt_state, data_key, start):
    def body(carry, k):
      params, opt_state = carry
      params, opt_state, metrics = one_step(params, opt_state, make_batch(data_key, k))
      return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(
      body, (params, opt_state), start + jnp.arange(steps)
    )
    return params, opt_state, metrics

  chunk = jax.vmap(one_seed, in_axes=(0, 0, 0, None))
  if jit:
    chunk = jax.jit(chunk, donate_argnums=(0, 1) if donate else ())

  def checked(params, opt_state, data_keys, start):
    n_seeds = _seed_count("params", params)
    _seed_count("opt_state", opt_state, n_seeds)
    if jnp.ndim(data_keys) < 1:
      raise ValueError(
        f"data_keys must have shape (S,) with S={n_seeds} (one key per seed), "
        f"got {jnp.shape(data_keys)}"
      )
    _seed_count("data_keys", data_keys, n_seeds)
    _check_start(start, steps)
    return chunk(params, opt_state, data_keys, start)

  return checked


_INT32_MAX = 2**31 - 1


def _check_start(start, steps: int) -> None:
  """``start``: an int ``>= 0`` (the global index of the chunk's first step); concrete values
  are range-checked, a traced integer scalar only for its type."""
  if isinstance(start, (jax.core.Tracer, np.ndarray, np.generic, jax.Array)):
    if jnp.ndim(start) != 0 or not jnp.issubdtype(jnp.result_type(start), jnp.integer):
      raise TypeError(
        f"start must be an int step index >= 0, got {jnp.result_type(start)} of "
        f"shape {jnp.shape(start)}"
      )
    if isinstance(start, jax.core.Tracer):
      return
  elif isinstance(start, (bool, np.bool_)) or not isinstance(start, (int, np.integer)):
    raise TypeError(f"start must be an int step index >= 0, got {start!r}")
  if not 0 <= int(start) <= _INT32_MAX - steps:
    raise ValueError(
      f"start must be an int in [0, {_INT32_MAX - steps}] (step indices are "
      f"int32; this chunk runs {steps} steps), got {int(start)}"
    )


__all__ = (
  "init_seeds",
  "make_multi_seed_train_chunk",
  "make_multi_seed_train_step",
  "seed_keys",
  "take_seed",
)
