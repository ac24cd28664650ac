"""``forward``/``stacked_forward`` against plain Python loops of ``jrnn.step``, option by option.

The references here never call ``lax.scan`` or the masking code: a variable-length batch is
checked against running each sequence, cut to its valid steps, on its own.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jrnn

T, B, I, H, O = 5, 3, 2, 4, 3
GRADS = ["hand", "autodiff"]

# Most tests call the jitted functions: one compilation per configuration, cached across tests,
# costs less than eager op-by-op dispatch. test_jit_matches_eager covers the eager path.
_STATIC = ("activation", "output_activation", "time_major", "reverse", "unroll", "grad", "kernel", "solver")
fwd = jax.jit(jrnn.forward, static_argnames=_STATIC)
sfwd = jax.jit(jrnn.stacked_forward, static_argnames=tuple(a for a in _STATIC if a != "reverse"))


def _params(seed=0, dtype=jnp.float64, learn_h0=False, sizes=(I, H, O)):
  # glorot weights are O(1), so every activation is exercised away from its linear regime.
  p = jrnn.init_params(jax.random.key(seed), *sizes, scheme="glorot", dtype=dtype,
                       learn_h0=learn_h0)
  k1, k2 = jax.random.split(jax.random.key(seed + 100))
  p = p._replace(b_h=0.3 * jax.random.normal(k1, p.b_h.shape, dtype),
                 b_y=0.3 * jax.random.normal(k2, p.b_y.shape, dtype))
  if learn_h0:
    p = p._replace(h0=0.5 * jax.random.normal(jax.random.key(seed + 200), (sizes[1],), dtype))
  return p


def _xs(shape, seed=1, dtype=jnp.float64):
  return jax.random.normal(jax.random.key(seed), shape, dtype)


def _loop(params, xs, h0, *, activation="tanh", output_activation=None, reverse=False):
  """A plain Python loop of ``jrnn.step`` over one unpadded sequence ``xs (T, ...)``.

  Returns stacked ``hs``, ``ys`` (aligned with ``xs``) and the final state.
  """
  order = range(xs.shape[0])[::-1] if reverse else range(xs.shape[0])
  h, hs, ys = h0, {}, {}
  for t in order:
    h, y = jrnn.step(params, h, xs[t], activation=activation,
                     output_activation=output_activation)
    hs[t], ys[t] = h, y
  if not hs:
    return None, None, h0
  n = xs.shape[0]
  return jnp.stack([hs[t] for t in range(n)]), jnp.stack([ys[t] for t in range(n)]), h


def _softsign(a):
  return a / (1 + jnp.abs(a))


# --- the scan against a loop of the step ---------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("activation", sorted(jrnn.ACTIVATIONS) + [_softsign])
@pytest.mark.parametrize("grad", GRADS)
def test_scan_matches_python_loop_of_step(activation, grad):
  params = _params()
  xs = _xs((T, B, I))
  h0 = _xs((B, H), seed=2)
  out = fwd(params, xs, h0=h0, activation=activation, grad=grad)
  hs, ys, h_last = _loop(params, xs, h0, activation=activation)
  np.testing.assert_allclose(out.hs, hs, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(out.ys, ys, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(out.h_last, h_last, rtol=1e-12, atol=1e-14)


def test_step_matches_numpy_column_vector_formula():
  # The seed's equations with column vectors, h_t = σ(W_hh h + W_xh x + b_h), y = W_hy h + b_y.
  p = _params()
  h = np.asarray(_xs((H,), seed=3))
  x = np.asarray(_xs((I,), seed=4))
  w = {k: np.asarray(v) for k, v in p._asdict().items() if v is not None}
  h_ref = np.tanh(w["w_hh"] @ h + w["w_xh"] @ x + w["b_h"])
  y_ref = w["w_hy"] @ h_ref + w["b_y"]
  h_new, y = jrnn.step(p, jnp.asarray(h), jnp.asarray(x))
  np.testing.assert_allclose(h_new, h_ref, rtol=1e-13)
  np.testing.assert_allclose(y, y_ref, rtol=1e-13)
  # LayerParams: the output is the state itself.
  h_layer, y_layer = jrnn.step(p.layer, jnp.asarray(h), jnp.asarray(x))
  np.testing.assert_allclose(h_layer, h_ref, rtol=1e-13)
  np.testing.assert_array_equal(y_layer, h_layer)


@pytest.mark.slow
@pytest.mark.parametrize("output_activation", [None, "sigmoid", "tanh", _softsign])
def test_output_activation_applies_to_the_readout(output_activation):
  params = _params()
  xs = _xs((T, B, I))
  out = fwd(params, xs, output_activation=output_activation)
  _, ys, _ = _loop(params, xs, jnp.zeros((B, H)), output_activation=output_activation)
  np.testing.assert_allclose(out.ys, ys, rtol=1e-12, atol=1e-14)
  linear = out.hs @ params.w_hy.T + params.b_y[None, None]
  sigma_y = {None: lambda a: a, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}.get(
      output_activation, output_activation)
  np.testing.assert_allclose(out.ys, sigma_y(linear), rtol=1e-12, atol=1e-14)


# --- layouts ------------------------------------------------------------------------------

@pytest.mark.parametrize("grad", GRADS)
def test_unbatched_equals_batch_of_one(grad):
  params = _params()
  xs = _xs((T, I))
  h0 = _xs((H,), seed=2)
  mask = jnp.array([True, True, False, True, False])
  single = fwd(params, xs, h0=h0, mask=mask, grad=grad)
  batch = fwd(params, xs[:, None], h0=h0[None], mask=mask[:, None], grad=grad)
  assert single.hs.shape == (T, H) and single.ys.shape == (T, O) and single.h_last.shape == (H,)
  np.testing.assert_allclose(single.hs, batch.hs[:, 0], rtol=1e-14)
  np.testing.assert_allclose(single.ys, batch.ys[:, 0], rtol=1e-14)
  np.testing.assert_allclose(single.h_last, batch.h_last[0], rtol=1e-14)
  # lengths for an unbatched sequence is a scalar.
  by_len = fwd(params, xs, h0=h0, lengths=3, grad=grad)
  ref = fwd(params, xs[:3], h0=h0, grad=grad)
  np.testing.assert_allclose(by_len.h_last, ref.h_last, rtol=1e-14)


@pytest.mark.parametrize("grad", GRADS)
def test_batch_major_is_time_major_transposed(grad):
  params = _params()
  xs = _xs((T, B, I))
  h0 = _xs((B, H), seed=2)
  lengths = jnp.array([5, 2, 0])
  tm = fwd(params, xs, h0=h0, lengths=lengths, grad=grad)
  bm = fwd(params, jnp.swapaxes(xs, 0, 1), h0=h0, lengths=lengths, time_major=False,
                    grad=grad)
  assert bm.hs.shape == (B, T, H) and bm.ys.shape == (B, T, O) and bm.h_last.shape == (B, H)
  np.testing.assert_allclose(bm.hs, jnp.swapaxes(tm.hs, 0, 1), rtol=1e-14)
  np.testing.assert_allclose(bm.ys, jnp.swapaxes(tm.ys, 0, 1), rtol=1e-14)
  np.testing.assert_allclose(bm.h_last, tm.h_last, rtol=1e-14)
  # The mask follows the layout of xs: (B, T) when batch-major.
  mask_tb = jnp.arange(T)[:, None] < lengths[None, :]
  bm_mask = fwd(params, jnp.swapaxes(xs, 0, 1), h0=h0, mask=mask_tb.T,
                         time_major=False, grad=grad)
  np.testing.assert_allclose(bm_mask.hs, bm.hs, rtol=1e-14)


def test_nested_python_lists_are_accepted():
  params = _params()
  xs = _xs((T, B, I))
  lengths = [5, 2, 0]
  want = fwd(params, xs, lengths=jnp.array(lengths), h0=jnp.ones((B, H)))
  got = jrnn.forward(params, np.asarray(xs).tolist(), lengths=lengths,
                     h0=[[1.0] * H] * B)
  np.testing.assert_allclose(got.hs, want.hs, rtol=1e-14)
  mask = (np.arange(T)[:, None] < np.array(lengths)[None]).tolist()
  np.testing.assert_allclose(jrnn.forward(params, xs, mask=mask).h_last,
                             fwd(params, xs, lengths=jnp.array(lengths)).h_last, rtol=1e-14)


# --- initial state ------------------------------------------------------------------------

def test_h0_defaults_to_zeros_and_broadcasts_over_the_batch():
  params = _params()
  xs = _xs((T, B, I))
  default = fwd(params, xs)
  zeros = fwd(params, xs, h0=jnp.zeros((B, H)))
  np.testing.assert_array_equal(default.hs, zeros.hs)
  h0 = _xs((H,), seed=2)
  shared = fwd(params, xs, h0=h0)
  tiled = fwd(params, xs, h0=jnp.tile(h0[None], (B, 1)))
  np.testing.assert_array_equal(shared.hs, tiled.hs)
  assert not np.allclose(shared.hs[0], default.hs[0])


@pytest.mark.slow
@pytest.mark.parametrize("grad", GRADS)
def test_learnt_h0_is_used_and_receives_the_gradient(grad):
  params = _params(learn_h0=True)
  xs = _xs((T, B, I))
  out = fwd(params, xs, grad=grad)
  ref = fwd(params._replace(h0=None), xs, h0=params.h0, grad=grad)
  np.testing.assert_array_equal(out.hs, ref.hs)
  # An explicit h0 overrides the learnt one.
  override = fwd(params, xs, h0=jnp.zeros(H), grad=grad)
  np.testing.assert_array_equal(override.hs, fwd(params._replace(h0=None), xs).hs)

  def loss(p):
    o = fwd(p, xs, grad=grad)
    return jnp.sum(o.ys ** 2) + jnp.sum(jnp.sin(o.h_last))

  # Gradients under jit (here and below): one compiled program each, not op-by-op dispatch.
  g = jax.jit(jax.grad(loss))(params)
  assert g.h0 is not None and g.h0.shape == (H,)
  assert float(jnp.max(jnp.abs(g.h0))) > 1e-3
  # dL/dh0 of the learnt state is the batch sum of dL/dh0 of an explicit (B, H) state.
  g_explicit = jax.jit(jax.grad(lambda h: loss_with_h0(params._replace(h0=None), xs, h, grad)))(
      jnp.tile(params.h0[None], (B, 1)))
  np.testing.assert_allclose(g.h0, g_explicit.sum(0), rtol=1e-10)
  check_grads(jax.jit(loss), (params,), order=1, modes=["rev"])


def loss_with_h0(params, xs, h0, grad):
  o = fwd(params, xs, h0=h0, grad=grad)
  return jnp.sum(o.ys ** 2) + jnp.sum(jnp.sin(o.h_last))


# --- reverse, unroll, jit, grad modes -------------------------------------------------------

@pytest.mark.parametrize("grad", GRADS)
def test_reverse_runs_from_the_end_with_outputs_aligned(grad):
  params = _params()
  xs = _xs((T, B, I))
  h0 = _xs((B, H), seed=2)
  rev = fwd(params, xs, h0=h0, reverse=True, grad=grad)
  hs, ys, h_last = _loop(params, xs, h0, reverse=True)
  np.testing.assert_allclose(rev.hs, hs, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(rev.ys, ys, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(rev.h_last, h_last, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(rev.h_last, rev.hs[0], rtol=0)
  flipped = fwd(params, jnp.flip(xs, 0), h0=h0, grad=grad)
  np.testing.assert_allclose(rev.hs, jnp.flip(flipped.hs, 0), rtol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("unroll", [3, True])
@pytest.mark.parametrize("grad", GRADS)
def test_unroll_does_not_change_results(unroll, grad):
  params = _params()
  xs = _xs((T, B, I))
  mask = jnp.arange(T)[:, None] < jnp.array([5, 3, 1])[None]

  def run(u):
    def loss(p):
      o = fwd(p, xs, mask=mask, unroll=u, grad=grad)
      return jnp.sum(jnp.tanh(o.ys)), o
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

  (_, base), g_base = run(1)
  (_, out), g = run(unroll)
  np.testing.assert_allclose(out.hs, base.hs, rtol=1e-13)
  np.testing.assert_allclose(out.h_last, base.h_last, rtol=1e-13)
  chex.assert_trees_all_close(g, g_base, rtol=1e-11, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
def test_hand_and_autodiff_bptt_agree(activation):
  params = _params()
  xs = _xs((T, B, I))
  mask = jnp.array([[1, 1, 1], [1, 0, 1], [1, 0, 0], [0, 1, 1], [1, 1, 0]], bool)

  def loss(p, grad):
    o = fwd(p, xs, mask=mask, activation=activation, grad=grad)
    return jnp.sum(jnp.sin(o.ys)) + jnp.sum(o.h_last ** 2), o

  vg = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (l_hand, o_hand), g_hand = vg(params, "hand")
  (l_auto, o_auto), g_auto = vg(params, "autodiff")
  np.testing.assert_allclose(o_hand.hs, o_auto.hs, rtol=1e-14, atol=1e-15)
  np.testing.assert_allclose(l_hand, l_auto, rtol=1e-14)
  chex.assert_trees_all_close(g_hand, g_auto, rtol=1e-10, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("grad", GRADS)
@pytest.mark.parametrize("time_major", [True, False])
def test_jit_matches_eager(grad, time_major):
  params = _params(learn_h0=True)
  xs = _xs((T, B, I) if time_major else (B, T, I))
  lengths = jnp.array([4, 5, 1])
  kw = dict(activation="relu", output_activation="sigmoid", time_major=time_major, grad=grad)
  eager = jrnn.forward(params, xs, lengths=lengths, **kw)
  jitted = jax.jit(functools.partial(jrnn.forward, **kw))(params, xs, lengths=lengths)
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)

  def loss(p, x, n):
    return jnp.sum(jrnn.forward(p, x, lengths=n, **kw).ys ** 2)

  g_eager = jax.grad(loss)(params, xs, lengths)
  g_jit = jax.jit(jax.grad(loss))(params, xs, lengths)
  chex.assert_trees_all_close(g_eager, g_jit, rtol=1e-12, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_float32_and_float64_keep_their_dtype(dtype):
  params = _params(dtype=dtype, learn_h0=True)
  xs = _xs((T, B, I), dtype=dtype)
  out = fwd(params, xs, lengths=jnp.array([1, 2, 3]))
  assert out.hs.dtype == out.ys.dtype == out.h_last.dtype == dtype
  g = jax.grad(lambda p: jnp.sum(fwd(p, xs).ys))(params)
  assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(g))
  ref = fwd(jax.tree.map(lambda a: a.astype(jnp.float64), params),
                     xs.astype(jnp.float64), lengths=jnp.array([1, 2, 3]))
  tol = 1e-5 if dtype == jnp.float32 else 1e-14
  np.testing.assert_allclose(out.ys, ref.ys, rtol=tol, atol=tol)


# --- masks and lengths --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("grad", GRADS)
def test_lengths_equal_running_each_sequence_alone(reverse, grad):
  params = _params()
  n_batch = 4
  xs = _xs((T, n_batch, I))
  h0 = _xs((n_batch, H), seed=2)
  lengths = np.array([5, 0, 3, 1])
  out = fwd(params, xs, h0=h0, lengths=jnp.asarray(lengths), reverse=reverse,
                     grad=grad)
  mask = np.arange(T)[:, None] < lengths[None]
  by_mask = fwd(params, xs, h0=h0, mask=mask, reverse=reverse, grad=grad)
  np.testing.assert_array_equal(out.hs, by_mask.hs)
  out = jax.tree.map(np.asarray, out)  # sliced per sequence below: NumPy compiles nothing
  for b, n in enumerate(lengths):
    hs, ys, h_last = _loop(params, xs[:n, b], h0[b], reverse=reverse)
    np.testing.assert_allclose(out.h_last[b], h_last, rtol=1e-12, atol=1e-14)
    if n:
      np.testing.assert_allclose(out.hs[:n, b], hs, rtol=1e-12, atol=1e-14)
      np.testing.assert_allclose(out.ys[:n, b], ys, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("grad", GRADS)
def test_mask_with_gaps_skips_the_padded_steps(grad):
  params = _params()
  xs = _xs((T, B, I))
  mask = np.array([[0, 1, 1], [1, 0, 1], [1, 0, 0], [0, 1, 1], [1, 0, 1]], bool)
  # Numeric 0/1 masks mean the same as boolean ones.
  for m in (mask, mask.astype(np.float64), mask.astype(np.int32)):
    out = fwd(params, xs, mask=m, grad=grad)
    for b in range(B):
      valid = np.flatnonzero(mask[:, b])
      hs, ys, h_last = _loop(params, xs[valid, b], jnp.zeros(H))
      np.testing.assert_allclose(out.hs[valid, b], hs, rtol=1e-12, atol=1e-14)
      np.testing.assert_allclose(out.ys[valid, b], ys, rtol=1e-12, atol=1e-14)
      np.testing.assert_allclose(out.h_last[b], h_last, rtol=1e-12, atol=1e-14)
      # A padded step carries the state: it equals the state before it.
      for t in np.flatnonzero(~mask[:, b]):
        before = out.hs[t - 1, b] if t else jnp.zeros(H)
        np.testing.assert_array_equal(out.hs[t, b], before)


@pytest.mark.slow
@pytest.mark.parametrize("grad", GRADS)
def test_padded_steps_get_no_gradient(grad):
  params = _params()
  xs = _xs((T, B, I))
  lengths = jnp.array([2, 5, 4])

  def loss_padded(p, x):
    o = fwd(p, x, lengths=lengths, grad=grad)
    return jnp.sum(o.h_last ** 2)

  g_params, g_xs = jax.jit(jax.grad(loss_padded, argnums=(0, 1)))(params, xs)
  mask = np.arange(T)[:, None] < np.asarray(lengths)[None]
  np.testing.assert_array_equal(np.asarray(g_xs)[~mask], 0)
  total = jax.tree.map(jnp.zeros_like, params)
  for b, n in enumerate(np.asarray(lengths)):
    g_b = jax.jit(jax.grad(lambda p, x: jnp.sum(fwd(p, x, grad=grad).h_last ** 2)))(
        params, xs[:n, b])
    total = jax.tree.map(jnp.add, total, g_b)
  chex.assert_trees_all_close(g_params, total, rtol=1e-10, atol=1e-14)


# --- stacked and bidirectional --------------------------------------------------------------

def _loop_stack(params, xs, h0s, activation):
  """Stack reference over one unpadded sequence ``xs (n, I)``; ``h0s (L*D, H)``.

  Each layer is a Python loop of ``jrnn.step`` per direction, concatenated ``[fwd, bwd]``.
  Returns ``(hs (n, D*H) or None, h_last (L*D, H))``.
  """
  if xs.shape[0] == 0:
    return None, h0s  # nothing to run: every layer keeps its initial state
  inp, finals = xs, []
  d = params.num_directions
  for l, layer in enumerate(params.layers):
    outs = []
    for j, p in enumerate(layer):
      hs, _, h = _loop(p, inp, h0s[l * d + j], activation=activation, reverse=j == 1)
      outs.append(hs)
      finals.append(h)
    inp = jnp.concatenate(outs, axis=-1)
  return inp, jnp.stack(finals)


@pytest.mark.slow
@pytest.mark.parametrize("num_layers,bidirectional", [(1, True), (2, False), (3, True)])
@pytest.mark.parametrize("grad", GRADS)
def test_stacked_with_lengths_equals_composed_loops(num_layers, bidirectional, grad):
  params = jrnn.init_stacked(jax.random.key(3), I, H, O, num_layers=num_layers,
                             bidirectional=bidirectional, scheme="glorot", dtype=jnp.float64)
  d = 2 if bidirectional else 1
  xs = _xs((T, B, I))
  h0 = _xs((num_layers * d, B, H), seed=5)
  lengths = np.array([5, 2, 0])
  out = sfwd(params, xs, h0=h0, lengths=jnp.asarray(lengths), grad=grad)
  assert out.hs.shape == (T, B, d * H) and out.ys.shape == (T, B, O)
  assert out.h_last.shape == (num_layers * d, B, H)
  out = jax.tree.map(np.asarray, out)  # sliced per sequence below: NumPy compiles nothing
  for b, n in enumerate(lengths):
    hs, h_last = _loop_stack(params, xs[:n, b], h0[:, b], "tanh")
    np.testing.assert_allclose(out.h_last[:, b], h_last, rtol=1e-12, atol=1e-14)
    if n:
      np.testing.assert_allclose(out.hs[:n, b], hs, rtol=1e-12, atol=1e-14)
      ys = hs @ params.w_hy.T + params.b_y[None]
      np.testing.assert_allclose(out.ys[:n, b], ys, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("grad", GRADS)
def test_bidirectional_equals_two_single_layer_forwards(grad):
  params = jrnn.init_stacked(jax.random.key(4), I, H, num_layers=1, bidirectional=True,
                             scheme="glorot", dtype=jnp.float64)
  assert params.w_hy is None
  xs = _xs((T, B, I))
  mask = np.arange(T)[:, None] < np.array([3, 5, 1])[None]
  out = sfwd(params, xs, mask=mask, activation="relu", grad=grad)
  assert out.ys is None
  readout = dict(w_hy=jnp.zeros((1, H)), b_y=jnp.zeros(1))
  fwd_p, bwd_p = params.layers[0]
  one = fwd(jrnn.RNNParams(fwd_p.w_xh, fwd_p.w_hh, fwd_p.b_h, **readout), xs,
            mask=mask, activation="relu", grad=grad)
  rev = fwd(jrnn.RNNParams(bwd_p.w_xh, bwd_p.w_hh, bwd_p.b_h, **readout), xs,
            mask=mask, activation="relu", reverse=True, grad=grad)
  np.testing.assert_allclose(out.hs, jnp.concatenate([one.hs, rev.hs], -1), rtol=1e-14)
  np.testing.assert_allclose(out.h_last, jnp.stack([one.h_last, rev.h_last]), rtol=1e-14)


def test_stacked_single_layer_equals_forward():
  params = _params(learn_h0=True)
  stack = jrnn.StackedParams(((params.layer,),), params.w_hy, params.b_y)
  xs = _xs((B, T, I))
  kw = dict(lengths=jnp.array([2, 5, 3]), time_major=False, output_activation="tanh")
  single = fwd(params, xs, **kw)
  stacked = sfwd(stack, xs, **kw)
  np.testing.assert_array_equal(stacked.hs, single.hs)
  np.testing.assert_array_equal(stacked.ys, single.ys)
  np.testing.assert_array_equal(stacked.h_last[0], single.h_last)


def test_stacked_unbatched_and_shared_h0():
  params = jrnn.init_stacked(jax.random.key(5), I, H, O, num_layers=2, bidirectional=True,
                             dtype=jnp.float64, scheme="glorot")
  xs = _xs((T, I))
  h0 = _xs((4, H), seed=6)
  single = sfwd(params, xs, h0=h0)
  assert single.hs.shape == (T, 2 * H) and single.h_last.shape == (4, H)
  batch = sfwd(params, jnp.tile(xs[:, None], (1, 2, 1)), h0=h0)
  np.testing.assert_allclose(batch.hs[:, 1], single.hs, rtol=1e-14)
  np.testing.assert_allclose(batch.h_last[:, 0], single.h_last, rtol=1e-14)
  hs, h_last = _loop_stack(params, xs, h0, "tanh")
  np.testing.assert_allclose(single.hs, hs, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(single.h_last, h_last, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_stacked_gradients_match_finite_differences():
  params = jrnn.init_stacked(jax.random.key(6), I, 3, 2, num_layers=2, bidirectional=True,
                             dtype=jnp.float64, scheme="glorot", learn_h0=True)
  xs = _xs((4, 2, I))
  lengths = jnp.array([4, 2])

  def loss(p):
    o = sfwd(p, xs, lengths=lengths)
    return jnp.sum(jnp.sin(o.ys)) + jnp.sum(o.h_last ** 2)

  check_grads(jax.jit(loss), (params,), order=1, modes=["rev"])
  g = jax.grad(loss)(params)
  assert all(float(jnp.max(jnp.abs(l.h0))) > 0 for layer in g.layers for l in layer)


# --- random sizes ---------------------------------------------------------------------------

def _numpy_loop(params, xs, reverse):
  """The seed's NumPy loop (column vectors, tanh, zero h0) over one sequence ``xs (n, I)``."""
  w = {k: np.asarray(v) for k, v in params._asdict().items() if v is not None}
  h = np.zeros(w["w_hh"].shape[0])
  hs = np.zeros((xs.shape[0],) + h.shape)
  for t in (range(xs.shape[0])[::-1] if reverse else range(xs.shape[0])):
    h = np.tanh(w["w_hh"] @ h + w["w_xh"] @ xs[t] + w["b_h"])
    hs[t] = h
  return hs, hs @ w["w_hy"].T + w["b_y"], h


@pytest.mark.slow
@settings(max_examples=8, deadline=None)
@given(t=st.integers(1, 5), b=st.integers(1, 3), i=st.integers(1, 3), h=st.integers(1, 4),
       o=st.integers(1, 3), seed=st.integers(0, 2 ** 16), reverse=st.booleans(),
       grad=st.sampled_from(GRADS))
def test_random_sizes_match_the_loop(t, b, i, h, o, seed, reverse, grad):
  params = _params(seed=seed, sizes=(i, h, o))
  xs = _xs((t, b, i), seed=seed + 1)
  lengths = np.random.default_rng(seed).integers(0, t + 1, size=b)
  out = fwd(params, xs, lengths=jnp.asarray(lengths), reverse=reverse, grad=grad)
  assert out.hs.shape == (t, b, h) and out.ys.shape == (t, b, o) and out.h_last.shape == (b, h)
  out = jax.tree.map(np.asarray, out)  # sliced per sequence below: NumPy compiles nothing
  for k, n in enumerate(lengths):
    hs, ys, h_last = _numpy_loop(params, np.asarray(xs[:n, k]), reverse)
    np.testing.assert_allclose(out.h_last[k], h_last, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.hs[:n, k], hs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.ys[:n, k], ys, rtol=1e-12, atol=1e-14)
