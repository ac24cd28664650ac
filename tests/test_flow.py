"""Gradient flow while training (jrnn.training.flow, ``jrnn-train --diagnose-every``).

``measure`` is checked against jrnn.diagnostics computed independently (float64, exact SVD
norms, the states by jrnn.forward, the gradient by jax.grad of sequence_loss); the loop's
records against the same on the checkpoint saved at that step; a resumed run against an
uninterrupted one.
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

import jrnn
from jrnn import diagnostics
from jrnn.reference import trajectory
from jrnn.training import checkpoint, cli, flow, loop
from jrnn.training import steps as jtrain
from jrnn.training.config import Config, check_config
from jrnn.training.tasks import make_task

T, P, I, H, O = 9, 3, 2, 5, 3


def _probe(kind, key=1):
  k1, k2 = jax.random.split(jax.random.key(key))
  xs = jax.random.normal(k1, (T, P, I), jnp.float64)
  if kind == "cross_entropy":
    targets = jax.random.randint(k2, (T, P), 0, O)
  else:
    targets = jax.random.normal(k2, (T, P, O), jnp.float64)
  mask = jnp.asarray(np.random.default_rng(0).random((T, P)) < 0.6)
  return jtrain.Batch(xs, targets, mask)


def _reference(params, probe, kind, lags):
  """Everything ``measure`` records, from jrnn.diagnostics on explicit per-sequence
  trajectories; the direct ``∂L/∂h_t`` of a layer from jrnn.forward of the layers above."""
  stacked = isinstance(params, jrnn.StackedParams)
  layers = [lp[0] for lp in params.layers] if stacked else [params.layer]
  loss_fn = jtrain.sequence_loss(kind)
  value, grads = jax.value_and_grad(lambda p: loss_fn(p, probe)[0])(params)
  out = {"probe_loss": value,
         "grad_norm": [np.linalg.norm(np.ravel(g)) for g in jax.tree_util.tree_leaves(grads)]}
  for name in ("spectral_norm", "spectral_radius", "lyapunov", "jacobian_norm", "seed_bound",
               "loss_grad"):
    out[name] = []
  inputs = probe.xs
  n_steps, n_probe = probe.xs.shape[:2]
  for l, layer in enumerate(layers):
    trajs = [trajectory(layer, inputs[:, b]) for b in range(n_probe)]
    states = jnp.stack([tr.hs[1:] for tr in trajs], axis=1)  # (T, P, H)
    above = layers[l + 1:]

    def loss_from(hs, above=above):
      if above:
        upper = jrnn.StackedParams(tuple((lp,) for lp in above), params.w_hy, params.b_y)
        ys = jrnn.stacked_forward(upper, hs).ys
      else:
        ys = jrnn.readout(params.w_hy, params.b_y, hs)
      return _loss(ys, probe, kind)

    direct = jax.grad(loss_from)(states)
    spec = diagnostics.weight_spectrum(layer.w_hh)
    out["spectral_norm"].append(spec.spectral_norm)
    out["spectral_radius"].append(spec.spectral_radius)
    out["lyapunov"].append(
        np.mean([diagnostics.lyapunov_exponents(tr, num_exponents=1)[0] for tr in trajs]))
    norms = np.array([[diagnostics.jacobian_norms(tr)[n_steps, n_steps - k] for k in lags]
                      for tr in trajs])
    out["jacobian_norm"].append(np.exp(np.mean(np.log(norms), axis=0)))
    out["seed_bound"].append([np.linalg.norm(np.asarray(layer.w_hh), 2) ** k for k in lags])
    per_lag = np.zeros(len(lags))
    for b, tr in enumerate(trajs):
      c = np.asarray(diagnostics.loss_contributions(tr, direct[:, b]))
      for i, k in enumerate(lags):
        per_lag[i] += sum(c[t, t - k] for t in range(k, n_steps + 1))
    out["loss_grad"].append(per_lag)
    inputs = states
  return out


def _loss(ys, probe, kind):
  if kind == "cross_entropy":
    return jrnn.softmax_cross_entropy(ys, probe.targets, probe.mask, reduction="mean")
  return jrnn.squared_error(ys, probe.targets, probe.mask, reduction="mean")


def _check_equal(measured, ref, rtol):
  for name, want in ref.items():
    np.testing.assert_allclose(np.asarray(measured[name]), np.asarray(want), rtol=rtol,
                               atol=0, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("kind,layers", [("squared_error", 1), ("cross_entropy", 2)])
def test_measure_equals_diagnostics(kind, layers):
  key = jax.random.key(0)
  if layers == 1:
    params = jrnn.init_params(key, I, H, O, scheme="orthogonal", scale=1.3, dtype=jnp.float64)
  else:
    params = jrnn.init_stacked(key, I, H, O, num_layers=layers, dtype=jnp.float64)
  probe = _probe(kind)
  lags = flow.log_lags(T)
  assert lags == (1, 2, 4, 8, 9)
  measured = flow.measure(params, probe, jax.random.key(2), lags=lags, loss_kind=kind)
  assert measured["jacobian_norm"].shape == (layers, len(lags))
  # H <= NUM_ITERS: Lanczos is exact, so float64 agrees to rounding.
  _check_equal(measured, _reference(params, probe, kind, lags), rtol=1e-9)
  names = flow.parameter_names(params)
  assert len(names) == len(measured["grad_norm"]) and ("w_hh" in names or
                                                       "layers.1.0.w_hh" in names)


@pytest.mark.slow
def test_spectral_radius_on_a_host_thread_equals_the_device_programs():
  # What the loop runs: the eigenvalues out of the program, on a host thread (float64).
  params = jrnn.init_stacked(jax.random.key(3), I, H, O, num_layers=2, dtype=jnp.float64)
  probe = _probe("cross_entropy")
  run = functools.partial(flow.measure, params, probe, jax.random.key(2), lags=(1, 4, 9),
                          loss_kind="cross_entropy")
  full, split = run(), run(spectral_radius=False)
  assert set(split) == set(full) - {"spectral_radius"} | {"w_hh"}
  for layer, w in zip(params.layers, split.pop("w_hh"), strict=True):
    np.testing.assert_array_equal(np.asarray(w), np.asarray(layer[0].w_hh))
  for name, value in split.items():
    np.testing.assert_allclose(np.asarray(value), np.asarray(full[name]), rtol=1e-12,
                               err_msg=name)
  radius = flow.spectral_radius_in_background(
    [layer[0].w_hh for layer in params.layers]).result()
  assert radius.shape == (2,) and radius.dtype == np.float64
  np.testing.assert_allclose(radius, np.asarray(full["spectral_radius"]), rtol=1e-12)


@pytest.mark.slow
def test_measure_without_loss_and_bad_input():
  params = jrnn.init_params(jax.random.key(0), I, H, O, dtype=jnp.float64)
  probe = _probe("squared_error")
  m = flow.measure(params, probe, jax.random.key(2), lags=(1, 3), loss_kind=None)
  assert "loss_grad" not in m and m["jacobian_norm"].shape == (1, 2)
  with pytest.raises(ValueError, match=r"lags must lie in \[1, T=9\], got \(0, 3\)"):
    flow.measure(params, probe, jax.random.key(2), lags=(0, 3), loss_kind=None)
  with pytest.raises(ValueError, match="loss_kind must be"):
    flow.measure(params, probe, jax.random.key(2), lags=(1,), loss_kind="hinge")
  with pytest.raises(ValueError, match=r"probe.xs must have shape \(T, P, I\), got \(9, 2\)"):
    flow.measure(params, probe._replace(xs=probe.xs[:, 0]), jax.random.key(2), lags=(1,),
                 loss_kind=None)
  with pytest.raises(ValueError, match="n_steps must be a positive integer, got 0"):
    flow.log_lags(0)
  with pytest.raises(TypeError, match="params must be RNNParams or StackedParams, got dict"):
    flow.recurrent_layers({})
  with pytest.raises(ValueError, match="integer tokens"):
    flow.probe_batch(jtrain.Batch(jnp.zeros((3, 2), jnp.int32), jnp.zeros((3, 2), jnp.int32)))
  assert flow.log_lags(1) == (1,) and flow.log_lags(64) == (1, 2, 4, 8, 16, 32, 64)


def test_diagnose_every_flag_is_checked_and_free_on_resume():
  with pytest.raises(ValueError, match="--diagnose-every must be >= 0"):
    check_config(Config(diagnose_every=-1))
  from jrnn.training.config import changed_fields  # pylint: disable=import-outside-toplevel
  import dataclasses  # pylint: disable=import-outside-toplevel
  assert changed_fields(Config(diagnose_every=5), dataclasses.asdict(Config())) == []


TINY = ["--task", "adding", "--hidden", "6", "--seq-len", "8", "--batch-size", "4",
        "--val-batch", "4", "--no-progress", "--lr", "0.05", "--clip", "0.5", "--ema", "0",
        "--init", "orthogonal"]


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 2e-4)])
def test_records_equal_diagnostics_on_the_checkpoint(tmp_path, dtype, rtol):
  # float64: the loop's own records to float64 rounding (H = 6 <= NUM_ITERS: Lanczos is
  # exact); float32, what a user trains in: to float32 rounding through T = 8 products.
  out = str(tmp_path / "run")
  cli.train_from_args(TINY + ["--steps", "6", "--diagnose-every", "3", "--log-every", "2",
                              "--dtype", dtype, "--out", out])
  rows = _rows(os.path.join(out, loop.DIAGNOSTICS_NAME))
  assert [r["step"] for r in rows] == [3, 6]
  metrics = _rows(os.path.join(out, loop.METRICS_NAME))
  assert [r["step"] for r in metrics] == [2, 4, 6]
  # The checkpoint saved at step 6 and the probe batch rebuilt from the run's seed.
  with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
    cfg = Config(**json.load(f)["config"])
  task = make_task(cfg, jax.random.fold_in(jax.random.key(cfg.seed), 1))
  template = loop.initial_state(cfg, task, loop.make_optimizer(cfg))
  state, meta = checkpoint.load(os.path.join(out, loop.CKPT_NAME), template)
  assert meta["step"] == 6 and state.params.layers[0][0].w_hh.dtype == jnp.dtype(dtype)
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), state.params)
  batch = task.batch(0)
  probe = jtrain.Batch(jnp.asarray(batch.xs[:, :4], jnp.float64),
                       jnp.asarray(batch.targets[:, :4], jnp.float64), batch.mask[:, :4])
  ref = _reference(params, probe, "squared_error", tuple(rows[-1]["lags"]))
  last = rows[-1]
  assert last["lags"] == [1, 2, 4, 8]
  for name in ("spectral_norm", "spectral_radius", "lyapunov", "jacobian_norm", "seed_bound",
               "loss_grad"):
    np.testing.assert_allclose(last[name], np.asarray(ref[name]), rtol=rtol, err_msg=name)
  np.testing.assert_allclose(list(last["grad_norm"].values()), ref["grad_norm"], rtol=rtol)
  assert list(last["grad_norm"])[:3] == ["layers.0.0.w_xh", "layers.0.0.w_hh", "layers.0.0.b_h"]
  assert len(last["jacobian_norm"]) == 2  # --layers 2: one row per layer
  np.testing.assert_allclose(last["probe_loss"], float(ref["probe_loss"]), rtol=rtol)
  # Clipping: the share of the 3 steps since the last record with a gradient norm above --clip.
  assert all(r["clip_steps"] == 3 and r["clip_fraction"] in (0, 1 / 3, 2 / 3, 1) for r in rows)


@pytest.mark.slow
def test_resume_gives_the_same_diagnostics(tmp_path, monkeypatch):
  flags = TINY + ["--steps", "8", "--diagnose-every", "4", "--log-every", "4",
                  "--ckpt-every", "3"]
  straight = str(tmp_path / "straight")
  cli.train_from_args(flags + ["--out", straight])

  crashed = str(tmp_path / "crashed")
  helpers.train_crashing_at(monkeypatch, flags + ["--out", crashed], 7)
  meta = checkpoint.load_metadata(os.path.join(crashed, loop.CKPT_NAME))
  assert meta["step"] == 6 and meta["diagnose_clip"][1] == 2  # steps 5 and 6 since record 4
  with open(os.path.join(crashed, loop.DIAGNOSTICS_NAME), "a", encoding="utf-8") as f:
    f.write('{"step": 8, "lags": [1, 2')  # a write the crash tore
  cli.train_from_args(["--resume", crashed, "--no-progress"])
  with open(os.path.join(straight, loop.DIAGNOSTICS_NAME), encoding="utf-8") as f:
    want = f.read()
  with open(os.path.join(crashed, loop.DIAGNOSTICS_NAME), encoding="utf-8") as f:
    got = f.read()
  assert got == want
  rows = [json.loads(line) for line in want.splitlines()]
  assert [r["step"] for r in rows] == [4, 8] and [r["clip_steps"] for r in rows] == [4, 4]
