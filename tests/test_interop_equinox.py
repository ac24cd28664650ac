"""jrnn.interop.equinox: the modules are jrnn.forward and jrnn.stacked_forward as Equinox
modules (fields under jrnn's names, one sequence or a batch), under Equinox's transformations."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

eqx = pytest.importorskip("equinox")
optax = pytest.importorskip("optax")

from jrnn.interop import equinox as jeqx  # noqa: E402

B, T, I, H, O = 3, 6, 4, 5, 2  # all different: a transposed weight cannot pass
F64 = jnp.float64
LENGTHS = jnp.array([6, 2, 4])


def _xs(seed=1, shape=(B, T, I)):
  # NumPy draws test data: jax.random compiles once per shape, which costs more than the tests.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def _close(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)


def _loss(carry, outputs):
  """Weighs every output and carry entry differently, so that no error cancels."""
  w_out = jnp.cos(jnp.arange(outputs.size, dtype=F64)).reshape(outputs.shape)
  w_c = jnp.sin(jnp.arange(carry.size, dtype=F64)).reshape(carry.shape)
  return jnp.sum(w_out * outputs ** 2) + jnp.sum(w_c * carry)


def _value_and_grad(fn, arg):
  """``(fn(arg), grad of _loss(*fn(arg)))``, compiled once (``eqx.filter_jit``)."""
  def f(a):
    out = fn(a)
    return _loss(*out), out
  (_, out), grads = eqx.filter_jit(eqx.filter_value_and_grad(f, has_aux=True))(arg)
  return out, grads


def test_layer_is_jrnn_init_and_forward():
  key = jax.random.key(7)
  model = jeqx.ElmanRNN(I, H, O, learn_h0=True, activation="relu", grad="autodiff",
                        scheme="glorot", return_carry=True, dtype=F64, key=key)
  _close(model.params, jrnn.init_params(key, I, H, O, scheme="glorot", learn_h0=True, dtype=F64))
  model = eqx.tree_at(lambda m: m.b_h, model, jnp.linspace(-1, 1, H))  # nonzero b_h and h0
  model = eqx.tree_at(lambda m: m.h0, model, jnp.linspace(0.5, -0.5, H))
  xs = _xs()

  def ref(p):
    out = jrnn.forward(p, xs, lengths=LENGTHS, time_major=False, activation="relu",
                       grad="autodiff")
    return out.h_last, out.ys

  got, grads = _value_and_grad(lambda m: m(xs, lengths=LENGTHS), model)
  want, g_params = _value_and_grad(ref, model.params)
  _close(got, want)
  _close(grads.params, g_params)  # the gradient is a module: its fields are jrnn's


def test_states_without_readout_reverse_time_major_and_h0():
  model = jeqx.ElmanRNN(I, H, reverse=True, time_major=True, scheme="glorot", return_carry=True,
                        dtype=F64, key=jax.random.key(0))
  assert model.w_hy is None and model.b_y is None
  xs, h0 = _xs(shape=(T, B, I)), 0.3 * jnp.ones((B, H), F64)
  carry, hs = eqx.filter_jit(lambda m: m(xs, h0=h0))(model)
  p = model.params._replace(w_hy=jnp.ones((1, H), F64), b_y=jnp.zeros((1,), F64))
  want = jax.jit(lambda p: jrnn.forward(p, xs, h0=h0, reverse=True))(p)
  _close((carry, hs), (want.h_last, want.hs))


@pytest.mark.slow
def test_stack_is_jrnn_init_and_stacked_forward():
  key = jax.random.key(3)
  model = jeqx.StackedElmanRNN(I, H, O, num_layers=2, bidirectional=True, scheme="glorot",
                               return_carry=True, dtype=F64, key=key)
  _close(model.params, jrnn.init_stacked(key, I, H, O, num_layers=2, bidirectional=True,
                                         scheme="glorot", dtype=F64))
  xs = _xs()

  def ref(p):
    out = jrnn.stacked_forward(p, xs, lengths=LENGTHS, time_major=False)
    return out.h_last, out.ys

  got, grads = _value_and_grad(lambda m: m(xs, lengths=LENGTHS), model)
  want, g_params = _value_and_grad(ref, model.params)
  _close(got, want)
  assert got[0].shape == (4, B, H)
  _close(grads.params, g_params)


def test_vmap_over_sequences_eager_call_and_an_optax_step():
  model = jeqx.ElmanRNN(I, H, O, scheme="glorot", dtype=F64, key=jax.random.key(0))
  xs, targets = _xs(), _xs(2, (B, T, O))
  batched = eqx.filter_jit(lambda m, xs: m(xs))(model, xs)
  # Equinox's habit: the module sees one sequence (T, I); vmap adds the batch.
  _close(eqx.filter_jit(lambda m, xs: jax.vmap(m)(xs))(model, xs), batched)
  _close(model(xs[0]), batched[0])  # without jit, unbatched

  def loss(m):
    return jnp.mean((jax.vmap(m)(xs) - targets) ** 2)

  tx = optax.adam(1e-2)
  opt_state = tx.init(eqx.filter(model, eqx.is_array))

  @eqx.filter_jit
  def train_step(m, opt_state):
    value, grads = eqx.filter_value_and_grad(loss)(m)
    updates, opt_state = tx.update(grads, opt_state, eqx.filter(m, eqx.is_array))
    m = eqx.apply_updates(m, updates)
    return m, opt_state, value, loss(m)

  model, _, before, after = train_step(model, opt_state)
  assert after < before


def test_bad_inputs_and_a_missing_framework(monkeypatch):
  model = jeqx.ElmanRNN(I, H, dtype=F64, key=jax.random.key(0))
  with pytest.raises(TypeError, match="xs has dtype float32 but the parameters are float64"):
    jax.eval_shape(model, jnp.zeros((T, I), jnp.float32))
  with pytest.raises(ValueError, match=r"h0 must have shape"):
    jax.eval_shape(lambda xs: model(xs, h0=jnp.zeros((H + 1,), F64)), _xs())
  with pytest.raises(ValueError, match="grad must be one of"):
    jeqx.ElmanRNN(I, H, grad="fast", dtype=F64, key=jax.random.key(0))(_xs())
  # Without Equinox, the lazy attribute names the extra to install.
  monkeypatch.delattr(jrnn.interop, "equinox", raising=False)
  monkeypatch.delitem(sys.modules, "jrnn.interop.equinox")
  monkeypatch.setitem(sys.modules, "equinox", None)
  with pytest.raises(ImportError, match=r"pip install 'jrnn\[equinox\]'"):
    jrnn.interop.equinox  # noqa: B018
