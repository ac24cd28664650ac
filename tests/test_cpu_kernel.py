"""``kernel="cpu"``: jrnn's C++ recurrence kernel through ``jax.ffi`` (jrnn/kernels/cpu_ffi.py).

Against the XLA loops and autodiff in float32 (rounding) and float64 (1e-12), with finite
differences, under ``vmap`` (one call for every member), split over threads (bit for bit the
same as one thread), with NaNs, and what happens where it cannot be built or does not apply.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from jrnn import kernels
from jrnn.activations import ACTIVATIONS
from jrnn.kernels import cpu_ffi

pytestmark = pytest.mark.skipif(
  not cpu_ffi.available(), reason=f"the CPU kernel is not built: {cpu_ffi.unavailable_reason()}"
)

TOL = {"float32": 3e-6, "float64": 1e-12}


def _problem(dtype, t=23, b=5, i=3, h=19, o=4, seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  params = jax.tree.map(lambda a: a.astype(dtype), jrnn.init_params(k[0], i, h, o))
  params = params._replace(b_h=0.3 * jax.random.normal(k[3], (h,), dtype))
  xs = jax.random.normal(k[1], (t, b, i), dtype)
  mask = jax.random.uniform(k[2], (t, b)) > 0.3
  return params, xs, mask


def _loss_and_grads(params, xs, mask, act, **choice):
  def loss(p):
    out = jrnn.forward(p, xs, mask=mask, activation=act, **choice)
    return jnp.sum(jnp.sin(out.ys)) + jnp.sum(out.hs**2), out.hs

  return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def _max_rel(a, b):
  return max(
    float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-30))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", sorted(cpu_ffi.ACTIVATION_CODES))
@pytest.mark.parametrize("masked", [False, True])
def test_equals_the_xla_loops_and_autodiff(dtype, act, masked):
  with jax.enable_x64(dtype == "float64"):
    params, xs, mask = _problem(dtype)
    mask = mask if masked else None
    got = _loss_and_grads(params, xs, mask, act, kernel="cpu")
    xla = _loss_and_grads(params, xs, mask, act, kernel="xla")
    auto = _loss_and_grads(params, xs, mask, act, grad="autodiff")
    assert got[0][1].dtype == jnp.dtype(dtype)
    assert _max_rel(xla, got) < TOL[dtype]
    assert _max_rel(auto, got) < TOL[dtype]


def test_finite_differences_float64():
  with jax.enable_x64(True):
    params, xs, mask = _problem("float64", t=9, b=2, h=6)
    check_grads(
      lambda p: jnp.sum(jnp.tanh(jrnn.forward(p, xs, mask=mask, kernel="cpu").ys)),
      (params,), order=1, modes=["rev"], atol=1e-7, rtol=1e-7,
    )


def _recurrence_and_vjp(kernel, w, u, h0, g):
  hs, vjp = jax.vjp(lambda w, u, h0: jrnn.recurrence(w, u, h0, kernel=kernel), w, u, h0)
  return hs, vjp(g)


def test_recurrence_alone_sizes_and_remainders():
  """Shapes that take every code path of the kernel: one, two, three and four-plus rows
  (matrix-vector and 4-row panels), H below, at and past whole vectors and wide strips."""
  for b, h in [(1, 64), (2, 7), (3, 24), (4, 65), (9, 300)]:
    k = jax.random.split(jax.random.key(b * h), 4)
    w = jax.random.normal(k[0], (h, h)) / np.sqrt(h)
    u = jax.random.normal(k[1], (11, b, h))
    h0 = jax.random.normal(k[2], (b, h))
    g = jax.random.normal(k[3], (11, b, h))
    got, ref = (_recurrence_and_vjp(kernel, w, u, h0, g) for kernel in ("cpu", "xla"))
    assert _max_rel(ref, got) < 3e-6, (b, h)


def test_vmap_members_equal_one_at_a_time():
  """A vmap is one call that loops over the members with the code one member runs: the
  kernel's outputs (states, ``δ`` as ``∂L/∂u``, ``∂L/∂h_0``) are the same bits; ``∂L/∂W_hh``
  is XLA's GEMM, batched under vmap, so equal to rounding."""
  k = jax.random.split(jax.random.key(5), 4)
  w = jax.random.normal(k[0], (4, 19, 19)) / np.sqrt(19)
  u = jax.random.normal(k[1], (4, 13, 3, 19))
  h0 = jax.random.normal(k[2], (4, 3, 19))
  g = jax.random.normal(k[3], (4, 13, 3, 19))

  def one(w, u, h0, g):
    hs, vjp = jax.vjp(lambda w, u, h0: jrnn.recurrence(w, u, h0, kernel="cpu"), w, u, h0)
    return hs, vjp(g)

  hs, (dw, du, dh0) = jax.jit(jax.vmap(one))(w, u, h0, g)
  for n in range(4):
    hs1, (dw1, du1, dh01) = jax.jit(one)(w[n], u[n], h0[n], g[n])
    for a, b in ((hs1, hs[n]), (du1, du[n]), (dh01, dh0[n])):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(dw1, dw[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("b,h,members", [(8, 256, 1), (2, 16, 5)])
def test_threads_change_no_bit(monkeypatch, b, h, members):
  """Columns split over threads (one member with a large step) or members split (a vmap):
  every element is computed by one thread in one order, so the bits do not depend on it."""
  k = jax.random.split(jax.random.key(3), 4)
  w = jax.random.normal(k[0], (members, h, h)) / np.sqrt(h)
  u = jax.random.normal(k[1], (members, 7, b, h))
  h0 = jnp.zeros((members, b, h))
  g = jax.random.normal(k[3], (members, 7, b, h))

  def run():
    def one(w, u, h0, g):
      hs, vjp = jax.vjp(lambda w, u: jrnn.recurrence(w, u, h0, kernel="cpu"), w, u)
      return hs, vjp(g)

    return jax.jit(jax.vmap(one))(w, u, h0, g)

  results = []
  for n in ("1", "2", "3"):
    monkeypatch.setenv(cpu_ffi.THREADS_ENV, n)
    results.append(run())
  for other in results[1:]:
    for a, c in zip(jax.tree.leaves(results[0]), jax.tree.leaves(other), strict=True):
      np.testing.assert_array_equal(a, c)


def test_nan_propagates_like_the_xla_loop():
  params, xs, _ = _problem("float32")
  xs = xs.at[5, 2, 0].set(jnp.nan)
  for act in ("tanh", "relu"):
    got = jrnn.forward(params, xs, activation=act, kernel="cpu").hs
    ref = jrnn.forward(params, xs, activation=act, kernel="xla").hs
    np.testing.assert_array_equal(jnp.isnan(got), jnp.isnan(ref))
    assert bool(jnp.isnan(got[5:, 2]).all()) and not bool(jnp.isnan(got[:, 0]).any())


def test_float32_tanh_within_four_ulp():
  """The kernel's own float32 tanh (identity weights, T = 1) on a dense grid and at the edges."""
  x = np.concatenate([
    np.linspace(-12, 12, 400001, dtype=np.float32),
    np.array([0.0, -0.0, 1e-30, -1e-12, 0.3, -0.3, 0.29999998, 9.0, 20.0, 50.0], np.float32),
  ])
  n = x.size
  hs = cpu_ffi.states(
    jnp.zeros((1, 1)), jnp.asarray(x).reshape(1, n, 1), jnp.zeros((n, 1)), None,
    ACTIVATIONS["tanh"],
  )
  got = np.asarray(hs).ravel().astype(np.float64)
  exact = np.tanh(x.astype(np.float64))
  ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
  assert np.max(np.abs(got - exact) / ulp) <= 4
  np.testing.assert_array_equal(got[n - 8 : n - 6], x[n - 8 : n - 6])  # tanh x = x for tiny x
  nan = cpu_ffi.states(jnp.zeros((1, 1)), jnp.full((1, 1, 1), jnp.nan), jnp.zeros((1, 1)), None,
                       ACTIVATIONS["tanh"])
  assert bool(jnp.isnan(nan).all())


def test_auto_picks_it_for_float32_on_cpu_and_keeps_float64_on_xla():
  tanh = ACTIVATIONS["tanh"]
  assert kernels.resolve_kernel("auto", n_hidden=8, n_batch=2, dtype=jnp.float32, act=tanh,
                                unroll=1) == ("cpu", 1)
  assert kernels.resolve_kernel("auto", n_hidden=8, n_batch=2, dtype=jnp.float64, act=tanh,
                                unroll=1) == ("xla", 1)
  assert kernels.resolve_kernel("auto", n_hidden=8, n_batch=2, dtype=jnp.float32,
                                act=ACTIVATIONS["sigmoid"], unroll=1) == ("xla", 1)


def test_an_activation_that_only_borrows_a_name_never_reaches_the_kernel():
  """The kernel computes tanh itself: an Activation named "tanh" with another function must
  run on XLA under "auto" and be refused by kernel="cpu", never silently replaced."""
  fake = jrnn.Activation("tanh", jnp.sin, lambda h: jnp.cos(jnp.arcsin(h)), 1.0)
  assert not cpu_ffi.supported(jnp.float32, fake)
  assert kernels.resolve_kernel("auto", n_hidden=8, n_batch=2, dtype=jnp.float32, act=fake,
                                unroll=1) == ("xla", 1)
  params, xs, _ = _problem("float32")
  with pytest.raises(ValueError, match="kernel='cpu' takes"):
    jrnn.forward(params, xs, activation=fake, kernel="cpu")
  np.testing.assert_array_equal(jrnn.forward(params, xs, activation=fake).hs,
                                jrnn.forward(params, xs, activation=fake, kernel="xla").hs)


def test_auto_keeps_several_devices_on_xla(monkeypatch):
  """A data-parallel mesh splits the XLA loops with the batch; XLA's partitioner would gather
  the whole batch onto every device for a custom call."""
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  assert kernels.resolve_kernel("auto", n_hidden=8, n_batch=2, dtype=jnp.float32,
                                act=ACTIVATIONS["tanh"], unroll=1) == ("xla", 1)


@pytest.mark.parametrize("bad,match", [
  (dict(activation="sigmoid"), "kernel='cpu' takes float32 or float64 and an activation in"),
  (dict(activation=lambda a: a / (1 + jnp.abs(a))), "activation 'custom'|activation '<lambda>'"),
  (dict(dtype=jnp.bfloat16), "got dtype bfloat16"),
  (dict(grad="autodiff"), "grad='autodiff' differentiates XLA's loops; kernel='cpu'"),
])
def test_explicit_cpu_kernel_where_it_does_not_apply_is_an_error(bad, match):
  params, xs, _ = _problem("float32")
  dtype = bad.pop("dtype", None)
  if dtype is not None:
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    xs = xs.astype(dtype)
  with pytest.raises(ValueError, match=match):
    jrnn.forward(params, xs, kernel="cpu", **bad)


def test_without_a_build_auto_falls_back_and_cpu_says_why(monkeypatch):
  monkeypatch.setattr(cpu_ffi, "_library", lambda: (None, "no C++ compiler found (test)"))
  tanh = ACTIVATIONS["tanh"]
  assert kernels.resolve_kernel("auto", n_hidden=8, n_batch=2, dtype=jnp.float32, act=tanh,
                                unroll=1) == ("xla", 1)
  params, xs, _ = _problem("float32")
  with pytest.raises(ValueError, match=r"could not be built or loaded: no C\+\+ compiler found"):
    jrnn.forward(params, xs, kernel="cpu")
  # "auto" still runs, on the XLA loops, and equals kernel="xla" bit for bit
  auto, xla = (jrnn.forward(params, xs, kernel=k).ys for k in ("auto", "xla"))
  np.testing.assert_array_equal(auto, xla)


def test_a_failing_compiler_is_reported_not_raised(monkeypatch, tmp_path):
  monkeypatch.setenv("CXX", "false")  # exits 1: a compiler that fails
  monkeypatch.setenv("JRNN_CACHE_DIR", str(tmp_path))
  lib, why = cpu_ffi._build_and_register()
  assert lib is None and "failed" in why
  assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob("tmp*"))


def test_turned_off_by_the_environment(monkeypatch):
  monkeypatch.setenv(cpu_ffi.DISABLE_ENV, "0")
  assert cpu_ffi._build_and_register() == (None, f"turned off by {cpu_ffi.DISABLE_ENV}=0")


def test_auto_leaves_steps_from_the_size_limit_to_xla():
  """From AUTO_MAX_STEP multiply-adds a step (B·H²) XLA's loops were measured faster."""
  tanh = ACTIVATIONS["tanh"]
  kw = dict(dtype=jnp.float32, act=tanh, unroll=1)
  assert kernels.resolve_kernel("auto", n_batch=64, n_hidden=512, **kw) == ("cpu", 1)
  assert kernels.resolve_kernel("auto", n_batch=128, n_hidden=512, **kw) == ("xla", 1)
  assert kernels.resolve_kernel("cpu", n_batch=128, n_hidden=512, **kw) == ("cpu", 1)
