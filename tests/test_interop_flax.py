"""jrnn.interop.flax_linen / flax_nnx and the SimpleCell conversions: the modules are jrnn.forward
and jrnn.stacked_forward under Flax's mechanisms, and nn.RNN(nn.SimpleCell) models convert."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
optax = pytest.importorskip("optax")
flax_errors = pytest.importorskip("flax.errors")

from jrnn.interop import flax_linen, flax_nnx  # noqa: E402

B, T, I, H, O = 3, 6, 4, 5, 2  # all different: a transposed weight cannot pass
F64 = jnp.float64
RTOL = 1e-10
LENGTHS = jnp.array([6, 2, 4])


# NumPy draws test data: jax.random compiles once per shape, which costs more than the tests.
def _xs(seed=1, shape=(B, T, I)):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def _layer(rng, n_in, learn_h0=False):
  w = lambda *shape: jnp.asarray(rng.standard_normal(shape) / np.sqrt(shape[-1]))  # noqa: E731
  return jrnn.LayerParams(w(H, n_in), w(H, H), w(H), w(H) if learn_h0 else None)


def _params(seed=0, readout=True, learn_h0=False):
  """float64 RNNParams, every field nonzero (so every gradient is exercised)."""
  rng = np.random.default_rng(seed)
  layer = _layer(rng, I, learn_h0)
  w_hy, b_y = (jnp.asarray(rng.standard_normal((O, H))), jnp.asarray(rng.standard_normal(O))) \
      if readout else (None, None)
  return jrnn.RNNParams(layer.w_xh, layer.w_hh, layer.b_h, w_hy, b_y, layer.h0)


def _stacked(seed=0):
  """float64 StackedParams: two bidirectional layers and a readout."""
  rng = np.random.default_rng(seed)
  layers = ((_layer(rng, I), _layer(rng, I)), (_layer(rng, 2 * H), _layer(rng, 2 * H)))
  return jrnn.StackedParams(layers, jnp.asarray(rng.standard_normal((O, 2 * H))),
                            jnp.asarray(rng.standard_normal(O)))


def _close(a, b, rtol=RTOL):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-12)


def _loss(carry, outputs):
  """Weighs every output and carry entry differently, so that no error cancels."""
  w_out = jnp.cos(jnp.arange(outputs.size, dtype=F64)).reshape(outputs.shape)
  w_c = jnp.sin(jnp.arange(carry.size, dtype=F64)).reshape(carry.shape)
  return jnp.sum(w_out * outputs ** 2) + jnp.sum(w_c * carry)


def _run_and_grads(fn, *args):
  """``(fn(*args), gradients of _loss(*fn(*args)) w.r.t. every argument)``, compiled once."""
  def f(*a):
    out = fn(*a)
    return _loss(*out), out
  (_, out), grads = jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(args))),
                                               has_aux=True))(*args)
  return out, grads


def _jrnn_layer(**kw):
  """``(h_last, outputs)`` of jrnn.forward; the states when ``params`` has no readout."""
  def run(p, xs):
    if p.w_hy is None:  # any readout will do: the states do not depend on it
      out = jrnn.forward(p._replace(w_hy=jnp.ones((1, H), F64), b_y=jnp.zeros((1,), F64)), xs,
                         **kw)
      return out.h_last, out.hs
    out = jrnn.forward(p, xs, **kw)
    return out.h_last, out.ys
  return run


def _jrnn_stack(**kw):
  def run(p, xs):
    out = jrnn.stacked_forward(p, xs, **kw)
    return out.h_last, out.hs if p.w_hy is None else out.ys
  return run


def test_import_jrnn_loads_no_framework():
  code = ("import jrnn, sys; assert 'flax' not in sys.modules and 'equinox' not in sys.modules; "
          "jrnn.interop.flax_linen; assert 'flax' in sys.modules and 'equinox' not in sys.modules")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_interop_namespace_is_lazy_and_named():
  assert jrnn.interop.flax_linen is flax_linen and jrnn.interop.flax_nnx is flax_nnx
  assert {"flax_linen", "flax_nnx", "equinox", "from_simple_cell"} <= set(dir(jrnn.interop))
  with pytest.raises(AttributeError, match="no attribute 'haiku'"):
    jrnn.interop.haiku  # noqa: B018


# Module attributes, the call's arguments, and what jrnn.forward is given for them.
LAYER_CASES = {
    "readout_learnt_h0_lengths": (
        dict(out_features=O, learn_h0=True), dict(lengths=LENGTHS), dict(lengths=LENGTHS)),
    "states_reverse_relu_mask": (
        dict(reverse=True, activation="relu"), dict(mask=jnp.array([[1, 1, 0, 1, 1, 0]] * B)),
        dict(reverse=True, activation="relu", mask=jnp.array([[1, 1, 0, 1, 1, 0]] * B))),
    "autodiff_time_major_h0_unroll": (
        dict(out_features=O, grad="autodiff", time_major=True, output_activation="tanh",
             unroll=2),
        dict(h0=0.3 * jnp.ones((B, H), F64)),
        dict(grad="autodiff", time_major=True, output_activation="tanh", unroll=2,
             h0=0.3 * jnp.ones((B, H), F64))),
}


@pytest.mark.slow
@pytest.mark.parametrize("attrs, call, keywords", LAYER_CASES.values(), ids=LAYER_CASES.keys())
def test_linen_layer_is_jrnn_forward(attrs, call, keywords):
  keywords = {"time_major": False, **keywords}
  xs = jnp.swapaxes(_xs(), 0, 1) if attrs.get("time_major") else _xs()
  params = _params(readout="out_features" in attrs, learn_h0=attrs.get("learn_h0", False))
  model = flax_linen.ElmanRNN(H, return_carry=True, param_dtype=F64, **attrs)
  variables = flax_linen.to_variables(params)
  got, (g_vars, g_xs) = _run_and_grads(lambda v, xs: model.apply(v, xs, **call), variables, xs)
  want, (g_params, g_xs_want) = _run_and_grads(_jrnn_layer(**keywords), params, xs)
  _close(got, want)
  _close(flax_linen.from_variables(g_vars),
         g_params if params.w_hy is not None else jrnn.LayerParams(*g_params[:3], g_params.h0))
  _close(g_xs, g_xs_want)


def test_linen_parameters_are_one_jrnn_draw_under_jrnn_names():
  model = flax_linen.ElmanRNN(H, out_features=O, learn_h0=True, param_dtype=F64)
  # One compiled draw (jax.random would compile each op eagerly); no forward pass computed.
  params = jax.jit(lambda k: model.lazy_init(k, _xs()))(jax.random.key(0))["params"]
  assert {k: v.shape for k, v in params.items()} == {
      "w_xh": (H, I), "w_hh": (H, H), "b_h": (H,), "h0": (H,), "w_hy": (O, H), "b_y": (O,)}
  assert all(a.dtype == F64 for a in params.values())
  w = params["w_hh"]  # the default scheme is orthogonal, as SimpleCell's recurrent kernel
  np.testing.assert_allclose(w @ w.T, np.eye(H), atol=1e-12)
  stack = flax_linen.StackedElmanRNN(H, num_layers=2, bidirectional=True, out_features=O,
                                     param_dtype=F64)
  tree = jax.eval_shape(stack.init, jax.random.key(0), _xs())["params"]  # shapes only
  assert set(tree) == {"layers", "w_hy", "b_y"} and tree["w_hy"].shape == (O, 2 * H)
  assert isinstance(tree["layers"][1][1], jrnn.LayerParams)
  assert tree["layers"][1][1].w_xh.shape == (H, 2 * H) and tree["layers"][1][1].h0 is None


def test_linen_stack_is_jrnn_stacked_forward():
  xs = _xs()
  params = _stacked()
  model = flax_linen.StackedElmanRNN(H, num_layers=2, bidirectional=True, out_features=O,
                                     return_carry=True, param_dtype=F64)
  got, g_vars = _run_and_grads(lambda v: model.apply(v, xs, lengths=LENGTHS),
                               flax_linen.to_variables(params))
  want, g_params = _run_and_grads(lambda p: _jrnn_stack(lengths=LENGTHS, time_major=False)(p, xs),
                                  params)
  _close(got, want)
  assert got[0].shape == (4, B, H)
  _close(flax_linen.from_variables(g_vars[0]), g_params[0])


def test_nnx_modules_are_jrnn_init_and_forward():
  xs = _xs()
  layer = flax_nnx.ElmanRNN(I, H, O, learn_h0=True, scheme="glorot", return_carry=True,
                            param_dtype=F64, rngs=nnx.Rngs(params=7))
  # the key the module drew from: the first of the rngs' params stream
  _close(layer.params, jrnn.init_params(nnx.Rngs(params=7).params(), I, H, O, scheme="glorot",
                                        learn_h0=True, dtype=F64))
  stack = flax_nnx.StackedElmanRNN(I, H, num_layers=2, scheme="glorot", return_carry=True,
                                   param_dtype=F64, rngs=nnx.Rngs(params=3))
  _close(stack.params, jrnn.init_stacked(nnx.Rngs(params=3).params(), I, H, num_layers=2,
                                         scheme="glorot", dtype=F64))
  for module, ref in ((layer, _jrnn_layer(lengths=LENGTHS, time_major=False)),
                      (stack, _jrnn_stack(lengths=LENGTHS, time_major=False))):
    def f(m):
      out = m(xs, lengths=LENGTHS)
      return _loss(*out), out
    (_, got), grads = nnx.jit(nnx.value_and_grad(f, has_aux=True))(module)
    want, (g_params, _) = _run_and_grads(ref, module.params, xs)
    _close(got, want)
    # The gradient State merged into the module's graph reads as jrnn's tree.
    _close(nnx.merge(nnx.graphdef(module), grads).params, g_params)


# --------------------------------------------------------------------- Flax's own SimpleCell

class _FlaxModel(nn.Module):
  """What a Flax user writes today: nn.RNN(nn.SimpleCell) and a Dense readout."""
  @nn.compact
  def __call__(self, xs, seq_lengths=None):
    # Built inline in a compact parent, the cell's parameters sit beside the RNN's name.
    carry, hs = nn.RNN(nn.SimpleCell(H, param_dtype=F64, name="cell"), return_carry=True)(
        xs, seq_lengths=seq_lengths)
    return carry, nn.Dense(O, param_dtype=F64, name="head")(hs)


class _SwappedModel(nn.Module):
  """The same model with one line changed: the jrnn layer."""
  @nn.compact
  def __call__(self, xs, seq_lengths=None):
    carry, hs = flax_linen.ElmanRNN(H, return_carry=True, param_dtype=F64,
                                    name="cell")(xs, lengths=seq_lengths)
    return carry, nn.Dense(O, param_dtype=F64, name="head")(hs)


def _flax_variables(seed=0):
  """nn.RNN(SimpleCell) + Dense variables, drawn in Flax's own layout (kernels (in, out))."""
  rng = np.random.default_rng(seed)
  w = lambda *shape: jnp.asarray(rng.standard_normal(shape) / np.sqrt(shape[0]))  # noqa: E731
  return {"params": {"cell": {"i": {"kernel": w(I, H), "bias": w(H)}, "h": {"kernel": w(H, H)}},
                     "head": {"kernel": w(H, O), "bias": w(O)}}}


def _swap(flax_vars):
  layer = jrnn.interop.from_simple_cell(flax_vars["params"]["cell"])
  return {"params": {"cell": flax_linen.to_variables(layer)["params"],
                     "head": flax_vars["params"]["head"]}}


def _unswap(ours):
  layer = flax_linen.from_variables(ours["params"]["cell"])
  return {"params": {"cell": jrnn.interop.to_simple_cell(layer), "head": ours["params"]["head"]}}


@pytest.mark.slow
def test_converted_simple_cell_model_reproduces_flax():
  xs = _xs()
  flax_vars = _flax_variables()
  assert jax.tree.map(jnp.shape, flax_vars) == jax.tree.map(
      jnp.shape, jax.eval_shape(_FlaxModel().init, jax.random.key(0), xs))
  theirs, (g_flax,) = _run_and_grads(lambda v: _FlaxModel().apply(v, xs), flax_vars)
  ours, (g_ours,) = _run_and_grads(lambda v: _SwappedModel().apply(v, xs), _swap(flax_vars))
  _close(ours, theirs)
  _close(_unswap(g_ours), g_flax)  # gradients, mapped back to Flax's names and layout
  _close(_unswap(_swap(flax_vars)), flax_vars)  # the conversion is lossless both ways
  # Flax's seq_lengths and jrnn's lengths agree on the carry and on every valid step.
  carry, ys = jax.jit(_FlaxModel().apply)(flax_vars, xs, seq_lengths=LENGTHS)
  carry2, ys2 = jax.jit(_SwappedModel().apply)(_swap(flax_vars), xs, seq_lengths=LENGTHS)
  _close(carry2, carry)
  valid = (jnp.arange(T)[None, :] < LENGTHS[:, None])[..., None]
  _close(jnp.where(valid, ys2, 0), jnp.where(valid, ys, 0))


def test_simple_cell_conversion_round_trips_with_readout_residual_and_nnx_names():
  p = _params()
  cell, dense = jrnn.interop.to_simple_cell(p, residual=True)
  assert cell["i"]["kernel"].shape == (I, H) and dense["kernel"].shape == (H, O)
  _close(jrnn.interop.from_simple_cell(cell, dense, residual=True), p)
  nnx_cell = jrnn.interop.to_simple_cell(p.layer, nnx=True)
  assert set(nnx_cell) == {"dense_i", "dense_h"}
  _close(jrnn.interop.from_simple_cell(nnx_cell), jrnn.LayerParams(p.w_xh, p.w_hh, p.b_h))


def test_residual_linen_cell_and_nnx_cell_reproduced():
  xs, layer = _xs(), _params(readout=False).layer
  cell = jrnn.interop.to_simple_cell(layer, residual=True)
  theirs = jax.jit(nn.RNN(nn.SimpleCell(H, residual=True, param_dtype=F64)).apply)(
      {"params": {"cell": cell}}, xs)
  converted = jrnn.interop.from_simple_cell(cell, residual=True)
  _close(converted, layer)
  _close(jax.jit(flax_linen.ElmanRNN(H).apply)(flax_linen.to_variables(converted), xs), theirs)

  # NNX's own cell and the NNX module, built without drawing (nnx.eval_shape), then given values.
  def build(make, values):
    module = nnx.eval_shape(make)
    state = nnx.state(module)
    nnx.replace_by_pure_dict(state, values)
    nnx.update(module, state)
    return module

  nnx_cell = build(lambda: nnx.SimpleCell(I, H, dtype=F64, param_dtype=F64, rngs=nnx.Rngs(0)),
                   jrnn.interop.to_simple_cell(layer, nnx=True))
  ours = build(lambda: flax_nnx.ElmanRNN(I, H, param_dtype=F64, rngs=nnx.Rngs(0)),
               {"w_xh": layer.w_xh, "w_hh": layer.w_hh, "b_h": layer.b_h})
  _close(jrnn.interop.from_simple_cell(nnx.to_pure_dict(nnx.state(nnx_cell))), layer)
  _close(nnx.jit(lambda m: m(xs))(ours), nnx.jit(lambda c: nnx.RNN(c)(xs))(nnx_cell))


# --------------------------------------------------------------------- transformations, optax

@pytest.mark.slow
def test_linen_under_jit_vmap_grad_and_an_optax_step():
  xs, targets = _xs(), _xs(2, (B, T, O))
  model = flax_linen.ElmanRNN(H, out_features=O, scheme="glorot", param_dtype=F64)
  variables = model.init(jax.random.key(0), xs)
  eager = model.apply(variables, xs)
  _close(jax.jit(model.apply)(variables, xs), eager)
  # One sequence at a time ((T, I), unbatched) under vmap equals the batched call.
  _close(jax.jit(jax.vmap(model.apply, in_axes=(None, 0)))(variables, xs), eager)

  def loss(v):
    return jnp.mean((model.apply(v, xs) - targets) ** 2)

  tx = optax.sgd(0.1)

  @jax.jit
  def train_step(v, opt_state):
    value, grads = jax.value_and_grad(loss)(v)
    updates, opt_state = tx.update(grads, opt_state, v)
    return optax.apply_updates(v, updates), opt_state, value, grads

  new, _, before, grads = train_step(variables, tx.init(variables))
  _close(new, jax.tree.map(lambda p, g: p - 0.1 * g, variables, grads))
  assert jax.jit(loss)(new) < before


def test_an_nnx_optimizer_step():
  xs, targets = _xs(), _xs(2, (B, T, O))
  model = flax_nnx.ElmanRNN(I, H, O, scheme="glorot", param_dtype=F64, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  loss = lambda m: jnp.mean((m(xs) - targets) ** 2)  # noqa: E731

  @nnx.jit
  def train_step(m, opt):
    value, grads = nnx.value_and_grad(loss)(m)
    opt.update(m, grads)
    return value, loss(m)

  before, after = train_step(model, optimizer)
  assert after < before


def test_bad_inputs_name_the_argument():
  """jrnn's trace-time checks reach the caller through the modules (traced only: nothing runs)."""
  model = flax_linen.ElmanRNN(H, param_dtype=F64)
  variables = jax.eval_shape(model.init, jax.random.key(0), _xs())
  trace = lambda m, xs: jax.eval_shape(m.apply, variables, xs)  # noqa: E731
  with pytest.raises(ValueError, match=r"xs must have rank 2 \(T, I\) or 3"):
    trace(model, _xs(shape=(2, B, T, I)))
  with pytest.raises(flax_errors.ScopeParamShapeError, match="w_xh"):  # Flax's own check
    trace(model, _xs(shape=(B, T, I + 1)))
  with pytest.raises(ValueError, match="grad must be one of"):
    trace(model.clone(grad="fast"), _xs())
  # kernel= and solver= reach jrnn: the compiled Pallas kernel needs a CUDA GPU.
  if jax.default_backend() == "cpu":
    with pytest.raises(ValueError, match="kernel='pallas' compiles Triton kernels"):
      trace(model.clone(kernel="pallas"), _xs())
  with pytest.raises(ValueError, match="solver must be one of"):
    trace(model.clone(solver="no-such-solver"), _xs())
  with pytest.raises(TypeError, match="convert a StackedParams layer by layer"):
    jrnn.interop.to_simple_cell(_stacked())
  with pytest.raises(ValueError, match="pass the cell's own dict"):
    jrnn.interop.from_simple_cell({"cell": {}})
  with pytest.raises(TypeError, match="params must be RNNParams, LayerParams or StackedParams"):
    flax_linen.to_variables({"w_xh": 1})
