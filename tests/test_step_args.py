"""The step builders' argument errors: one line naming the fix, never JAX's raw messages.

``make_train_step(sequence_loss(...))`` without ``has_aux=True`` used to end in JAX's "Gradient
only defined for scalar-output functions"; ``make_train_step(3)`` failed only when called.
"""
import jax
import jax.numpy as jnp
import optax
import pytest

import jrnn
from jrnn import training

OPT = optax.sgd(0.1)
PAIR_LOSS = training.sequence_loss("squared_error")  # returns (L, h_last)


def _scalar_loss(params, batch, h0=None):
  return PAIR_LOSS(params, batch, h0)[0]


def _params():
  return jrnn.init_params(jax.random.key(0), 2, 3, 1, scheme="glorot", dtype=jnp.float64)


def _batch():
  return training.Batch(jnp.ones((4, 2, 2)), jnp.zeros((4, 2, 1)))


def _train(loss, **kw):
  p = _params()
  return training.make_train_step(loss, OPT, jit=False, **kw)(p, OPT.init(p), _batch())


def _multi(loss, **kw):
  p = jax.tree.map(lambda x: jnp.stack([x, x]), _params())
  b = jax.tree.map(lambda x: jnp.stack([x, x]), _batch())
  step = training.seeds.make_multi_seed_train_step(loss, OPT, jit=False, **kw)
  return step(p, jax.vmap(OPT.init)(p), b)


def _stream(loss):
  p = _params()
  return training.make_stream_train_step(loss, OPT, jit=False)(p, OPT.init(p), jnp.zeros((2, 3)),
                                                               _batch())


def _eval(loss, **kw):
  return training.make_eval_step(loss, jit=False, **kw)(_params(), _batch())


PAIR_WITHOUT_AUX = r"loss_fn returned a tuple of 2, not a scalar; .* pass has_aux=True"
CASES = [
    ("train: pair without has_aux", lambda: _train(PAIR_LOSS), TypeError,
     r"^make_train_step: " + PAIR_WITHOUT_AUX),
    ("train: pair without has_aux, jitted",
     lambda: training.make_train_step(PAIR_LOSS, OPT)(_params(), OPT.init(_params()), _batch()),
     TypeError, r"^make_train_step: " + PAIR_WITHOUT_AUX),
    ("train: scalar with has_aux", lambda: _train(_scalar_loss, has_aux=True), TypeError,
     r"make_train_step: loss_fn must return a pair \(loss, aux\) here, got one value of shape "
     r"\(\); pass has_aux=False"),
    ("train: non-scalar loss", lambda: _train(lambda p, b: jnp.ones(3)), TypeError,
     r"make_train_step: loss_fn's loss must be a float scalar \(shape \(\)\), got shape \(3,\)"),
    ("train: integer loss", lambda: _train(lambda p, b: jnp.int32(1)), TypeError,
     r"loss must be a float scalar .* dtype int32"),
    ("train: loss_fn not callable", lambda: training.make_train_step(3, OPT), TypeError,
     r"make_train_step: loss_fn must be callable, .* got int 3"),
    ("train: optimizer not optax", lambda: training.make_train_step(PAIR_LOSS, 0.1), TypeError,
     r"make_train_step: optimizer must be an optax.GradientTransformation .* got float"),
    ("train: has_aux a string",
     lambda: training.make_train_step(PAIR_LOSS, OPT, has_aux="yes"), TypeError,
     r"has_aux must be True or False, got 'yes'"),
    ("multi-seed: pair without has_aux", lambda: _multi(PAIR_LOSS), TypeError,
     r"make_train_step: " + PAIR_WITHOUT_AUX),
    ("multi-seed: loss_fn not callable",
     lambda: training.seeds.make_multi_seed_train_step(None, OPT), TypeError,
     r"loss_fn must be callable, .* got NoneType None"),
    ("stream: scalar loss", lambda: _stream(_scalar_loss), TypeError,
     r"make_stream_train_step: loss_fn must return a pair \(loss, aux\) here, got one value of "
     r"shape \(\); a stream step's loss_fn\(params, batch, h0\) returns \(loss, h_last\)"),
    ("stream: loss_fn not callable", lambda: training.make_stream_train_step("loss", OPT),
     TypeError, r"make_stream_train_step: loss_fn must be callable, .* got str 'loss'"),
    ("eval: pair without has_aux", lambda: _eval(PAIR_LOSS), TypeError,
     r"make_eval_step: " + PAIR_WITHOUT_AUX),
    ("eval: scalar with has_aux", lambda: _eval(_scalar_loss, has_aux=True), TypeError,
     r"make_eval_step: loss_fn must return a pair \(loss, aux\) here"),
    ("eval: loss_fn not callable", lambda: training.make_eval_step([1]), TypeError,
     r"make_eval_step: loss_fn must be callable"),
]


@pytest.mark.slow
@pytest.mark.parametrize("label, call, exc, match", CASES, ids=[c[0] for c in CASES])
def test_step_builders_refuse_with_one_line(label, call, exc, match):
  del label
  with pytest.raises(exc, match=match) as info:
    call()
  assert "\n" not in str(info.value)
  assert "Gradient only defined" not in str(info.value)


@pytest.mark.slow
def test_the_right_has_aux_still_trains_and_evaluates():
  _, _, metrics = _train(PAIR_LOSS, has_aux=True)
  assert metrics["loss"].shape == () and jnp.isfinite(metrics["loss"])
  _, _, scalar_metrics = _train(_scalar_loss)
  assert scalar_metrics["loss"] == metrics["loss"]
  assert _eval(PAIR_LOSS, has_aux=True)["loss"] == metrics["loss"]
  _, _, h, _ = _stream(PAIR_LOSS)
  assert h.shape == (2, 3)
  # make_eval_step keeps non-scalar losses (per-step values, reduction="none").
  per_step = _eval(training.sequence_loss("squared_error", reduction="none"), has_aux=True)
  assert per_step["loss"].shape == (4, 2)
  _, _, multi = _multi(PAIR_LOSS, has_aux=True)
  assert multi["loss"].shape == (2,)
