"""Several seeds as one vmapped program equal each seed run alone (float64)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn.data import adding
from jrnn.training import seeds
from jrnn.training.steps import make_train_step

F64 = jnp.float64
SEEDS = [0, 3, 7]
T, B, H = 6, 4, 5


def _init(key):
  return jrnn.init_params(key, 2, H, 1, scheme="orthogonal", dtype=F64)


def _loss(params, batch):
  ys = jrnn.forward(params, batch.xs, activation="tanh").ys[-1]
  return jrnn.squared_error(ys, batch.targets[:, None], reduction="mean")


def _make_batch(key, k):
  return adding.batch(jax.random.fold_in(key, k), B, T, dtype=F64)


# Clipping by a small norm and Adam's moments: both kinds of optimiser state are per seed.
OPT = jrnn.training.make_optimizer("adam", 1e-2, clip_norm=0.05)


def _seed(tree, s):
  """Seed ``s``'s slice, taken in NumPy (an eager JAX index compiles once per leaf shape)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x)[s], tree)


def _assert_trees_close(a, b, rtol=1e-11, atol=1e-13):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# Eager calls compile op by op; these run the same functions compiled once.
_INIT = jax.jit(lambda key: (_init(key), OPT.init(_init(key))))
_BATCH = jax.jit(_make_batch)


@functools.lru_cache(maxsize=None)
def _alone(seed, n_steps):
  """Seed ``seed`` trained by itself with the ordinary train step (one compiled step for all)."""
  key = jax.random.key(seed)
  params, opt_state = _INIT(key)
  losses = []
  for k in range(n_steps):
    params, opt_state, metrics = _STEP(params, opt_state, _BATCH(key, k))
    losses.append(float(metrics["loss"]))
  return (params, opt_state, np.array(losses)) if n_steps else (params, opt_state)


_STEP = make_train_step(_loss, OPT, donate=False)


_SEED_BATCHES = jax.jit(jax.vmap(_make_batch, in_axes=(0, None)))


@pytest.fixture(scope="module")
def stacked():
  """``(keys, params, opt_state)`` of SEEDS, built once (steps below never donate them)."""
  keys = seeds.seed_keys(SEEDS)
  params, opt_state = seeds.init_seeds(_init, OPT, keys)
  return keys, params, opt_state


@pytest.mark.slow
def test_init_seeds_stacks_each_seed_init(stacked):
  _, params, opt_state = stacked
  assert params.w_hh.shape == (len(SEEDS), H, H)
  for s, seed in enumerate(SEEDS):
    want, want_state = _alone(seed, 0)
    _assert_trees_close(_seed(params, s), want, 1e-15, 0)
    _assert_trees_close(_seed(opt_state, s), want_state, 1e-15, 0)


@pytest.mark.parametrize("jit", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_multi_seed_step_equals_each_seed_alone(jit, stacked):
  # Without jit the vmapped step runs op by op (about 25 s of compiling small ops): slow.
  keys, params, opt_state = stacked
  step = seeds.make_multi_seed_train_step(_loss, OPT, jit=jit, donate=False)
  losses = []
  for k in range(3):
    params, opt_state, metrics = step(params, opt_state, _SEED_BATCHES(keys, k))
    assert metrics["loss"].shape == (len(SEEDS),)
    losses.append(metrics["loss"])
  losses = np.stack(losses, axis=1)
  for s, seed in enumerate(SEEDS):
    want_params, want_state, want_losses = _alone(seed, 3)
    np.testing.assert_allclose(losses[s], want_losses, rtol=1e-12)
    _assert_trees_close(_seed(params, s), want_params)
    _assert_trees_close(_seed(opt_state, s), want_state)


@pytest.mark.slow
def test_chunk_equals_each_seed_alone_whatever_the_chunking(stacked):
  keys, params, opt_state = stacked
  chunk = seeds.make_multi_seed_train_chunk(_loss, OPT, _make_batch, steps=3, donate=False)
  params, opt_state, m1 = chunk(params, opt_state, keys, 0)
  params, opt_state, m2 = chunk(params, opt_state, keys, 3)
  assert m1["loss"].shape == (len(SEEDS), 3) and m1["grad_norm"].shape == (len(SEEDS), 3)
  losses = np.concatenate([m1["loss"], m2["loss"]], axis=1)
  for s, seed in enumerate(SEEDS):
    want_params, want_state, want_losses = _alone(seed, 6)
    np.testing.assert_allclose(losses[s], want_losses, rtol=1e-12)
    _assert_trees_close(_seed(params, s), want_params)
    _assert_trees_close(_seed(opt_state, s), want_state)


def test_shared_batch(stacked):
  _, params, opt_state = stacked
  batch = _BATCH(jax.random.key(9), 0)
  step = seeds.make_multi_seed_train_step(_loss, OPT, batch_axis=None, donate=False)
  new, new_state, metrics = step(params, opt_state, batch)
  for s in range(len(SEEDS)):
    want, want_state, want_metrics = _STEP(_seed(params, s),
                                           _seed(opt_state, s), batch)
    _assert_trees_close(_seed(new, s), want)
    _assert_trees_close(_seed(new_state, s), want_state)
    np.testing.assert_allclose(metrics["loss"][s], want_metrics["loss"], rtol=1e-12)
  assert len(set(np.asarray(metrics["loss"]).tolist())) == len(SEEDS)  # distinct inits


def test_seed_keys():
  keys = seeds.seed_keys([4, 2])
  assert keys.shape == (2,)
  np.testing.assert_array_equal(jax.random.key_data(keys[1]),
                                jax.random.key_data(jax.random.key(2)))
  np.testing.assert_array_equal(seeds.take_seed({"a": jnp.arange(6).reshape(3, 2)}, 1)["a"],
                                [2, 3])
  split = seeds.seed_keys(jax.random.key(0), 3)
  np.testing.assert_array_equal(jax.random.key_data(split),
                                jax.random.key_data(jax.random.split(jax.random.key(0), 3)))


def test_bad_arguments():
  with pytest.raises(ValueError, match="seeds must be a non-empty sequence of ints"):
    seeds.seed_keys([])
  with pytest.raises(ValueError, match="seeds must be a non-empty sequence of ints"):
    seeds.seed_keys([0, 1.5])
  with pytest.raises(ValueError, match="n must be a positive int when seeds is a key"):
    seeds.seed_keys(jax.random.key(0))
  with pytest.raises(ValueError, match="n is only for splitting a key"):
    seeds.seed_keys([0, 1], 2)
  with pytest.raises(ValueError, match=r"keys must have shape \(S,\)"):
    seeds.init_seeds(_init, optax.sgd(0.1), jax.random.key(0))
  with pytest.raises(ValueError, match="batch_axis must be 0 or None, got 1"):
    seeds.make_multi_seed_train_step(_loss, optax.sgd(0.1), batch_axis=1)
  with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
    seeds.make_multi_seed_train_chunk(_loss, optax.sgd(0.1), _make_batch, steps=0)
