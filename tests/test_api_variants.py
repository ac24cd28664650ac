"""The public entry points with and without ``jax.jit`` (``chex.variants``), each checked against
a plain Python loop of :func:`jrnn.step` in float64."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jrnn

T, B, I, H, O = 4, 3, 2, 5, 3


def _params(seed=0):
  p = jrnn.init_params(jax.random.key(seed), I, H, O, scheme="glorot", dtype=jnp.float64,
                       learn_h0=True)
  return p._replace(b_h=0.3 * jnp.ones(H, jnp.float64), h0=0.2 * jnp.ones(H, jnp.float64))


def _loop(params, xs, h0, activation):
  h, hs, ys = h0, [], []
  for t in range(xs.shape[0]):
    h, y = jrnn.step(params, h, xs[t], activation=activation)
    hs.append(h)
    ys.append(y)
  return jnp.stack(hs), jnp.stack(ys)


class EntryPointsTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    self.params = _params()
    self.xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    self.h0 = jnp.broadcast_to(self.params.h0, (B, H))

  @chex.variants(with_jit=True, without_jit=True)
  def test_forward(self):
    for activation in ("tanh", "relu"):
      fn = self.variant(functools.partial(jrnn.forward, activation=activation))
      out = fn(self.params, self.xs)
      hs, ys = _loop(self.params, self.xs, self.h0, activation)
      chex.assert_trees_all_close((out.hs, out.ys, out.h_last), (hs, ys, hs[-1]), rtol=1e-13)

  @chex.variants(with_jit=True, without_jit=True)
  def test_layer_forward_and_recurrence(self):
    hs_want, _ = _loop(self.params, self.xs, self.h0, "tanh")
    layer = self.variant(jrnn.layer_forward)
    chex.assert_trees_all_close(layer(self.params.layer, self.xs, h0=self.h0), hs_want, rtol=1e-13)
    u = self.xs @ self.params.w_xh.T + self.params.b_h[None, None]
    rec = self.variant(jrnn.recurrence)
    chex.assert_trees_all_close(rec(self.params.w_hh, u, self.h0), hs_want, rtol=1e-13)

  @chex.variants(with_jit=True, without_jit=True)
  def test_stacked_forward_one_layer_is_forward(self):
    stacked = jrnn.StackedParams(layers=((self.params.layer,),), w_hy=self.params.w_hy,
                                 b_y=self.params.b_y)
    out = self.variant(jrnn.stacked_forward)(stacked, self.xs)
    want = jrnn.forward(self.params, self.xs)
    chex.assert_trees_all_close(out.ys, want.ys, rtol=1e-13)
    chex.assert_trees_all_close(out.h_last[0], want.h_last, rtol=1e-13)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients_of_the_hand_path_equal_autodiff(self):
    def loss(p, grad):
      return jnp.sum(jnp.sin(jrnn.forward(p, self.xs, grad=grad).ys))

    hand = self.variant(jax.grad(functools.partial(loss, grad="hand")))(self.params)
    auto = self.variant(jax.grad(functools.partial(loss, grad="autodiff")))(self.params)
    chex.assert_trees_all_close(hand, auto, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_less(0, jnp.abs(hand.w_hh).sum())  # not trivially zero
