"""The engine's choices: every (grad, kernel) pair gives autodiff's gradients; bad choices fail."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import kernels


def _grads(fn, params, **choice):
  return jax.grad(lambda p: fn(p, **choice))(params)


def _close(a, b, rtol):
  scale = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.slow
@pytest.mark.parametrize("grad,kernel", [("hand", "xla"), ("hand", "pallas_interpret"),
                                         ("hand", "auto"), ("autodiff", "auto")])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_every_choice_matches_autodiff(grad, kernel, activation):
  params = jrnn.init_params(jax.random.key(0), 3, 8, 2, scheme="glorot", dtype=jnp.float32)
  xs = jax.random.normal(jax.random.key(1), (5, 3, 3), jnp.float32)
  mask = jnp.arange(5)[:, None] < jnp.array([5, 2, 4])[None]

  def loss(p, **choice):
    out = jrnn.forward(p, xs, mask=mask, activation=activation, **choice)
    return jnp.sum(jnp.sin(out.ys))

  _close(_grads(loss, params, grad=grad, kernel=kernel),
         _grads(loss, params, grad="autodiff", kernel="xla"), 1e-5)


@pytest.mark.slow
def test_stacked_bidirectional_pallas_interpret_matches_autodiff():
  params = jrnn.init_stacked(jax.random.key(2), 3, 8, 2, num_layers=2, bidirectional=True,
                             scheme="glorot", dtype=jnp.float32)
  xs = jax.random.normal(jax.random.key(3), (4, 2, 3), jnp.float32)

  def loss(p, **choice):
    return jnp.sum(jrnn.stacked_forward(p, xs, lengths=jnp.array([4, 3]), **choice).ys ** 2)

  _close(_grads(loss, params, kernel="pallas_interpret"), _grads(loss, params, grad="autodiff"),
         1e-5)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="a GPU runs the compiled kernel")
def test_pallas_without_gpu_is_an_error_not_the_interpreter():
  params = jrnn.init_params(jax.random.key(0), 2, 3, 1)
  xs = jnp.ones((4, 2), jnp.float32)
  with pytest.raises(ValueError, match="kernel='pallas_interpret'"):
    jrnn.forward(params, xs, kernel="pallas")
  with pytest.raises(ValueError, match="grad='autodiff' differentiates XLA's loops"):
    jrnn.forward(params, xs, grad="autodiff", kernel="pallas_interpret")


def test_auto_kernel_unrolls_the_xla_loops_on_gpu_only(monkeypatch):
  act = jrnn.get_activation("tanh")
  kw = dict(n_hidden=512, n_batch=8, dtype=jnp.float32, act=act)
  on_gpu = jax.default_backend() == "gpu"
  on_cpu = "cpu" if kernels.cpu_ffi.available() else "xla"  # the C++ kernel where it is built
  assert kernels.resolve_kernel("auto", unroll=1, **kw) == (
      ("xla", kernels.GPU_XLA_UNROLL) if on_gpu else (on_cpu, 1))
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert kernels.resolve_kernel("auto", unroll=1, **kw) == ("xla", kernels.GPU_XLA_UNROLL)
  assert kernels.resolve_kernel("auto", unroll=4, **kw) == ("xla", 4)  # explicit is kept
  assert kernels.resolve_kernel("xla", unroll=1, **kw) == ("xla", 1)  # only "auto" decides
  small = dict(kw, n_hidden=64)
  assert kernels.resolve_kernel("auto", unroll=1, **small) == ("pallas", 1)


@pytest.mark.parametrize("bad,match", [
    (dict(grad="magic"), "grad must be one of"),
    (dict(kernel="cuda"), "kernel must be one of"),
    (dict(solver="newton"), "solver must be one of"),
    (dict(unroll=0), "unroll must be >= 1"),
    (dict(unroll=2.0), "unroll must be a positive int"),
    (dict(reverse="no"), "reverse must be True or False"),
    (dict(time_major="no"), "time_major must be True or False"),
])
def test_bad_choices_are_named(bad, match):
  params = jrnn.init_params(jax.random.key(0), 2, 3, 1)
  with pytest.raises((ValueError, TypeError), match=match):
    jrnn.forward(params, jnp.ones((4, 2), jnp.float32), **bad)


@pytest.mark.slow
@pytest.mark.parametrize("bptt,choice", [("hand", dict(grad="hand", kernel="xla")),
                                         ("autodiff", dict(grad="autodiff"))])
def test_deprecated_bptt_maps_to_the_new_choices(bptt, choice):
  params = jrnn.init_params(jax.random.key(0), 2, 3, 1, dtype=jnp.float64)
  xs = jax.random.normal(jax.random.key(1), (4, 2), jnp.float64)
  with pytest.warns(DeprecationWarning, match="grad="):
    old = _grads(lambda p: jnp.sum(jrnn.forward(p, xs, bptt=bptt).ys), params)
  new = _grads(lambda p: jnp.sum(jrnn.forward(p, xs, **choice).ys), params)
  chex.assert_trees_all_close(old, new, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("fn", [jax.jvp, "jacfwd"])
def test_forward_mode_on_hand_path_names_the_option(fn):
  params = jrnn.init_params(jax.random.key(0), 2, 3, 1, dtype=jnp.float64)
  xs = jnp.ones((4, 2), jnp.float64)
  f = lambda w: jrnn.forward(params._replace(w_hh=w), xs).ys
  with pytest.raises(TypeError, match="grad='autodiff'"):
    if fn == "jacfwd":
      jax.jacfwd(f)(params.w_hh)
    else:
      fn(f, (params.w_hh,), (params.w_hh,))
  # and the option it names works
  g = lambda w: jrnn.forward(params._replace(w_hh=w), xs, grad="autodiff").ys
  np.testing.assert_allclose(jax.jacfwd(g)(params.w_hh), jax.jacrev(g)(params.w_hh), rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["xla", "pallas_interpret"])
def test_recurrence_choices_match(kernel):
  w = jax.random.normal(jax.random.key(4), (8, 8), jnp.float64) / 3
  u = jax.random.normal(jax.random.key(5), (6, 2, 8), jnp.float64)
  h0 = jnp.zeros((2, 8), jnp.float64)
  dtype = jnp.float32 if kernel == "pallas_interpret" else jnp.float64  # the kernel: float32
  w, u, h0 = (a.astype(dtype) for a in (w, u, h0))

  def loss(w, u, reverse, **choice):
    return jnp.sum(jnp.cos(jrnn.recurrence(w, u, h0, activation="tanh", reverse=reverse,
                                           **choice)))

  rtol = 1e-10 if dtype == jnp.float64 else 1e-5
  for reverse in (False, True):
    ref = jax.grad(loss, (0, 1))(w, u, reverse, grad="autodiff")
    _close(jax.grad(loss, (0, 1))(w, u, reverse, kernel=kernel), ref, rtol)


@pytest.mark.slow
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu", jnp.sin])
def test_hand_path_under_vmap_matches_autodiff(masked, activation):
  # Several seeds as one program (jax.vmap over parameters and data, as jrnn.training.seeds
  # does) must not change the hand path's gradients; in float64 against autodiff, per member.
  keys = jax.random.split(jax.random.key(6), 3)
  params = jax.vmap(lambda k: jrnn.init_params(k, 3, 6, 2, scheme="glorot", dtype=jnp.float64,
                                               learn_h0=True))(keys)
  xs = jax.random.normal(jax.random.key(7), (3, 7, 4, 3), jnp.float64)
  mask = (jnp.arange(7)[:, None] < jnp.array([7, 2, 5, 0])[None]) if masked else None

  def loss(p, x, **choice):
    out = jrnn.forward(p, x, mask=mask, activation=activation, unroll=2, **choice)
    return jnp.sum(jnp.sin(out.ys)) + jnp.sum(out.h_last ** 2)

  # Under jit: one compiled program per gradient, not op-by-op dispatch (the same arithmetic).
  hand = jax.jit(jax.vmap(jax.grad(loss)))(params, xs)
  auto = jax.jit(jax.vmap(jax.grad(lambda p, x: loss(p, x, grad="autodiff"))))(params, xs)
  chex.assert_trees_all_close(hand, auto, rtol=1e-10, atol=1e-12)
  one_grad = jax.jit(jax.grad(loss))
  for m in range(3):
    one = jax.tree_util.tree_map(lambda a, m=m: a[m], params)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a, m=m: a[m], hand),
                                one_grad(one, xs[m]), rtol=1e-10, atol=1e-12)
