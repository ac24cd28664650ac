"""Red-team probes of jrnn.interop kept as a table: each bad input to a converter or a framework
module, the error it must raise and a fragment of the message (docs/reliability.md, issue 24).

Nothing here draws random numbers or runs a layer: the arrays are NumPy zeros, the Flax and
Equinox modules are only traced (``eval_shape``), so the table costs a few traces, no compile.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.interop import from_simple_cell, to_simple_cell

torch = pytest.importorskip("torch")
nnx = pytest.importorskip("flax.nnx")
eqx = pytest.importorskip("equinox")
from jrnn.interop import equinox as jeqx  # noqa: E402
from jrnn.interop import flax_linen, flax_nnx  # noqa: E402

I, H, O, B, T = 3, 8, 2, 2, 4
F32 = np.float32


def _z(*shape, dtype=F32):
  return np.zeros(shape, dtype)


def _cell(**over):
  """A linen SimpleCell's dict, I=3 -> H=8; ``over`` replaces ``"i.kernel"``-style entries
  (``None`` as a value deletes the key)."""
  cell = {"i": {"kernel": _z(I, H), "bias": _z(H)}, "h": {"kernel": _z(H, H)}}
  for path, value in over.items():
    sub, key = path.split(".")
    if value is _DROP:
      del cell[sub][key]
    else:
      cell[sub][key] = value
  return cell


_DROP = object()


def _layer(h=H):
  return jrnn.LayerParams(_z(h, I), _z(h, h), _z(h))


def _rnn():
  return jrnn.RNNParams(_z(H, I), _z(H, H), _z(H), _z(O, H), _z(O))


def _stack():
  return jrnn.StackedParams(((_layer(),),))


def _linen_apply(variables, **attrs):
  model = flax_linen.ElmanRNN(H, **attrs)
  return jax.eval_shape(model.apply, variables, jnp.zeros((B, T, I), jnp.float32))


def _nnx(cls=flax_nnx.ElmanRNN, **kw):
  return nnx.eval_shape(lambda: cls(I, H, rngs=nnx.Rngs(0), **kw))


def _eqx(cls=jeqx.ElmanRNN, **kw):
  return jax.eval_shape(lambda k: cls(I, H, key=k, **kw), jax.random.key(0))


_VARS = {"w_xh": _z(H, I), "w_hh": _z(H, H), "b_h": _z(H)}


def _vars(**over):
  tree = dict(_VARS)
  for k, v in over.items():
    if v is _DROP:
      del tree[k]
    else:
      tree[k] = v
  return {"params": tree}


ROWS = [
    # --- boolean flags: a string is not False ---
    ("to_simple_cell residual='no'", lambda: to_simple_cell(_layer(), residual="no"),
     TypeError, "residual must be True or False, got 'no'"),
    ("to_simple_cell nnx='no'", lambda: to_simple_cell(_layer(), nnx="no"),
     TypeError, "nnx must be True or False, got 'no'"),
    ("from_simple_cell residual='no'", lambda: from_simple_cell(_cell(), residual="no"),
     TypeError, "residual must be True or False, got 'no'"),
    ("from_simple_cell residual=1", lambda: from_simple_cell(_cell(), residual=1),
     TypeError, "residual must be True or False, got 1"),
    ("from_torch ignore_dropout='yes'",
     lambda: jrnn.interop.from_torch(torch.nn.RNN(I, H), ignore_dropout="yes"),
     TypeError, "ignore_dropout must be True or False"),
    ("to_torch time_major='no'", lambda: jrnn.interop.to_torch(_stack(), time_major="no"),
     TypeError, "time_major must be True or False, got 'no'"),
    ("linen return_carry='no'", lambda: _linen_apply({"params": _VARS}, return_carry="no"),
     TypeError, "return_carry must be True or False"),
    ("linen reverse='no'", lambda: _linen_apply({"params": _VARS}, reverse="no"),
     TypeError, "reverse must be True or False"),
    ("linen stack bidirectional='no'",
     lambda: jax.eval_shape(flax_linen.StackedElmanRNN(H, bidirectional="no").init,
                            jax.random.key(0), jnp.zeros((B, T, I))),
     TypeError, "bidirectional must be True or False"),
    ("nnx return_carry='no'", lambda: _nnx(return_carry="no"),
     TypeError, "return_carry must be True or False"),
    ("nnx reverse='no'", lambda: _nnx(reverse="no"), TypeError, "reverse must be True or False"),
    ("nnx time_major='no'", lambda: _nnx(time_major="no"),
     TypeError, "time_major must be True or False"),
    ("nnx stack bidirectional='no'",
     lambda: _nnx(flax_nnx.StackedElmanRNN, bidirectional="no"),
     TypeError, "bidirectional must be True or False"),
    ("equinox return_carry='no'", lambda: _eqx(return_carry="no"),
     TypeError, "return_carry must be True or False"),
    ("equinox reverse='no'", lambda: _eqx(reverse="no"), TypeError, "reverse must be True or"),
    ("equinox learn_h0='no'", lambda: _eqx(learn_h0="no"), TypeError, "learn_h0 must be True"),
    ("equinox stack bidirectional='no'",
     lambda: _eqx(jeqx.StackedElmanRNN, bidirectional="no"),
     TypeError, "bidirectional must be True or False"),
    # --- from_simple_cell reads every array against the params it builds (H from i.kernel) ---
    ("from_simple_cell(None)", lambda: from_simple_cell(None),
     TypeError, "cell must be a SimpleCell's parameter dict"),
    ("from_simple_cell wrapped dict", lambda: from_simple_cell({"cell": _cell()}),
     ValueError, "pass the cell's own dict"),
    ("from_simple_cell both i and dense_i",
     lambda: from_simple_cell({**_cell(), "dense_i": _cell()["i"]}),
     ValueError, r"holds both 'i' \(linen\) and 'dense_i' \(NNX\)"),
    ("from_simple_cell sub-dict an array", lambda: from_simple_cell({"i": _z(I, H), "h": {}}),
     TypeError, r"cell\['i'\] must be a dict with 'kernel'"),
    ("from_simple_cell (9, 9) hidden kernel for H=8",
     lambda: from_simple_cell(_cell(**{"h.kernel": _z(9, 9)})),
     ValueError, r"cell\['h'\]\['kernel'\] must have shape \(H, H\)=\(8, 8\), got \(9, 9\)"),
    ("from_simple_cell non-square hidden kernel",
     lambda: from_simple_cell(_cell(**{"h.kernel": _z(8, 9)})),
     ValueError, r"cell\['h'\]\['kernel'\] must have shape \(H, H\)=\(8, 8\), got \(8, 9\)"),
    ("from_simple_cell wrong bias size", lambda: from_simple_cell(_cell(**{"i.bias": _z(7)})),
     ValueError, r"cell\['i'\]\['bias'\] must have shape \(H,\)=\(8,\), got \(7,\)"),
    ("from_simple_cell hidden bias of the wrong size",
     lambda: from_simple_cell(_cell(**{"h.bias": _z(3)})),
     ValueError, r"cell\['h'\]\['bias'\] must have shape \(H,\)=\(8,\), got \(3,\)"),
    ("from_simple_cell int kernel",
     lambda: from_simple_cell(_cell(**{"h.kernel": _z(H, H, dtype=np.int32)})),
     TypeError, r"cell\['h'\]\['kernel'\] must be float32 or float64, got int32"),
    ("from_simple_cell float16 kernel",
     lambda: from_simple_cell(_cell(**{"i.kernel": _z(I, H, dtype=np.float16)})),
     TypeError, r"cell\['i'\]\['kernel'\] must be float32 or float64, got float16"),
    ("from_simple_cell 1-D kernel", lambda: from_simple_cell(_cell(**{"i.kernel": _z(H)})),
     ValueError, r"cell\['i'\]\['kernel'\] must have shape \(I, H\)=\(\?, \?\), got \(8,\)"),
    ("from_simple_cell kernel None", lambda: from_simple_cell(_cell(**{"h.kernel": None})),
     TypeError, r"cell\['h'\]\['kernel'\] must be an array \(H, H\), got NoneType"),
    ("from_simple_cell missing kernel", lambda: from_simple_cell(_cell(**{"h.kernel": _DROP})),
     ValueError, r"cell\['h'\] has no 'kernel'"),
    ("from_simple_cell mixed dtypes",
     lambda: from_simple_cell(_cell(**{"h.kernel": _z(H, H, dtype=np.float64)})),
     TypeError, r"cell\['h'\]\['kernel'\] has dtype float64 but the parameters are float32"),
    ("from_simple_cell readout kernel (9, O)",
     lambda: from_simple_cell(_cell(), {"kernel": _z(9, O), "bias": _z(O)}),
     ValueError, r"readout\['kernel'\] must have shape \(H, O\)=\(8, \?\), got \(9, 2\)"),
    ("from_simple_cell readout bias size",
     lambda: from_simple_cell(_cell(), {"kernel": _z(H, O), "bias": _z(O + 1)}),
     ValueError, r"readout\['bias'\] must have shape \(O,\)=\(2,\), got \(3,\)"),
    ("from_simple_cell readout without kernel",
     lambda: from_simple_cell(_cell(), {"bias": _z(O)}),
     ValueError, r"readout has no 'kernel'"),
    ("from_simple_cell readout an array", lambda: from_simple_cell(_cell(), _z(H, O)),
     TypeError, "readout must be a Dense layer's parameter dict"),
    ("to_simple_cell inconsistent params",
     lambda: to_simple_cell(jrnn.LayerParams(_z(H, I), _z(9, 9), _z(H))),
     ValueError, r"params.w_xh must have shape \(H, I\)=\(9, \?\), got \(8, 3\)"),
    ("to_simple_cell RNNParams with b_y only",
     lambda: to_simple_cell(_rnn()._replace(w_hy=None)),
     ValueError, "params.b_y is given but params.w_hy is None"),
    ("to_simple_cell StackedParams", lambda: to_simple_cell(_stack()),
     TypeError, "convert a StackedParams layer by layer"),
    # --- torch ---
    ("from_torch dropout between layers",
     lambda: jrnn.interop.from_torch(torch.nn.RNN(I, H, num_layers=2, dropout=0.5)),
     ValueError, "dropout=0.5 between its 2 layers.*ignore_dropout=True"),
    ("from_torch float16 module",
     lambda: jrnn.interop.from_torch(torch.nn.RNN(I, H, dtype=torch.float16)),
     TypeError, "from_torch converts float32 or float64 modules, got torch.float16"),
    ("from_torch readout reading the wrong width",
     lambda: jrnn.interop.from_torch(torch.nn.RNN(I, H, bidirectional=True),
                                     readout=torch.nn.Linear(H, O)),
     ValueError, r"readout must read the RNN's D·H = 16 features \(in_features\), got "
                 "in_features=8"),
    ("from_torch readout in another dtype",
     lambda: jrnn.interop.from_torch(torch.nn.RNN(I, H),
                                     readout=torch.nn.Linear(H, O, dtype=torch.float64)),
     TypeError, "readout has dtype torch.float64 but the module is torch.float32"),
    ("from_torch an LSTM", lambda: jrnn.interop.from_torch(torch.nn.LSTM(I, H)),
     TypeError, "module must be a torch.nn.RNN, got LSTM"),
    ("to_torch inconsistent layer",
     lambda: jrnn.interop.to_torch(jrnn.StackedParams(((_layer(), ), (_layer(),)))),
     ValueError, r"params.layers\[1\]\[0\].w_xh must have shape \(H, D\*H\)=\(8, 8\), got "
                 r"\(8, 3\)"),
    ("to_torch empty stack", lambda: jrnn.interop.to_torch(jrnn.StackedParams(())),
     ValueError, "params.layers must be a non-empty tuple"),
    # --- flax linen: variables and modules ---
    ("from_variables {'params': {'foo': 1}}",
     lambda: flax_linen.from_variables({"params": {"foo": 1}}),
     ValueError, r"missing \['w_xh', 'w_hh', 'b_h'\], unexpected \['foo'\]"),
    ("from_variables an extra name", lambda: flax_linen.from_variables(_vars(foo=_z(1))),
     ValueError, r"missing \[\], unexpected \['foo'\]"),
    ("from_variables w_hy without b_y",
     lambda: flax_linen.from_variables(_vars(w_hy=_z(O, H))),
     ValueError, r"missing \['b_y'\]"),
    ("from_variables (9, 9) w_hh", lambda: flax_linen.from_variables(_vars(w_hh=_z(9, 9))),
     ValueError, r"params.w_xh must have shape \(H, I\)=\(9, \?\), got \(8, 3\)"),
    ("from_variables None", lambda: flax_linen.from_variables(None),
     TypeError, "variables must be a dict"),
    ("from_variables stack without w_hh",
     lambda: flax_linen.from_variables({"params": {"layers": [[{"w_xh": _z(H, I),
                                                                 "b_h": _z(H)}]]}}),
     ValueError, r"params\['layers'\] must be layers\[l\]\[d\] with the fields"),
    ("from_variables stack with b_y only",
     lambda: flax_linen.from_variables({"params": {"layers": ((_layer(),),), "b_y": _z(O)}}),
     ValueError, "params.b_y is given but params.w_hy is None"),
    ("to_variables stack with b_y only",
     lambda: flax_linen.to_variables(jrnn.StackedParams(((_layer(),),), None, _z(O))),
     ValueError, "params.b_y is given but params.w_hy is None"),
    ("linen apply with a missing parameter",
     lambda: _linen_apply(_vars(b_h=_DROP)),
     ValueError, r"ElmanRNN's variables must hold params \['b_h', 'w_hh', 'w_xh'\].*missing "
                 r"\['b_h'\]"),
    ("linen apply with a readout the module lacks",
     lambda: _linen_apply(_vars(w_hy=_z(O, H), b_y=_z(O))),
     ValueError, r"unexpected \['b_y', 'w_hy'\].*out_features"),
]


@pytest.mark.parametrize("label, call, exc, fragment", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_by_name(label, call, exc, fragment):
  with pytest.raises(exc, match=fragment):
    call()


def test_the_good_inputs_beside_the_table_still_convert():
  """The rows' good baselines pass, so each row fails for its one bad entry."""
  layer = from_simple_cell(_cell())
  assert layer.w_hh.shape == (H, H) and layer.w_hh.dtype == jnp.float32
  assert from_simple_cell(_cell(**{"i.bias": _DROP})).b_h.shape == (H,)
  p = from_simple_cell(_cell(), {"kernel": _z(H, O)})  # a Dense without bias
  assert p.b_y.shape == (O,)
  assert isinstance(flax_linen.from_variables(_vars()), jrnn.LayerParams)
  assert isinstance(flax_linen.from_variables(_vars(w_hy=_z(O, H), b_y=_z(O))), jrnn.RNNParams)
  _linen_apply({"params": _VARS})
  _nnx()
  _eqx(jeqx.StackedElmanRNN, bidirectional=True)
  assert to_simple_cell(_rnn()._replace(w_hy=None, b_y=None))[1] is None
  assert isinstance(to_simple_cell(_layer(), residual=np.bool_(True)), dict)


def test_from_torch_with_dropout_converts_when_asked_and_matches_eval_mode():
  """``ignore_dropout=True`` converts; the parameters reproduce the module in eval mode."""
  torch.manual_seed(0)
  module = torch.nn.RNN(I, H, num_layers=2, dropout=0.5, dtype=torch.float64).eval()
  params, cfg = jrnn.interop.from_torch(module, ignore_dropout=True)
  xs = np.random.default_rng(0).standard_normal((T, B, I))
  with torch.no_grad():
    want, _ = module(torch.from_numpy(xs))
  got = jrnn.stacked_forward(params, jnp.asarray(xs), **cfg).hs
  np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)
  # Dropout on a one-layer RNN does nothing (PyTorch applies it between layers): no refusal.
  with pytest.warns(UserWarning, match="dropout"):
    one = torch.nn.RNN(I, H, dropout=0.5)
  jrnn.interop.from_torch(one)
