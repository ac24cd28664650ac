"""Red-team probes of jrnn.training.seeds, sample_tokens and sequence_loss's one_hot kept as a
table: each bad input, the error it must raise and a fragment of the message
(docs/reliability.md, issue 24).

The checks run before anything is traced or compiled, so the table uses NumPy arrays and a
trivial loss; the few behaviour tests at the end compile one tiny program each.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn.training import Batch, sample_tokens, seeds, sequence_loss

S, V, H, T, B = 2, 4, 3, 5, 2
OPT = optax.adam(0.1)


def _loss(params, batch):
  return jnp.sum(params["w"] * batch)


def _stack(tree, n):
  return jax.tree.map(lambda x: np.stack([np.asarray(x)] * n), tree)


PARAMS = {"w": np.zeros((S, 3))}
OPT_STATE = _stack(OPT.init({"w": np.zeros(3)}), S)
KEYS = seeds.seed_keys([0, 1])
STEP = seeds.make_multi_seed_train_step(_loss, OPT, donate=False)
CHUNK = seeds.make_multi_seed_train_chunk(_loss, OPT, lambda key, k: jnp.ones(3), steps=2,
                                          donate=False)


def _lm(**over):
  """float64 RNNParams over V tokens, zeros except ``over``."""
  p = jrnn.RNNParams(np.zeros((H, V)), np.zeros((H, H)), np.zeros(H), np.zeros((V, H)),
                     np.zeros(V))
  return p._replace(**over)


def _tokens(*values):
  return np.asarray(values, np.int32)


ROWS = [
    # --- seed_keys ---
    ("seed_keys(5)", lambda: seeds.seed_keys(5),
     TypeError, r"seeds must be a sequence of ints, got the int 5; pass \[5\] .* range\(5\)"),
    ("seed_keys(np.int64(5))", lambda: seeds.seed_keys(np.int64(5)),
     TypeError, "got the int 5"),
    ("seed_keys('012')", lambda: seeds.seed_keys("012"), TypeError, "got the string '012'"),
    ("seed_keys(None)", lambda: seeds.seed_keys(None),
     TypeError, "seeds must be a sequence of ints, got NoneType"),
    ("seed_keys([])", lambda: seeds.seed_keys([]),
     ValueError, "seeds must be a non-empty sequence of ints"),
    ("seed_keys([0, 1.5])", lambda: seeds.seed_keys([0, 1.5]),
     ValueError, r"non-empty sequence of ints, got \[0, 1.5\]"),
    ("seed_keys([True, 1])", lambda: seeds.seed_keys([True, 1]),
     ValueError, "non-empty sequence of ints"),
    ("seed_keys([0, 0])", lambda: seeds.seed_keys([0, 3, 0]),
     ValueError, r"seeds must be distinct, got \[0\] more than once"),
    ("seed_keys([2**64])", lambda: seeds.seed_keys([2 ** 64]),
     ValueError, r"seeds must lie in \[-2\*\*63, 2\*\*63\)"),
    ("seed_keys 2-D int array", lambda: seeds.seed_keys(np.zeros((2, 2), np.int32)),
     ValueError, r"seeds must be a 1-D array of ints, got int32 of shape \(2, 2\)"),
    ("seed_keys float array", lambda: seeds.seed_keys(np.zeros(2)),
     ValueError, "seeds must be a 1-D array of ints, got float64"),
    ("seed_keys(key, 2.0)", lambda: seeds.seed_keys(jax.random.key(0), 2.0),
     ValueError, "n must be a positive int when seeds is a key, got 2.0"),
    ("seed_keys(keys of shape (2,), 2)", lambda: seeds.seed_keys(KEYS, 2),
     ValueError, r"seeds must be one key of shape \(\) to split, got shape \(2,\)"),
    ("seed_keys([0, 1], 2)", lambda: seeds.seed_keys([0, 1], 2),
     ValueError, "n is only for splitting a key"),
    # --- take_seed ---
    ("take_seed(params, 5) with 2 seeds", lambda: seeds.take_seed(PARAMS, 5),
     IndexError, r"seed index s=5 is out of range for 2 seeds .* 0\.\.1, or -2\.\.-1"),
    ("take_seed(params, -3) with 2 seeds", lambda: seeds.take_seed(PARAMS, -3),
     IndexError, "seed index s=-3 is out of range for 2 seeds"),
    ("take_seed(params, 1.0)", lambda: seeds.take_seed(PARAMS, 1.0),
     TypeError, "s must be an int seed index, got 1.0"),
    ("take_seed(params, True)", lambda: seeds.take_seed(PARAMS, True),
     TypeError, "s must be an int seed index, got True"),
    ("take_seed(params, '0')", lambda: seeds.take_seed(PARAMS, "0"),
     TypeError, "s must be an int seed index, got '0'"),
    ("take_seed leaves with differing seed axes",
     lambda: seeds.take_seed({"w": np.zeros((2, 3)), "x": np.zeros(3)}, 0),
     ValueError, r"tree\['x'\] has 3 on its leading \(seed\) axis, but tree\['w'\] has S=2"),
    ("take_seed a scalar leaf", lambda: seeds.take_seed({"w": np.float64(1.0)}, 0),
     ValueError, r"tree\['w'\] has shape \(\): every leaf needs a leading seed axis"),
    # --- init_seeds ---
    ("init_seeds(None, ...)", lambda: seeds.init_seeds(None, OPT, KEYS),
     TypeError, "init_fn must be a function key -> params, got NoneType"),
    ("init_seeds raw uint32 keys",
     lambda: seeds.init_seeds(lambda k: k, OPT, np.zeros((2, 2), np.uint32)),
     TypeError, r"keys must be typed PRNG keys of shape \(S,\) \(seed_keys\), got ndarray of "
                r"dtype uint32 and shape \(2, 2\)"),
    ("init_seeds one key", lambda: seeds.init_seeds(lambda k: k, OPT, jax.random.key(0)),
     ValueError, r"keys must have shape \(S,\), got \(\)"),
    # --- make_multi_seed_train_step and its step ---
    ("step batch_axis=False",
     lambda: seeds.make_multi_seed_train_step(_loss, OPT, batch_axis=False),
     ValueError, "batch_axis must be 0 or None, got False"),
    ("step batch_axis=1", lambda: seeds.make_multi_seed_train_step(_loss, OPT, batch_axis=1),
     ValueError, "batch_axis must be 0 or None, got 1"),
    ("step jit='no'", lambda: seeds.make_multi_seed_train_step(_loss, OPT, jit="no"),
     TypeError, "jit must be True or False, got 'no'"),
    ("step donate='no'", lambda: seeds.make_multi_seed_train_step(_loss, OPT, donate="no"),
     TypeError, "donate must be True or False, got 'no'"),
    ("step batch without the seed axis", lambda: STEP(PARAMS, OPT_STATE, np.ones(3)),
     ValueError, r"batch has 3 on its leading \(seed\) axis, but params has S=2 seeds.*"
                 "batch_axis=None"),
    ("step batch with another seed count", lambda: STEP(PARAMS, OPT_STATE, np.ones((3, 3))),
     ValueError, r"batch has 3 on its leading \(seed\) axis, but params has S=2"),
    ("step opt_state with another seed count",
     lambda: STEP(PARAMS, _stack(OPT.init({"w": np.zeros(3)}), 3), np.ones((S, 3))),
     ValueError, r"opt_state\[0\].count has 3 on its leading \(seed\) axis, but params has S=2"),
    ("step params with differing seed axes",
     lambda: STEP({"w": np.zeros((2, 3)), "v": np.zeros((3, 3))}, OPT_STATE, np.ones((S, 3))),
     ValueError, r"params\['w'\] has 2 on its leading \(seed\) axis, but params\['v'\] has S=3"),
    # --- make_multi_seed_train_chunk and its chunk ---
    ("chunk make_batch=None",
     lambda: seeds.make_multi_seed_train_chunk(_loss, OPT, None, steps=2),
     TypeError, "make_batch must be a function"),
    ("chunk steps=2.0",
     lambda: seeds.make_multi_seed_train_chunk(_loss, OPT, lambda k, i: k, steps=2.0),
     ValueError, "steps must be a positive int, got 2.0"),
    ("chunk jit='no'",
     lambda: seeds.make_multi_seed_train_chunk(_loss, OPT, lambda k, i: k, steps=2, jit="no"),
     TypeError, "jit must be True or False"),
    ("chunk start=2.5", lambda: CHUNK(PARAMS, OPT_STATE, KEYS, 2.5),
     TypeError, "start must be an int step index >= 0, got 2.5"),
    ("chunk start=-5", lambda: CHUNK(PARAMS, OPT_STATE, KEYS, -5),
     ValueError, r"start must be an int in \[0, 2147483645\] .* got -5"),
    ("chunk start=True", lambda: CHUNK(PARAMS, OPT_STATE, KEYS, True),
     TypeError, "start must be an int step index >= 0, got True"),
    ("chunk start float array", lambda: CHUNK(PARAMS, OPT_STATE, KEYS, np.float32(1.0)),
     TypeError, "start must be an int step index >= 0, got float32"),
    ("chunk start past int32", lambda: CHUNK(PARAMS, OPT_STATE, KEYS, 2 ** 31),
     ValueError, r"step indices are int32; this chunk runs 2 steps\), got 2147483648"),
    ("chunk data_keys for 3 seeds",
     lambda: CHUNK(PARAMS, OPT_STATE, seeds.seed_keys([0, 1, 2]), 0),
     ValueError, r"data_keys has 3 on its leading \(seed\) axis, but params has S=2"),
    ("chunk one data key", lambda: CHUNK(PARAMS, OPT_STATE, jax.random.key(0), 0),
     ValueError, r"data_keys must have shape \(S,\) with S=2 \(one key per seed\), got \(\)"),
    # --- sample_tokens ---
    ("sample_tokens prime token past V", lambda: sample_tokens(_lm(), KEYS[0], _tokens(0, 9), 3),
     ValueError, r"prime must hold tokens in \[0, V=4\) .* got tokens from 0 to 9"),
    ("sample_tokens negative prime token",
     lambda: sample_tokens(_lm(), KEYS[0], _tokens(-1, 2), 3),
     ValueError, r"prime must hold tokens in \[0, V=4\) .* got tokens from -1 to 2"),
    ("sample_tokens NaN params",
     lambda: sample_tokens(_lm(w_hh=np.full((H, H), np.nan)), KEYS[0], _tokens(1), 3),
     ValueError, r"params must be finite to sample from, but params.w_hh holds NaN or inf"),
    ("sample_tokens inf readout bias",
     lambda: sample_tokens(_lm(b_y=np.full(V, np.inf)), KEYS[0], _tokens(1), 3),
     ValueError, r"params.b_y holds NaN or inf"),
    ("sample_tokens a dict of params", lambda: sample_tokens({"w": 1}, KEYS[0], _tokens(1), 3),
     TypeError, "params must be RNNParams or StackedParams, got dict"),
    # --- sequence_loss(one_hot=V) ---
    ("sequence_loss(one_hot=3) with token 7",
     lambda: sequence_loss(one_hot=3)(_lm(w_xh=np.zeros((H, 3))),  # I = 3 tokens in, V out
                                      Batch(np.full((T, B), 7), np.zeros((T, B), int))),
     ValueError, r"batch.xs must hold tokens in \[0, one_hot=3\), got tokens from 7 to 7"),
    ("sequence_loss(one_hot=4) with token -1",
     lambda: sequence_loss(one_hot=4)(_lm(), Batch(np.asarray([[0, -1]] * T),
                                                   np.zeros((T, B), int))),
     ValueError, r"batch.xs must hold tokens in \[0, one_hot=4\), got tokens from -1 to 0"),
]


@pytest.mark.parametrize("label, call, exc, fragment", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_by_name(label, call, exc, fragment):
  with pytest.raises(exc, match=fragment):
    call()


def test_the_good_inputs_beside_the_table_work():
  """The rows' good baselines: each row fails for its one bad entry."""
  np.testing.assert_array_equal(jax.random.key_data(seeds.seed_keys(np.arange(2))),
                                jax.random.key_data(KEYS))
  np.testing.assert_array_equal(jax.random.key_data(seeds.seed_keys(range(2))),
                                jax.random.key_data(KEYS))
  tree = {"w": np.arange(6).reshape(2, 3)}
  np.testing.assert_array_equal(seeds.take_seed(tree, -1)["w"], [3, 4, 5])
  np.testing.assert_array_equal(seeds.take_seed(tree, np.int64(1))["w"], [3, 4, 5])
  # A traced index cannot be checked; it is JAX's clamped index, as documented.
  np.testing.assert_array_equal(jax.jit(seeds.take_seed)(tree, 1)["w"], [3, 4, 5])
  params, _, metrics = STEP(PARAMS, OPT_STATE, np.ones((S, 3)))
  assert params["w"].shape == (S, 3) and metrics["loss"].shape == (S,)
  params, _, metrics = CHUNK(PARAMS, OPT_STATE, KEYS, np.int32(4))
  assert metrics["loss"].shape == (S, 2)


def test_sample_tokens_good_prime_still_samples():
  tokens = sample_tokens(_lm(), KEYS[0], [0, 3], 3)  # a list prime is taken as an array
  assert tokens.shape == (3,) and bool(jnp.all((tokens >= 0) & (tokens < V)))


@pytest.mark.slow
def test_one_hot_token_out_of_range_under_jit_is_nan_not_silent():
  """Traced tokens cannot be checked: the loss and every gradient are NaN, never a quiet
  zero input; in range, the loss is the eager one."""
  params = _lm(w_hy=np.ones((V, H)))
  loss = sequence_loss(one_hot=V)
  good = Batch(np.asarray([[0, 3]] * T), np.zeros((T, B), int))
  bad_xs = good.xs.copy()
  bad_xs[2, 1] = 7
  bad = good._replace(xs=bad_xs)
  value_and_grad = jax.jit(jax.value_and_grad(lambda p, b: loss(p, b)[0]))
  value, grads = value_and_grad(params, good)
  np.testing.assert_allclose(value, loss(params, good)[0], rtol=1e-12)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  value, grads = value_and_grad(params, bad)
  assert np.isnan(value)
  assert bool(jnp.isnan(grads.w_hy).any())
