"""Shared test fixtures-as-functions (imported by test modules; pytest puts tests/ on sys.path)."""
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jrnn


def random_params(key, n_in=2, n_hidden=3, n_out=2, learn_h0=True):
  """float64 :class:`jrnn.RNNParams` with non-zero ``b_h`` and ``h0``, so every gradient is exercised."""
  p = jrnn.init_params(key, n_in, n_hidden, n_out, scheme="glorot", dtype=jnp.float64,
                       learn_h0=learn_h0)
  k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
  p = p._replace(b_h=0.3 * jax.random.normal(k1, p.b_h.shape, jnp.float64))
  if learn_h0:
    p = p._replace(h0=0.5 * jax.random.normal(k2, p.h0.shape, jnp.float64))
  return p


SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def script_path(name):
  """The path of ``scripts/**/<name>.py`` (scripts live in folders by purpose)."""
  (path,) = SCRIPTS.glob(f"**/{name}.py")
  return path


def load_script(name):
  """``scripts/**/<name>.py`` as a module (scripts are not a package)."""
  spec = importlib.util.spec_from_file_location(name, script_path(name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def assert_same_results(a, b):
  """Two results.json texts are the same, byte for byte. When the recorded commit moved between
  the two runs (someone committed to a shared checkout while the test ran), everything but the
  ``git`` entry must still be equal (floats compared exactly: JSON keeps their repr)."""
  ja, jb = json.loads(a), json.loads(b)
  if ja["git"] == jb["git"]:
    assert a == b
  del ja["git"], jb["git"]
  assert ja == jb


def train_crashing_at(monkeypatch, argv, step):
  """Runs ``jrnn-train argv`` until it draws batch ``step``, where it dies as from a crash (the
  checkpoints and metrics written so far stay, as after a kill)."""
  import pytest

  from jrnn.training import cli, loop

  real_make_task = loop.make_task

  def make_task(cfg, key):
    task = real_make_task(cfg, key)

    def batch(s):
      if s == step:
        raise RuntimeError("simulated crash")
      return task.batch(s)

    return task._replace(batch=batch)

  monkeypatch.setattr(loop, "make_task", make_task)
  with pytest.raises(RuntimeError, match="simulated crash"):
    cli.train_from_args(argv)
  monkeypatch.undo()


def numpy_rnn(seed, n_steps, n_hidden, n_in=3, n_out=2, *, radius=1.1, mask_p=0.0, xscale=1.0):
  """Float64 ``(params, xs (T, I), mask (T,))`` drawn by NumPy: the distributions of
  ``jrnn.init_params(..., scheme="spectral", spectral_radius=radius)`` (``W_hh ~ N(0, 1/H)``
  rescaled to that spectral radius, Glorot-uniform ``W_xh`` and ``W_hy``), ``b_h ~ 0.1 N(0, 1)``,
  ``xs ~ xscale N(0, 1)`` and each step kept with probability ``1 - mask_p``.

  For hypothesis tests, which draw a new ``(T, H)`` per example: JAX's random ops compile once
  per shape (about half a second per example in float64), NumPy compiles nothing.
  """
  rng = np.random.default_rng(seed)
  glorot = lambda shape: rng.uniform(-1, 1, shape) * np.sqrt(6.0 / (shape[0] + shape[1]))
  w_hh = rng.standard_normal((n_hidden, n_hidden)) / np.sqrt(n_hidden)
  w_hh *= radius / np.max(np.abs(np.linalg.eigvals(w_hh)))
  params = jrnn.RNNParams(
      w_xh=jnp.asarray(glorot((n_hidden, n_in))), w_hh=jnp.asarray(w_hh),
      b_h=jnp.asarray(0.1 * rng.standard_normal(n_hidden)),
      w_hy=jnp.asarray(glorot((n_out, n_hidden))), b_y=jnp.zeros(n_out, jnp.float64))
  xs = jnp.asarray(xscale * rng.standard_normal((n_steps, n_in)))
  mask = jnp.asarray(rng.uniform(size=n_steps) >= mask_p)
  return params, xs, mask
