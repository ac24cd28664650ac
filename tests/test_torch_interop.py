"""``from_torch``/``to_torch`` against ``torch.nn.RNN``: outputs, ``h_n`` and every gradient."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

torch = pytest.importorskip("torch")

T, B, I, H = 5, 3, 4, 6
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}

# (num_layers, bidirectional, nonlinearity, bias, batch_first): every value of every option, and
# every pair of values of two options together in some row (a pairwise design: 6 rows, not 48).
CONFIGS = [
    (1, False, "tanh", True, False),
    (1, True, "relu", False, True),
    (2, False, "relu", False, False),
    (2, True, "tanh", True, True),
    (3, False, "tanh", False, True),
    (3, True, "relu", True, False),
]


def _module(config, dtype, seed=0):
  num_layers, bidirectional, nonlinearity, bias, batch_first = config
  torch.manual_seed(seed)
  return torch.nn.RNN(I, H, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
                      batch_first=batch_first, bidirectional=bidirectional, dtype=dtype)


def _inputs(module, dtype, seed=1):
  gen = torch.Generator().manual_seed(seed)
  shape = (B, T, I) if module.batch_first else (T, B, I)
  d = 2 if module.bidirectional else 1
  x = torch.randn(shape, generator=gen, dtype=dtype)
  h0 = torch.randn((module.num_layers * d, B, H), generator=gen, dtype=dtype)
  out_w = torch.randn(shape[:2] + (d * H,), generator=gen, dtype=dtype)
  hn_w = torch.randn(h0.shape, generator=gen, dtype=dtype)
  return x, h0, out_w, hn_w


def _j(t):
  return jnp.asarray(t.detach().numpy())


def _torch_grads(module, params):
  """Torch's gradients laid out as jrnn's StackedParams; ``b_h`` gets ``bias_ih``'s."""
  layers = []
  for l, layer in enumerate(params.layers):
    dirs = []
    for d, p in enumerate(layer):
      sfx = f"l{l}" + ("_reverse" if d else "")
      w_ih = getattr(module, f"weight_ih_{sfx}").grad
      w_hh = getattr(module, f"weight_hh_{sfx}").grad
      if module.bias:
        g_ih = getattr(module, f"bias_ih_{sfx}").grad
        # b_h = b_ih + b_hh, so both torch biases have the gradient of b_h.
        np.testing.assert_allclose(g_ih.numpy(), getattr(module, f"bias_hh_{sfx}").grad.numpy(),
                                   **TOL[g_ih.dtype])
        b = _j(g_ih)
      else:
        b = None
      dirs.append((_j(w_ih), _j(w_hh), b))
    layers.append(dirs)
  return layers


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=[
    f"L{c[0]}-{'bi' if c[1] else 'uni'}-{c[2]}-{'bias' if c[3] else 'nobias'}-"
    f"{'bf' if c[4] else 'tm'}" for c in CONFIGS])
def test_from_torch_matches_outputs_h_n_and_gradients(config, dtype):
  module = _module(config, dtype)
  x, h0, out_w, hn_w = _inputs(module, dtype)
  params, cfg = jrnn.interop.from_torch(module)
  assert cfg == dict(activation=config[2], time_major=not config[4])
  assert params.num_layers == config[0] and params.num_directions == (2 if config[1] else 1)
  assert params.w_hy is None
  jdtype = jnp.float32 if dtype == torch.float32 else jnp.float64
  assert all(a.dtype == jdtype for a in jax.tree.leaves(params))
  # Alternate the two backward passes over the configurations: both must match torch.
  bptt = "hand" if CONFIGS.index(config) % 2 == 0 else "autodiff"

  x.requires_grad_(True)
  h0.requires_grad_(True)
  out, h_n = module(x, h0)
  (torch.sum(out * out_w) + torch.sum(h_n * hn_w)).backward()

  def loss(p, xs, h_init):
    o = jrnn.stacked_forward(p, xs, h0=h_init, grad=bptt, **cfg)
    return jnp.sum(o.hs * _j(out_w)) + jnp.sum(o.h_last * _j(hn_w)), o

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
  (_, o), (g, g_x, g_h0) = fn(params, _j(x), _j(h0))
  tol = TOL[dtype]
  np.testing.assert_allclose(o.hs, _j(out), **tol)
  np.testing.assert_allclose(o.h_last, _j(h_n), **tol)
  np.testing.assert_allclose(g_x, _j(x.grad), **tol)
  np.testing.assert_allclose(g_h0, _j(h0.grad), **tol)
  for layer_g, layer_t in zip(g.layers, _torch_grads(module, params)):
    for p, (w_ih, w_hh, b) in zip(layer_g, layer_t):
      np.testing.assert_allclose(p.w_xh, w_ih, **tol)
      np.testing.assert_allclose(p.w_hh, w_hh, **tol)
      if b is not None:
        np.testing.assert_allclose(p.b_h, b, **tol)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_from_torch_with_linear_readout_and_default_h0(bidirectional):
  dtype = torch.float64
  module = _module((2, bidirectional, "tanh", True, True), dtype)
  d = 2 if bidirectional else 1
  torch.manual_seed(3)
  head = torch.nn.Linear(d * H, 2, dtype=dtype)
  x, _, _, _ = _inputs(module, dtype)
  params, cfg = jrnn.interop.from_torch(module, readout=head)
  out, h_n = module(x)
  o = jrnn.stacked_forward(params, _j(x), **cfg)
  np.testing.assert_allclose(o.ys, _j(head(out)), **TOL[dtype])
  np.testing.assert_allclose(o.h_last, _j(h_n), **TOL[dtype])
  no_bias = torch.nn.Linear(d * H, 2, bias=False, dtype=dtype)
  params, _ = jrnn.interop.from_torch(module, readout=no_bias)
  np.testing.assert_array_equal(params.b_y, 0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_match_torch_packed_sequences(bidirectional):
  dtype = torch.float64
  module = _module((2, bidirectional, "tanh", True, False), dtype, seed=4)
  x, h0, _, _ = _inputs(module, dtype, seed=5)
  lengths = torch.tensor([5, 2, 3])
  packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
  out_packed, h_n = module(packed, h0)
  out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, total_length=T)
  params, cfg = jrnn.interop.from_torch(module)
  o = jrnn.stacked_forward(params, _j(x), h0=_j(h0), lengths=jnp.asarray(lengths.numpy()), **cfg)
  np.testing.assert_allclose(o.h_last, _j(h_n), **TOL[dtype])
  for b, n in enumerate(lengths.tolist()):
    np.testing.assert_allclose(o.hs[:n, b], _j(out[:n, b]), **TOL[dtype])


@pytest.mark.slow
@pytest.mark.parametrize("dtype,activation,time_major", [
    (jnp.float32, "tanh", True), (jnp.float64, "relu", False)])
def test_to_torch_round_trip(dtype, activation, time_major):
  params = jrnn.init_stacked(jax.random.key(0), I, H, num_layers=2, bidirectional=True,
                             scheme="pytorch", dtype=dtype)
  module = jrnn.interop.to_torch(params, activation=activation, time_major=time_major)
  assert module.nonlinearity == activation and module.batch_first == (not time_major)
  assert module.num_layers == 2 and module.bidirectional
  back, cfg = jrnn.interop.from_torch(module)
  assert cfg == dict(activation=activation, time_major=time_major)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    assert a.dtype == b.dtype == dtype
    np.testing.assert_array_equal(a, b)
  xs = jax.random.normal(jax.random.key(1), (T, B, I) if time_major else (B, T, I), dtype)
  out, h_n = module(torch.from_numpy(np.array(xs)))
  o = jax.jit(functools.partial(jrnn.stacked_forward, **cfg))(params, xs)
  tol = TOL[torch.float32 if dtype == jnp.float32 else torch.float64]
  np.testing.assert_allclose(o.hs, _j(out), **tol)
  np.testing.assert_allclose(o.h_last, _j(h_n), **tol)


def test_to_torch_accepts_rnn_params():
  params = jrnn.init_params(jax.random.key(2), I, H, 2, scheme="pytorch", dtype=jnp.float64)
  module = jrnn.interop.to_torch(params)
  assert module.num_layers == 1 and not module.bidirectional
  xs = jax.random.normal(jax.random.key(3), (T, B, I), jnp.float64)
  out, h_n = module(torch.from_numpy(np.array(xs)))
  o = jrnn.forward(params, xs)
  np.testing.assert_allclose(o.hs, _j(out), **TOL[torch.float64])
  np.testing.assert_allclose(o.h_last, _j(h_n[0]), **TOL[torch.float64])


def test_interop_rejects_bad_input():
  with pytest.raises(TypeError, match=r"module must be a torch.nn.RNN, got LSTM"):
    jrnn.interop.from_torch(torch.nn.LSTM(I, H))
  with pytest.raises(TypeError, match=r"readout must be a torch.nn.Linear, got Conv1d"):
    jrnn.interop.from_torch(torch.nn.RNN(I, H), readout=torch.nn.Conv1d(H, 2, 1))
  params = jrnn.init_stacked(jax.random.key(0), I, H)
  with pytest.raises(ValueError, match=r"activation must be 'tanh' or 'relu' .* got 'sigmoid'"):
    jrnn.interop.to_torch(params, activation="sigmoid")
  with pytest.raises(TypeError, match=r"params must be StackedParams or RNNParams, got dict"):
    jrnn.interop.to_torch({"w": 1})
  with pytest.raises(TypeError, match=r"to_torch converts float32 or float64 parameters, got bf"):
    jrnn.interop.to_torch(jax.tree.map(lambda a: a.astype(jnp.bfloat16), params))
