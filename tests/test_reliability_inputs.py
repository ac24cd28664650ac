"""Bad inputs to the library raise errors that name the argument: step, the losses, PRNG keys,
booleans, sample_tokens, the dropout key (docs/reliability.md lists them)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn.init import check_key
from jrnn.training import sample_tokens
from jrnn.training import steps as jtrain

I, H, O, B = 3, 4, 2, 5


@pytest.fixture(name="params", scope="module")
def _params():
  return jrnn.init_params(jax.random.key(0), I, H, O, dtype=jnp.float64)


@pytest.mark.parametrize("change,error,match", [
    (lambda p: p._replace(w_hh=jnp.zeros((H, H + 1))), ValueError, r"params.w_hh must be square"),
    (lambda p: p._replace(b_h=jnp.zeros(H + 1)), ValueError, r"params.b_h must have shape"),
    (lambda p: p._replace(w_hy=jnp.zeros((O, H + 1))), ValueError, r"params.w_hy must have shape"),
    (lambda p: p._replace(b_y=jnp.zeros(O, jnp.int32)), TypeError,
     r"params.b_y must have a floating"),
    (lambda p: p._replace(w_xh=p.w_xh.astype(jnp.float32)), TypeError, r"params.w_xh has dtype"),
    (lambda p: tuple(p), TypeError, r"params must be RNNParams or LayerParams, got tuple"),
])
def test_step_checks_params(params, change, error, match):
  with pytest.raises(error, match=match):
    jrnn.step(change(params), jnp.zeros(H, jnp.float64), jnp.zeros(I, jnp.float64))


def test_step_checks_batch_axes_and_activations(params):
  h, x = jnp.zeros((B, H), jnp.float64), jnp.zeros((B + 1, I), jnp.float64)
  with pytest.raises(ValueError, match=r"h and x must share their batch axis.*\(5, 4\) and "
                     r"\(6, 3\)"):
    jrnn.step(params, h, x)
  with pytest.raises(ValueError, match=r"h and x must share"):
    jrnn.step(params, h, jnp.zeros(I, jnp.float64))
  with pytest.raises(ValueError, match="activation"):
    jrnn.step(params, h[0], x[0], activation="bogus")
  with pytest.raises(ValueError, match="output_activation"):
    jrnn.step(params, h[0], x[0], output_activation="bogus")
  # A state shared by the batch works, as forward's h0 does.
  h_new, y = jrnn.step(params, h[0], jnp.ones((B, I), jnp.float64))
  assert h_new.shape == (B, H) and y.shape == (B, O)
  h_list, _ = jrnn.step(params, [0.0] * H, [1.0] * I)  # nested lists, as forward takes
  assert h_list.shape == (H,)


@pytest.mark.parametrize("call,error,match", [
    (lambda: jrnn.squared_error(1.0, 1.0), ValueError, r"ys must have shape \(\.\.\., O\)"),
    (lambda: jrnn.squared_error(None, jnp.zeros((2, 1))), TypeError, "ys must be an array"),
    (lambda: jrnn.squared_error("a", "b"), TypeError, "ys must be an array, got str"),
    (lambda: jrnn.squared_error(jnp.zeros((2, 1)), jnp.zeros((2, 1)), "yes"), TypeError,
     "mask must be an array"),
    (lambda: jrnn.squared_error(jnp.zeros((2, 1)), jnp.zeros((2, 1)), reduction=None),
     ValueError, "reduction must be one of"),
    (lambda: jrnn.softmax_cross_entropy(jnp.zeros(()), jnp.zeros((), jnp.int32)), ValueError,
     r"logits must have shape \(\.\.\., O\)"),
    (lambda: jrnn.softmax_cross_entropy(jnp.zeros((2, 0)), jnp.zeros(2, jnp.int32)),
     ValueError, "at least one class"),
    (lambda: jrnn.softmax_cross_entropy(None, jnp.zeros(2, jnp.int32)), TypeError,
     "logits must be an array"),
    (lambda: jrnn.reduce_steps(None), TypeError, "per_step must be an array"),
])
def test_losses_name_the_bad_argument(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_losses_take_nested_lists():
  got = jrnn.squared_error([[1.0, 2.0]], [[1.0, 0.0]], [1])
  np.testing.assert_allclose(got, 4.0)
  got = jrnn.softmax_cross_entropy([[0.0, 0.0]], [1])
  np.testing.assert_allclose(got, np.log(2.0))


@pytest.mark.parametrize("key,match", [
    (0, r"key must be a PRNG key such as jax.random.key\(0\).*got 0"),
    (None, "got None"),
    (np.zeros(2, np.float32), "dtype float32 and shape"),
    (np.zeros(3, np.uint32), r"dtype uint32 and shape \(3,\)"),
])
def test_init_rejects_what_is_not_a_key(key, match):
  for init in (lambda k: jrnn.init_params(k, I, H, O), lambda k: jrnn.init_layer(k, I, H),
               lambda k: jrnn.init_stacked(k, I, H, O)):
    with pytest.raises(TypeError, match=match):
      init(key)


def test_keys_single_raw_and_traced():
  with pytest.raises(TypeError, match=r"a single PRNG key.*shape \(2,\).*key\[0\]"):
    jrnn.init_params(jax.random.split(jax.random.key(0)), I, H, O)
  raw = jrnn.init_params(jax.random.PRNGKey(0), I, H, O)  # legacy raw keys still work
  assert raw.w_hh.shape == (H, H)
  jax.jit(lambda k: check_key("key", k))(jax.random.key(0))
  with pytest.raises(TypeError, match="key must be a PRNG key"):
    jax.jit(lambda k: check_key("key", k))(jnp.zeros(2))


@pytest.mark.parametrize("kwargs,name", [(dict(bidirectional="no"), "bidirectional"),
                                         (dict(bidirectional=1), "bidirectional"),
                                         (dict(learn_h0="yes"), "learn_h0")])
def test_booleans_are_booleans(kwargs, name):
  with pytest.raises(TypeError, match=f"{name} must be True or False"):
    jrnn.init_stacked(jax.random.key(0), I, H, O, **kwargs)


def test_sample_tokens_checks_key_length_and_prime():
  lm = jrnn.init_params(jax.random.key(1), 5, H, 5)
  prime = jnp.asarray([1, 2], jnp.int32)
  with pytest.raises(TypeError, match="key must be a PRNG key"):
    sample_tokens(lm, 0, prime, 3)
  with pytest.raises(ValueError, match=r"length must be an int >= 0, got -1"):
    sample_tokens(lm, jax.random.key(0), prime, -1)
  with pytest.raises(TypeError, match="prime must hold integer tokens"):
    sample_tokens(lm, jax.random.key(0), prime.astype(jnp.float32), 3)
  with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
    sample_tokens(lm, jax.random.key(0), prime, 3, temperature=float("inf"))


def test_dropout_key_is_checked(params):
  loss = jtrain.sequence_loss("squared_error", dropout=0.5)
  batch = jtrain.Batch(jnp.zeros((2, B, I), jnp.float64), jnp.zeros((2, B, O), jnp.float64),
                       key=123)
  with pytest.raises(TypeError, match="batch.key must be a PRNG key"):
    loss(params, batch)


def test_guarded_step_skips_a_non_finite_update(params):
  loss = jtrain.sequence_loss("squared_error")
  opt = optax.sgd(0.1)
  step = jtrain.make_train_step(loss, opt, has_aux=True, donate=False, guard=True)
  xs = jnp.ones((2, B, I), jnp.float64)
  good = jtrain.Batch(xs, jnp.zeros((2, B, O), jnp.float64))
  new, _, m = step(params, opt.init(params), good)
  assert bool(m["ok"]) and not np.array_equal(new.w_hh, params.w_hh)
  bad = good._replace(xs=xs * jnp.nan)
  same, _, m = step(params, opt.init(params), bad)
  assert not bool(m["ok"]) and np.isnan(float(m["loss"]))
  for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(a, b)
