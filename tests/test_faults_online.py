"""Red-team probes of jrnn.online kept as a table (docs/reliability.md, issue 24): each bad
input, the error it must raise and a fragment of the message; then the behaviour a table cannot
show: NaN or Inf at a masked step changes neither the loss nor any gradient, in every method.

The table's checks run before anything is traced; tiny H, I, T throughout.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrnn import online
from helpers import random_params

I, H, O, T = 2, 3, 2, 5
P = random_params(jax.random.key(0), I, H, O, learn_h0=False)
P_H0 = random_params(jax.random.key(0), I, H, O, learn_h0=True)
X, Y = np.zeros(I), np.zeros(O)
XS, YS = np.zeros((T, I)), np.zeros((T, O))
KEY = jax.random.key(0)
UORO = online.online_method("uoro")


def _step(**kw):
  return lambda: online.uoro_step(P, online.uoro_init(P), X, Y, **kw)


def _train_step(key):
  step = online.make_online_train_step(UORO, optax.sgd(0.1), jit=False)
  state = online.init_streams(UORO, P, 2)
  batch = online.OnlineBatch(np.zeros((2, 2, I)), np.zeros((2, 2, O)))
  return lambda: step(P, optax.sgd(0.1).init(P), state, batch, key=key)


KEY_EXPECTED = "must be a typed PRNG key from jax.random.key(seed)"

# (label, call, exception type, message fragment)
FAULTS = [
    ("eps=nan", lambda: online.online_method("uoro", eps=float("nan")), ValueError,
     "eps of online_method must be a finite positive float"),
    ("eps=-1", lambda: online.online_method("uoro", eps=-1.0), ValueError, "got -1.0"),
    ("eps=0", lambda: online.online_method("uoro", eps=0.0), ValueError, "got 0.0"),
    ("eps=inf", lambda: online.online_method("uoro", eps=float("inf")), ValueError, "got inf"),
    ("eps=True", lambda: online.online_method("uoro", eps=True), TypeError, "got bool True"),
    ("eps='1e-7'", lambda: online.online_method("uoro", eps="1e-7"), TypeError, "got str"),
    ("uoro_step eps=nan", _step(key=KEY, eps=float("nan")), ValueError,
     "eps of uoro_step must be a finite positive float"),
    ("uoro_sequence eps=-1", lambda: online.uoro_sequence(P, XS, YS, key=KEY, eps=-1.0),
     ValueError, "eps of uoro_sequence"),
    ("uoro_step key=0", _step(key=0), TypeError, "key of uoro_step " + KEY_EXPECTED + ", got int 0"),
    ("uoro_step key=None", _step(key=None), TypeError, "got NoneType None"),
    ("uoro_step raw uint32 key", _step(key=jax.random.PRNGKey(0)), TypeError,
     "got uint32 array of shape (2,); raw uint32 keys (jax.random.PRNGKey) are not accepted"),
    ("uoro_step uint32 array", _step(key=np.array([1, 2, 3], np.uint32)), TypeError,
     "got uint32 array of shape (3,)"),
    ("uoro_step key batch", _step(key=jax.random.split(KEY, 2)), TypeError,
     "must be one PRNG key, shape (), got a key array of shape (2,)"),
    ("uoro_sequence key=0", lambda: online.uoro_sequence(P, XS, YS, key=0), TypeError,
     "key of uoro_sequence " + KEY_EXPECTED),
    ("uoro_init key=0", lambda: online.uoro_init(P_H0, key=0), TypeError, "key of uoro_init"),
    ("uoro_init no key, learnt h0", lambda: online.uoro_init(P_H0), ValueError, "needs key="),
    ("init_streams key=0", lambda: online.init_streams(UORO, P, 2, key=0), TypeError,
     "key of init_streams"),
    ("train step key=0", _train_step(0), TypeError, "key of the online train step"),
    ("train step key=None (uoro)", _train_step(None), ValueError, "needs key="),
    ("method name 3", lambda: online.online_method(3), ValueError, "method must be one of"),
    ("method 'bptt'", lambda: online.online_method("bptt"), ValueError, "method must be one of"),
    ("loss 'hinge'", lambda: online.online_method("rtrl", loss="hinge"), ValueError,
     "loss must be one of"),
    ("activation 'swish?'", lambda: online.online_method("rtrl", activation="swish?"),
     ValueError, "activation"),
    ("truncation missing", lambda: online.online_method("tbptt"), ValueError,
     "truncation (τ) must be given for method 'tbptt'"),
    ("truncation on rtrl", lambda: online.online_method("rtrl", truncation=3), ValueError,
     "only there"),
    ("truncation=0", lambda: online.online_method("tbptt", truncation=0), ValueError,
     "truncation must be a positive int"),
    ("truncation=2.5", lambda: online.online_method("tbptt", truncation=2.5), ValueError,
     "got 2.5"),
    ("truncation=True", lambda: online.online_method("tbptt", truncation=True), ValueError,
     "got True"),
    ("max_influence_bytes=0", lambda: online.online_method("rtrl", max_influence_bytes=0),
     ValueError, "max_influence_bytes must be a positive int or None"),
    ("max_influence_bytes=1.5", lambda: online.online_method("rtrl", max_influence_bytes=1.5),
     ValueError, "got 1.5"),
    ("rtrl over the influence limit", lambda: online.rtrl_init(P, max_influence_bytes=8),
     ValueError, "over max_influence_bytes=8"),
    ("every=0", lambda: online.make_online_train_step(UORO, optax.sgd(0.1), every=0),
     ValueError, "every must be a positive int"),
    ("reduction 'avg'", lambda: online.make_online_train_step(UORO, optax.sgd(0.1),
                                                              reduction="avg"),
     ValueError, "reduction must be one of"),
    ("jit='no'", lambda: online.make_online_train_step(UORO, optax.sgd(0.1), jit="no"),
     TypeError, "jit must be True or False"),
    ("method not OnlineMethod", lambda: online.make_online_train_step("uoro", optax.sgd(0.1)),
     TypeError, "method must be an OnlineMethod"),
    ("n_streams=0", lambda: online.init_streams(UORO, P, 0), ValueError,
     "n_streams must be a positive int"),
    ("x wrong shape", lambda: online.rtrl_step(P, online.rtrl_init(P), np.zeros(3), Y),
     ValueError, "x must have shape (I,)"),
    ("x float32", lambda: online.snap1_step(P, online.snap1_init(P), np.zeros(I, np.float32), Y),
     TypeError, "x has dtype float32"),
    ("xs batched", lambda: online.rtrl_sequence(P, np.zeros((T, 2, I)), YS), ValueError,
     "xs must have shape (T, I)"),
    ("mask wrong length", lambda: online.snap1_sequence(P, XS, YS, mask=np.ones(T - 1, bool)),
     ValueError, "mask must have shape (T,)"),
    ("h wrong shape", lambda: online.rtrl_init(P, np.zeros(H + 1)), ValueError,
     "h must have shape (H,)"),
    ("stacked params", lambda: online.snap1_init(None), TypeError, "takes jrnn.RNNParams"),
    ("cross_entropy float target",
     lambda: online.rtrl_step(P, online.rtrl_init(P), X, np.zeros(()), loss="cross_entropy"),
     TypeError, "target must be an integer label"),
]


@pytest.mark.parametrize("label,call,exc,fragment", FAULTS, ids=[f[0] for f in FAULTS])
def test_bad_input_is_refused_with_a_clear_message(label, call, exc, fragment):
  del label
  with pytest.raises(exc, match=re.escape(fragment)):
    call()


@pytest.mark.slow
def test_typed_keys_are_accepted():
  online.uoro_step(P, online.uoro_init(P), X, Y, key=KEY)
  online.init_streams(UORO, P_H0, 2, key=KEY)


# ---------------------------------------------------------------------------------------------
# Masked steps are inert: NaN or Inf at a masked step changes neither the loss nor any gradient.

SEQUENCES = {
    "rtrl": online.rtrl_sequence,
    "snap1": online.snap1_sequence,
    "uoro": lambda *a, **kw: online.uoro_sequence(*a, key=KEY, **kw),
    "tbptt": lambda *a, **kw: online.tbptt_sequence(*a, truncation=2, **kw),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SEQUENCES)
def test_nan_and_inf_at_masked_steps_are_inert(name):
  params = random_params(jax.random.key(3), I, H, O)
  xs = jax.random.normal(jax.random.key(4), (T, I), jnp.float64)
  ys = jax.random.normal(jax.random.key(5), (T, O), jnp.float64)
  mask = jnp.array([True, False, True, True, False])
  bad = xs.at[1].set(jnp.nan).at[4, 0].set(jnp.inf)
  run = jax.jit(lambda x: SEQUENCES[name](params, x, ys, mask=mask))
  clean, poisoned = run(xs), run(bad)
  assert np.isfinite(float(poisoned.loss))
  np.testing.assert_array_equal(poisoned.loss, clean.loss)
  for a, b in zip(jax.tree.leaves(poisoned.grads), jax.tree.leaves(clean.grads)):
    np.testing.assert_array_equal(a, b)
