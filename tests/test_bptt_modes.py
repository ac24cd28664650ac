"""The bptt options of forward/stacked_forward: every mode gives autodiff's gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.recurrence import GPU_XLA_UNROLL, auto_unroll, resolve_bptt


def _grads(fn, params, mode):
  return jax.grad(lambda p: fn(p, mode))(params)


def _assert_trees_close(a, b, rtol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(y))))


@pytest.mark.parametrize("mode", ["hand", "pallas", "auto"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_forward_modes_match_autodiff(mode, activation):
  params = jrnn.init_params(jax.random.key(0), 3, 8, 2, scheme="glorot", dtype=jnp.float32)
  xs = jax.random.normal(jax.random.key(1), (5, 3, 3), jnp.float32)
  mask = jnp.arange(5)[:, None] < jnp.array([5, 2, 4])[None]

  def loss(p, m):
    out = jrnn.forward(p, xs, mask=mask, activation=activation, bptt=m)
    return jnp.sum(jnp.sin(out.ys))

  _assert_trees_close(_grads(loss, params, mode), _grads(loss, params, "autodiff"), 1e-5)


def test_stacked_bidirectional_pallas_matches_autodiff():
  params = jrnn.init_stacked(jax.random.key(2), 3, 8, 2, num_layers=2, bidirectional=True,
                             scheme="glorot", dtype=jnp.float32)
  xs = jax.random.normal(jax.random.key(3), (4, 2, 3), jnp.float32)

  def loss(p, m):
    return jnp.sum(jrnn.stacked_forward(p, xs, lengths=jnp.array([4, 3]), bptt=m).ys ** 2)

  _assert_trees_close(_grads(loss, params, "pallas"), _grads(loss, params, "autodiff"), 1e-5)


def test_auto_unrolls_the_xla_loops_on_gpu_only(monkeypatch):
  assert auto_unroll("auto", "xla", 1) == (GPU_XLA_UNROLL if jax.default_backend() == "gpu"
                                           else 1)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert auto_unroll("auto", "xla", 1) == GPU_XLA_UNROLL
  assert auto_unroll("auto", "xla", 4) == 4  # an explicit choice is kept
  assert auto_unroll("hand", "xla", 1) == 1  # only "auto" decides for the user
  assert auto_unroll("auto", "pallas", 1) == 1  # the kernel has its own default


def test_auto_is_hand_on_cpu_and_unknown_mode_rejected():
  act = jrnn.get_activation("tanh")
  assert jax.default_backend() != "cpu" or resolve_bptt("auto", 64, 8, jnp.float32, act) == (
      "hand", "xla")
  with pytest.raises(ValueError, match="bptt must be one of"):
    jrnn.forward(jrnn.init_params(jax.random.key(0), 2, 3, 1), jnp.ones((4, 2), jnp.float32),
                 bptt="magic")


@pytest.mark.parametrize("fn", [jax.jvp, "jacfwd"])
def test_forward_mode_on_hand_path_names_the_option(fn):
  params = jrnn.init_params(jax.random.key(0), 2, 3, 1, dtype=jnp.float64)
  xs = jnp.ones((4, 2), jnp.float64)
  f = lambda w: jrnn.forward(params._replace(w_hh=w), xs).ys
  with pytest.raises(TypeError, match="bptt='autodiff'"):
    if fn == "jacfwd":
      jax.jacfwd(f)(params.w_hh)
    else:
      fn(f, (params.w_hh,), (params.w_hh,))
  # and the option it names works
  g = lambda w: jrnn.forward(params._replace(w_hh=w), xs, bptt="autodiff").ys
  np.testing.assert_allclose(jax.jacfwd(g)(params.w_hh), jax.jacrev(g)(params.w_hh), rtol=1e-12)


def test_recurrence_modes_match():
  w = jax.random.normal(jax.random.key(4), (8, 8), jnp.float64) / 3
  u = jax.random.normal(jax.random.key(5), (6, 2, 8), jnp.float64)
  h0 = jnp.zeros((2, 8), jnp.float64)

  def loss(w, u, mode, reverse):
    return jnp.sum(jnp.cos(jrnn.recurrence(w, u, h0, activation="tanh", bptt=mode,
                                           reverse=reverse)))

  for reverse in (False, True):
    ref = jax.grad(loss, (0, 1))(w, u, "autodiff", reverse)
    _assert_trees_close(jax.grad(loss, (0, 1))(w, u, "hand", reverse), ref, 1e-10)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("activation", ["tanh", jnp.sin])
def test_in_place_loops_match_autodiff(monkeypatch, masked, activation):
  # Large buffers run the hand path's loops in place (fori_loop over one buffer); force that
  # path at a small size and check it against autodiff in float64.
  from jrnn import bptt
  monkeypatch.setattr(bptt, "IN_PLACE_MIN_BYTES", 0)
  params = jrnn.init_params(jax.random.key(6), 3, 6, 2, scheme="glorot", dtype=jnp.float64,
                            learn_h0=True)
  xs = jax.random.normal(jax.random.key(7), (7, 4, 3), jnp.float64)
  mask = (jnp.arange(7)[:, None] < jnp.array([7, 2, 5, 0])[None]) if masked else None

  def loss(p, m):
    out = jrnn.forward(p, xs, mask=mask, activation=activation, bptt=m, unroll=2)
    return jnp.sum(jnp.sin(out.ys)) + jnp.sum(out.h_last ** 2)

  _assert_trees_close(_grads(loss, params, "hand"), _grads(loss, params, "autodiff"), 1e-10)
  np.testing.assert_allclose(jrnn.forward(params, xs, mask=mask, activation=activation).hs,
                             jrnn.forward(params, xs, mask=mask, activation=activation,
                                          bptt="autodiff").hs, rtol=1e-12)
