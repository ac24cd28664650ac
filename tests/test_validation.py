"""Bad input raises ValueError/TypeError at trace time, naming the argument and the expected."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

T, B, I, H, O = 4, 2, 3, 5, 2


@pytest.fixture(scope="module")
def params():
  return jrnn.init_params(jax.random.key(0), I, H, O, dtype=jnp.float64)


@pytest.fixture(scope="module")
def stacked():
  return jrnn.init_stacked(jax.random.key(0), I, H, O, num_layers=2, bidirectional=True,
                           dtype=jnp.float64)


XS = np.zeros((T, B, I))

# (description, kwargs for forward, exception, regex the message must match)
FORWARD_CASES = [
    ("xs rank 1", dict(xs=np.zeros(I)), ValueError, r"xs must have rank 2 \(T, I\) or 3"),
    ("xs rank 4", dict(xs=np.zeros((T, B, 1, I))), ValueError,
     r"xs must have rank 2 \(T, I\) or 3 \(T, B, I\), got shape \(4, 2, 1, 3\)"),
    ("xs empty", dict(xs=np.zeros((0, B, I))), ValueError,
     r"xs must have at least one time step \(T >= 1\), got shape \(0, 2, 3\)"),
    ("xs wrong I", dict(xs=np.zeros((T, B, I + 1))), ValueError,
     r"xs must have shape \(T, B, I=3\)=\(\?, \?, 3\), got \(4, 2, 4\)"),
    ("xs wrong I unbatched", dict(xs=np.zeros((T, I + 1))), ValueError,
     r"xs must have shape \(T, I=3\).*got \(4, 4\)"),
    ("xs wrong I batch-major", dict(xs=np.zeros((B, T, 1)), time_major=False), ValueError,
     r"xs must have shape \(B, T, I=3\)"),
    ("xs int", dict(xs=np.zeros((T, B, I), np.int32)), TypeError,
     r"xs must have a floating dtype .* got int32"),
    ("xs float32 vs float64 params", dict(xs=np.zeros((T, B, I), np.float32)), TypeError,
     r"xs has dtype float32 but the parameters are float64"),
    ("mask wrong shape", dict(mask=np.ones((B, T), bool)), ValueError,
     r"mask must have shape \(T, B\)=\(4, 2\), got \(2, 4\)"),
    ("mask wrong shape batch-major", dict(xs=np.zeros((B, T, I)), time_major=False,
                                          mask=np.ones((T, B), bool)), ValueError,
     r"mask must have shape \(B, T\)=\(2, 4\), got \(4, 2\)"),
    ("mask wrong shape unbatched", dict(xs=np.zeros((T, I)), mask=np.ones((T, 1), bool)),
     ValueError, r"mask must have shape \(T,\)=\(4,\), got \(4, 1\)"),
    ("mask rank 1 batched", dict(mask=np.ones(T, bool)), ValueError, r"mask must have shape"),
    ("mask and lengths", dict(mask=np.ones((T, B), bool), lengths=np.array([1, 2])), ValueError,
     r"mask or lengths, not both"),
    ("lengths too long", dict(lengths=np.array([1, T + 1])), ValueError,
     r"lengths must lie in \[0, T=4\], got min 1 and max 5"),
    ("lengths negative", dict(lengths=np.array([-1, 2])), ValueError,
     r"lengths must lie in \[0, T=4\]"),
    ("lengths float", dict(lengths=np.array([1.0, 2.0])), TypeError,
     r"lengths must have an integer dtype, got float64"),
    ("lengths wrong shape", dict(lengths=np.array([1, 2, 3])), ValueError,
     r"lengths must have shape \(B,\)=\(2,\), got \(3,\)"),
    ("lengths not scalar unbatched", dict(xs=np.zeros((T, I)), lengths=np.array([2])), ValueError,
     r"lengths must have shape \(\), got \(1,\)"),
    ("h0 wrong H", dict(h0=np.zeros(H + 1)), ValueError,
     r"h0 must have shape .*\(H,\).*got \(6,\)"),
    ("h0 wrong B", dict(h0=np.zeros((B + 1, H))), ValueError,
     r"h0 must have shape \(B, H\)=\(2, 5\), got \(3, 5\)"),
    ("h0 wrong rank", dict(h0=np.zeros((1, B, H))), ValueError,
     r"h0 must have shape \(H,\)=\(5,\) or \(B, H\)=\(2, 5\), got \(1, 2, 5\)"),
    ("h0 int", dict(h0=np.zeros(H, np.int32)), TypeError, r"h0 must have a floating dtype"),
    ("h0 float32", dict(h0=np.zeros(H, np.float32)), TypeError, r"h0 has dtype float32"),
    ("unknown activation", dict(activation="gelu"), ValueError,
     r"activation must be one of \['identity', .*'tanh'\] or a callable, got 'gelu'"),
    ("activation not callable", dict(activation=3), TypeError,
     r"activation must be a name or a callable, got int"),
    ("unknown output activation", dict(output_activation="softmax"), ValueError,
     r"output_activation must be one of .* got 'softmax'"),
    ("unknown grad", dict(grad="manual"), ValueError,
     r"grad must be one of \('hand', 'autodiff'\), got 'manual'"),
    ("unknown kernel", dict(kernel="cuda"), ValueError,
     r"kernel must be one of \('auto', 'xla', 'cpu', 'pallas', 'pallas_interpret'\), got 'cuda'"),
    ("unknown solver", dict(solver="magic"), ValueError, r"solver must be one of .*got 'magic'"),
    ("time_major not a bool", dict(time_major="no"), TypeError,
     r"time_major must be True or False, got 'no'"),
    ("unroll zero", dict(unroll=0), ValueError, r"unroll must be >= 1, got 0"),
]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
@pytest.mark.parametrize("use_jit", [False, True])
def test_forward_rejects_bad_input(params, case, use_jit):
  _, kw, exc, match = case
  kw = dict(kw)
  xs = kw.pop("xs", XS)
  static = {k: kw.pop(k) for k in list(kw) if k in (
      "activation", "output_activation", "time_major", "grad", "kernel", "solver", "unroll")}
  fn = functools.partial(jrnn.forward, **static)
  if use_jit:
    # Trace-time checks fire under jit too; lengths are traced there, so their values can't be
    # checked, but their dtype and shape still are.
    if "lengths" in kw and "lie in" in match:
      pytest.skip("traced lengths cannot be range-checked")
    fn = jax.jit(fn)
  with pytest.raises(exc, match=match):
    fn(params, xs, **kw)


PARAM_CASES = [
    ("int w_hh", dict(w_hh=np.zeros((H, H), np.int32)), TypeError,
     r"params.w_hh must have a floating dtype .* got int32"),
    ("int w_xh", dict(w_xh=np.zeros((H, I), np.int32)), TypeError,
     r"params.w_xh must have a floating"),
    ("float32 b_h", dict(b_h=np.zeros(H, np.float32)), TypeError,
     r"params.b_h has dtype float32 but the parameters are float64"),
    ("int w_hy", dict(w_hy=np.zeros((O, H), np.int32)), TypeError,
     r"params.w_hy must have a floating"),
    ("float32 b_y", dict(b_y=np.zeros(O, np.float32)), TypeError, r"params.b_y has dtype float32"),
    ("w_hh not square", dict(w_hh=np.zeros((H, H + 1))), ValueError,
     r"params.w_hh must be square \(H, H\), got \(5, 6\)"),
    ("w_xh wrong H", dict(w_xh=np.zeros((H + 1, I))), ValueError,
     r"params.w_xh must have shape \(H, I\)=\(5, \?\), got \(6, 3\)"),
    ("b_h wrong", dict(b_h=np.zeros(H + 1)), ValueError,
     r"params.b_h must have shape \(H,\)=\(5,\)"),
    ("w_hy wrong H", dict(w_hy=np.zeros((O, H + 1))), ValueError,
     r"params.w_hy must have shape \(O, H=5\)"),
    ("b_y wrong", dict(b_y=np.zeros(O + 1)), ValueError, r"params.b_y must have shape \(O=2,\)"),
    ("learnt h0 wrong", dict(h0=np.zeros(H + 1)), ValueError, r"params.h0 must have shape \(H,\)"),
]


@pytest.mark.parametrize("case", PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
def test_forward_rejects_bad_params(params, case):
  _, replace, exc, match = case
  bad = params._replace(**{k: jnp.asarray(v) for k, v in replace.items()})
  with pytest.raises(exc, match=match):
    jrnn.forward(bad, XS)


def test_forward_rejects_other_param_types(params, stacked):
  with pytest.raises(TypeError, match=r"params must be RNNParams, got StackedParams"):
    jrnn.forward(stacked, XS)
  with pytest.raises(TypeError, match=r"params must be StackedParams, got RNNParams"):
    jrnn.stacked_forward(params, XS)


STACKED_CASES = [
    ("h0 wrong count", dict(h0=np.zeros((3, H))), ValueError,
     r"h0 must have shape \(L\*D, H\)=\(4, 5\)"),
    ("h0 wrong B", dict(h0=np.zeros((4, B + 1, H))), ValueError,
     r"h0 must have shape \(L\*D, B, H\)=\(4, 2, 5\), got \(4, 3, 5\)"),
    ("xs wrong I", dict(xs=np.zeros((T, B, I + 1))), ValueError,
     r"xs must have shape \(T, B, I=3\)"),
    ("lengths too long", dict(lengths=np.array([T + 1, 0])), ValueError, r"lengths must lie in"),
    ("unknown activation", dict(activation="swish"), ValueError, r"activation must be one of"),
]


@pytest.mark.parametrize("case", STACKED_CASES, ids=[c[0] for c in STACKED_CASES])
def test_stacked_forward_rejects_bad_input(stacked, case):
  _, kw, exc, match = case
  kw = dict(kw)
  xs = kw.pop("xs", XS)
  with pytest.raises(exc, match=match):
    jrnn.stacked_forward(stacked, xs, **kw)


def test_stacked_forward_rejects_bad_structure(stacked):
  (f0, b0), (f1, b1) = stacked.layers
  with pytest.raises(ValueError, match=r"params.layers must be a non-empty tuple"):
    jrnn.stacked_forward(stacked._replace(layers=()), XS)
  with pytest.raises(ValueError, match=r"same number of directions in each layer"):
    jrnn.stacked_forward(stacked._replace(layers=((f0, b0), (f1,))), XS)
  # Layer 1 must read D·H = 10 features.
  bad = f1._replace(w_xh=jnp.zeros((H, H)))
  with pytest.raises(ValueError,
                     match=r"params.layers\[1\]\[0\].w_xh must have shape \(H, fan_in\)"):
    jrnn.stacked_forward(stacked._replace(layers=((f0, b0), (bad, b1))), XS)
  bad = b1._replace(w_hh=b1.w_hh.astype(jnp.float32))
  with pytest.raises(TypeError, match=r"params.layers\[1\]\[1\].w_hh has dtype float32"):
    jrnn.stacked_forward(stacked._replace(layers=((f0, b0), (f1, bad))), XS)
  with pytest.raises(ValueError, match=r"params.w_hy must have shape \(O, D\*H\)"):
    jrnn.stacked_forward(stacked._replace(w_hy=jnp.zeros((O, H))), XS)
  with pytest.raises(TypeError, match=r"params.w_hy must have a floating dtype"):
    jrnn.stacked_forward(stacked._replace(w_hy=jnp.zeros((O, 2 * H), jnp.int32)), XS)


def test_step_rejects_bad_input(params):
  with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., I=3\) .*got \(4,\)"):
    jrnn.step(params, jnp.zeros(H), jnp.zeros(I + 1))
  with pytest.raises(ValueError, match=r"h must have shape \(\.\.\., H=5\) .*got \(2, 4\)"):
    jrnn.step(params, jnp.zeros((B, H - 1)), jnp.zeros((B, I)))
  with pytest.raises(TypeError, match=r"x must have a floating dtype"):
    jrnn.step(params, jnp.zeros(H), jnp.zeros(I, jnp.int32))


INIT_CASES = [
    (dict(n_in=0), ValueError, r"n_in must be a positive int, got 0"),
    (dict(n_hidden=-3), ValueError, r"n_hidden must be a positive int, got -3"),
    (dict(n_out=2.5), ValueError, r"n_out must be a positive int, got 2.5"),
    (dict(n_hidden=True), ValueError, r"n_hidden must be a positive int, got True"),
    (dict(scheme="he"), ValueError, r"scheme must be one of \('seed', .*\), got 'he'"),
    (dict(dtype=jnp.int32), TypeError, r"dtype must be a floating dtype .* got int32"),
    (dict(scale=-1.0), ValueError, r"scale must be a positive number, got -1.0"),
    (dict(scheme="spectral", spectral_radius=0.0), ValueError,
     r"spectral_radius must be a positive number, got 0.0"),
]


@pytest.mark.parametrize("case", INIT_CASES, ids=[str(c[0]) for c in INIT_CASES])
def test_init_rejects_bad_arguments(case):
  kw, exc, match = case
  args = dict(n_in=I, n_hidden=H, n_out=O)
  args.update(kw)
  with pytest.raises(exc, match=match):
    jrnn.init_params(jax.random.key(0), **args)


def test_init_stacked_and_layer_reject_bad_arguments():
  with pytest.raises(ValueError, match=r"num_layers must be a positive int, got 0"):
    jrnn.init_stacked(jax.random.key(0), I, H, num_layers=0)
  with pytest.raises(ValueError, match=r"scheme must be one of"):
    jrnn.init_stacked(jax.random.key(0), I, H, scheme="unknown")
  with pytest.raises(TypeError, match=r"dtype must be a floating dtype"):
    jrnn.init_layer(jax.random.key(0), I, H, dtype=np.int64)


def test_get_activation_names_the_argument():
  with pytest.raises(ValueError, match=r"output_activation must be one of .* got 'nope'"):
    jrnn.get_activation("nope", argname="output_activation")
  assert jrnn.get_activation("relu") is jrnn.ACTIVATIONS["relu"]
  act = jrnn.get_activation(jnp.sin)
  assert act.fn is jnp.sin and act.gamma is None and act.deriv_from_output is None


LOSS_CASES = [
    (jrnn.squared_error, dict(targets=np.zeros((T, B, O + 1))), ValueError,
     r"targets must have shape ys.shape=\(4, 2, 2\), got \(4, 2, 3\)"),
    (jrnn.squared_error, dict(targets=np.zeros((T, B, O), np.float32)), TypeError,
     r"targets has dtype float32 but the parameters are float64"),
    (jrnn.squared_error, dict(ys=np.zeros((T, B, O), np.int32)), TypeError,
     r"ys must have a floating dtype"),
    (jrnn.squared_error, dict(mask=np.ones((B, T))), ValueError,
     r"mask must have shape ys.shape\[:-1\]=\(4, 2\), got \(2, 4\)"),
    (jrnn.squared_error, dict(reduction="avg"), ValueError,
     r"reduction must be one of \('sum', 'batch_mean', 'mean', 'none'\), got 'avg'"),
    (jrnn.squared_error, dict(reduction="batch_mean", time_axis=2), ValueError,
     r"time_axis must be an int in \[-2, 2\)"),
    (jrnn.softmax_cross_entropy, dict(labels=np.zeros((T, B), np.float64)), TypeError,
     r"labels must have an integer dtype, got float64"),
    (jrnn.softmax_cross_entropy, dict(labels=np.zeros((T, B + 1), np.int32)), ValueError,
     r"labels must have shape logits.shape\[:-1\]=\(4, 2\), got \(4, 3\)"),
    (jrnn.softmax_cross_entropy, dict(labels=np.full((T, B), O)), ValueError,
     r"labels must lie in \[0, O=2\) at valid steps, got min 2 and max 2"),
    (jrnn.softmax_cross_entropy, dict(labels=np.full((T, B), -1)), ValueError,
     r"labels must lie in \[0, O=2\)"),
    (jrnn.softmax_cross_entropy, dict(ys=np.zeros((T, B, O), np.int32)), TypeError,
     r"logits must have a floating dtype"),
]


@pytest.mark.parametrize("case", LOSS_CASES,
                         ids=[f"{c[0].__name__}-{'-'.join(c[1])}" for c in LOSS_CASES])
def test_losses_reject_bad_input(case):
  fn, kw, exc, match = case
  kw = dict(kw)
  ys = kw.pop("ys", np.zeros((T, B, O)))
  if fn is jrnn.squared_error:
    second = kw.pop("targets", np.zeros((T, B, O)))
  else:
    second = kw.pop("labels", np.zeros((T, B), np.int32))
  with pytest.raises(exc, match=match):
    fn(ys, second, **kw)
