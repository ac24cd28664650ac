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

  >>> keys = seed_keys([0, 1, 2, 3, 4])
  >>> params, opt_state = init_seeds(lambda k: jrnn.init_params(k, 2, 32, 1), opt, keys)
  >>> make_batch = lambda key, k: adding.batch(jax.random.fold_in(key, k), 32, 100)
  >>> chunk = make_multi_seed_train_chunk(loss_fn, opt, make_batch, steps=100)
  >>> params, opt_state, metrics = chunk(params, opt_state, data_keys, 0)  # metrics: (5, 100)
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import optax

from jrnn.training.steps import Metrics, make_train_step


def seed_keys(seeds: Union[Sequence[int], jax.Array], n: Optional[int] = None) -> jax.Array:
  """``S`` PRNG keys, one per seed, stacked along a leading axis.

  Args:
    seeds: integer seeds (``seed_keys([0, 1, 2])`` gives ``key(0), key(1), key(2)``: seed ``s``
      run in a stack is the same as seed ``s`` run alone with ``jax.random.key(s)``), or one
      PRNG key to split into ``n``.
    n: with a key, how many keys to split it into; must be ``None`` with integer seeds.

  Returns:
    Typed keys of shape ``(S,)``.
  """
  if isinstance(seeds, jax.Array) and jnp.issubdtype(seeds.dtype, jax.dtypes.prng_key):
    if seeds.shape != ():
      raise ValueError(f"seeds must be one key of shape () to split, got shape {seeds.shape}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise ValueError(f"n must be a positive int when seeds is a key, got {n!r}")
    return jax.random.split(seeds, n)
  if n is not None:
    raise ValueError("n is only for splitting a key; with integer seeds leave it None")
  seeds = list(seeds)
  if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
    raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
  return jnp.stack([jax.random.key(s) for s in seeds])


def init_seeds(init_fn: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
               keys: jax.Array) -> Tuple[Any, Any]:
  """Stacked ``(params, opt_state)``: ``init_fn(keys[s])`` and its optimiser state per seed.

  Args:
    init_fn: ``key -> params``, e.g. ``lambda k: jrnn.init_params(k, I, H, O, scheme=...)``
      (traced: sizes and options are Python values it closes over).
    optimizer: the ``optax.GradientTransformation`` every seed trains with.
    keys: ``(S,)`` PRNG keys (:func:`seed_keys`).

  Returns:
    ``(params, opt_state)``, every leaf with a leading axis ``S``.
  """
  if jnp.ndim(keys) != 1:
    raise ValueError(f"keys must have shape (S,), got {jnp.shape(keys)}")

  def one(key):
    params = init_fn(key)
    return params, optimizer.init(params)

  # Compiled: an initialiser run eagerly under vmap dispatches (and compiles) op by op.
  return jax.jit(jax.vmap(one))(keys)


def take_seed(tree: Any, s: int) -> Any:
  """Seed ``s``'s slice of a stacked pytree (every leaf indexed ``[s]``)."""
  return jax.tree_util.tree_map(lambda x: x[s], tree)


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
    ``metrics["grad_norm"]`` of shape ``(S,)``.
  """
  if batch_axis not in (0, None):
    raise ValueError(f"batch_axis must be 0 or None, got {batch_axis!r}")
  one = make_train_step(loss_fn, optimizer, has_aux=has_aux, jit=False)
  step = jax.vmap(one, in_axes=(0, 0, batch_axis))
  if not jit:
    return step
  return jax.jit(step, donate_argnums=(0, 1) if donate else ())


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
    ``metrics["loss"]`` and ``metrics["grad_norm"]`` of shape ``(S, steps)``.
  """
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive int, got {steps!r}")
  one_step = make_train_step(loss_fn, optimizer, has_aux=has_aux, jit=False)

  def one_seed(params, opt_state, data_key, start):
    def body(carry, k):
      params, opt_state = carry
      params, opt_state, metrics = one_step(params, opt_state,
                                            make_batch(data_key, k))
      return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state),
                                                start + jnp.arange(steps))
    return params, opt_state, metrics

  chunk = jax.vmap(one_seed, in_axes=(0, 0, 0, None))
  if not jit:
    return chunk
  return jax.jit(chunk, donate_argnums=(0, 1) if donate else ())


__all__ = (
    "init_seeds",
    "make_multi_seed_train_chunk",
    "make_multi_seed_train_step",
    "seed_keys",
    "take_seed",
)
