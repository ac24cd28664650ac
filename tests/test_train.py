"""The compiled training step, the stream step, optimisers, schedules and the CLI smoke run."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn.training import cli, optimizers
from jrnn.training import steps as jtrain
from jrnn.data import sine

F64 = jnp.float64


def _params(key=0, n_in=1, h=4, n_out=1):
  return jrnn.init_params(jax.random.key(key), n_in, h, n_out, scheme="glorot", dtype=F64)


def _sine_batch(key=0, b=3, t=6):
  bt = sine.batch(jax.random.key(key), b, t, dtype=F64)
  return jtrain.Batch(bt.xs, bt.targets)


def _reference_loss(params, batch, h0=None):
  """The same loss written independently: autodiff BPTT, squared error, mean over steps."""
  out = jrnn.forward(params, batch.xs, h0=h0, grad="autodiff")
  return jnp.mean(jnp.sum((out.ys - batch.targets) ** 2, -1))


@pytest.mark.slow
def test_sgd_step_is_minus_lr_times_grad():
  params, batch = _params(), _sine_batch()
  loss = jtrain.sequence_loss("squared_error")
  step = jtrain.make_train_step(loss, optax.sgd(0.5), has_aux=True, donate=False)
  new, _, metrics = step(params, optax.sgd(0.5).init(params), batch)
  grads = jax.grad(_reference_loss)(params, batch)
  want = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
  for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
  np.testing.assert_allclose(metrics["loss"], _reference_loss(params, batch), rtol=1e-12)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-10)


@pytest.mark.slow
def test_clipping_bounds_the_update():
  params, batch = _params(1), _sine_batch(1)
  grads = jax.grad(_reference_loss)(params, batch)
  c = 0.1 * float(optax.tree.norm(grads))
  opt = optimizers.make_optimizer("sgd", 1.0, clip_norm=c)
  step = jtrain.make_train_step(lambda p, b: _reference_loss(p, b), opt, donate=False)
  new, _, _ = step(params, opt.init(params), batch)
  delta = jax.tree_util.tree_map(lambda a, b: b - a, params, new)
  np.testing.assert_allclose(optax.tree.norm(delta), c, rtol=1e-10)
  want = jax.tree_util.tree_map(lambda g: -g * c / optax.tree.norm(grads), grads)
  for a, b in zip(jax.tree_util.tree_leaves(delta), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("name,lr", [("sgd", 0.05), ("momentum", 0.02), ("adam", 0.02),
                                     ("adagrad", 0.1), ("rmsprop", 0.01)])
def test_loss_decreases_and_compiles_once(name, lr):
  traces = []

  def loss(p, b):
    traces.append(1)  # runs only while tracing
    return _reference_loss(p, b)

  params = _params(2, h=6)
  opt = optimizers.make_optimizer(name, lr, clip_norm=1.0)
  step = jtrain.make_train_step(loss, opt)
  opt_state = opt.init(params)
  batch = _sine_batch(3, b=8, t=10)
  first = float(_reference_loss(params, batch))
  for _ in range(25):
    params, opt_state, metrics = step(params, opt_state, batch)
  assert float(metrics["loss"]) < 0.7 * first
  assert len(traces) == 1
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_schedules():
  cos = optimizers.make_schedule(1.0, schedule="cosine", total_steps=110, warmup_steps=10,
                             final_fraction=0.1)
  assert float(cos(0)) == 0.0
  np.testing.assert_allclose(cos(5), 0.5)
  np.testing.assert_allclose(cos(10), 1.0)
  np.testing.assert_allclose(cos(60), 0.1 + 0.9 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(cos(110), 0.1, rtol=1e-6)
  lin = optimizers.make_schedule(2.0, schedule="linear", total_steps=10, final_fraction=0.0)
  np.testing.assert_allclose(lin(5), 1.0)
  assert float(optimizers.make_schedule(3.0)(1000)) == 3.0


@pytest.mark.slow
def test_stream_step_carries_state_and_truncates_gradient():
  params = _params(4, h=5)
  b1, b2 = _sine_batch(5, b=2, t=4), _sine_batch(6, b=2, t=4)
  loss = jtrain.sequence_loss("squared_error")
  opt = optax.sgd(0.1)
  step = jtrain.make_stream_train_step(loss, opt, donate=False)
  h = jnp.zeros((2, 5), F64)
  p1, s1, h1, _ = step(params, opt.init(params), h, b1)
  np.testing.assert_allclose(h1, jrnn.forward(params, b1.xs).h_last, rtol=1e-12)
  p2, _, h2, m2 = step(p1, s1, h1, b2)
  # Window 2's gradient treats the carried state h1 as a constant.
  grads = jax.grad(_reference_loss)(p1, b2, h1)
  want = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, p1, grads)
  for a, b in zip(jax.tree_util.tree_leaves(p2), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
  np.testing.assert_allclose(m2["loss"], _reference_loss(p1, b2, h1), rtol=1e-12)
  np.testing.assert_allclose(h2, jrnn.forward(p1, b2.xs, h0=h1).h_last, rtol=1e-12)
  ev = jtrain.make_eval_step(loss, has_aux=True)
  np.testing.assert_allclose(ev(p2, b2, h1)["loss"], _reference_loss(p2, b2, h1), rtol=1e-12)


@pytest.mark.slow
def test_one_hot_cross_entropy_loss():
  v, h = 5, 4
  params = jrnn.init_params(jax.random.key(7), v, h, v, scheme="glorot", dtype=F64)
  tokens = jax.random.randint(jax.random.key(8), (6, 3), 0, v, jnp.int32)
  batch = jtrain.Batch(tokens[:-1], tokens[1:])
  got, _ = jtrain.sequence_loss("cross_entropy", one_hot=v)(params, batch)
  ys = jrnn.forward(params, jax.nn.one_hot(tokens[:-1], v, dtype=F64)).ys
  want = np.mean([float(jax.nn.logsumexp(ys[t, b]) - ys[t, b, tokens[t + 1, b]])
                  for t in range(5) for b in range(3)])
  np.testing.assert_allclose(got, want, rtol=1e-12)
  with pytest.raises(TypeError, match="integer tokens"):
    jtrain.sequence_loss(one_hot=v)(params, jtrain.Batch(tokens.astype(F64), tokens))


def test_bad_optimizer_config():
  with pytest.raises(ValueError, match="learning_rate must be a positive"):
    optimizers.make_optimizer("adam", 0.0)
  with pytest.raises(ValueError, match="optimizer must be one of"):
    optimizers.make_optimizer("lbfgs", 1e-3)
  with pytest.raises(ValueError, match="clip_norm"):
    optimizers.make_optimizer("sgd", 1e-3, clip_norm=-1.0)
  with pytest.raises(ValueError, match="total_steps"):
    optimizers.make_optimizer("sgd", 1e-3, schedule="cosine")
  with pytest.raises(ValueError, match="schedule must be one of"):
    optimizers.make_schedule(1e-3, schedule="step")
  with pytest.raises(ValueError, match="weight_decay"):
    optimizers.make_optimizer("sgd", 1e-3, weight_decay=-1.0)
  with pytest.raises(ValueError, match="kind must be one of"):
    jtrain.sequence_loss("hinge")


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


TINY = ["--hidden", "8", "--seq-len", "8", "--batch-size", "4", "--log-every", "1",
        "--no-progress", "--sample-len", "5"]


@pytest.mark.slow
def test_cli_smoke_run(tmp_path, capsys):
  out = str(tmp_path / "run")
  summary = cli.train_from_args(TINY + ["--steps", "2", "--layers", "1", "--out", out])
  rows = _rows(os.path.join(out, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["train_loss"]) and 0 < r["val_bpc"] < 8 for r in rows)
  assert os.path.getsize(os.path.join(out, "loss.png")) > 0
  assert os.path.exists(os.path.join(out, "checkpoint.safetensors"))
  assert summary["step"] == 2 and len(summary["sample"]) == len("The ") + 5
  assert not os.path.exists(os.path.join(out, "test.json"))  # the char-LM has no test split
  assert "sample" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("task,metric,extra", [("copy", "val_accuracy", []),
                                               ("sine", "val_mse", ["--layers", "2"]),
                                               ("adding", "val_mse", [])])
def test_cli_other_tasks(tmp_path, task, metric, extra):
  out = str(tmp_path / task)
  cli.train_from_args(TINY + ["--task", task, "--steps", "2", "--val-batch", "4",
                              "--copy-len", "2", "--delay", "1", "--out", out] + extra)
  rows = _rows(os.path.join(out, "metrics.jsonl"))
  assert len(rows) == 2 and all(np.isfinite(r[metric]) for r in rows)
  # The test split: scored once, at the end, into test.json, never into the metrics.
  assert not any(k.startswith("test") for r in rows for k in r)
  with open(os.path.join(out, "test.json")) as f:
    test = json.load(f)
  assert set(test) == {"step", metric.replace("val_", "test_")} and test["step"] == 2
  assert np.isfinite(test[metric.replace("val_", "test_")])


@pytest.mark.parametrize("flags,message", [
    (["--hidden", "0"], "--hidden must be a positive integer"),
    (["--seq-len", "-3"], "--seq-len must be a positive integer"),
    (["--lr", "0"], "--lr must be a positive learning rate"),
    (["--lr=-1e-3"], "--lr must be a positive learning rate"),
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--optimizer", "lbfgs"], "invalid choice"),
    (["--resume", "/nonexistent/dir"], "no checkpoint at"),
])
def test_cli_bad_config_fails_before_training(tmp_path, capsys, flags, message):
  with pytest.raises(SystemExit) as e:
    cli.train_from_args(TINY + ["--out", str(tmp_path)] + flags)
  assert e.value.code == 2
  assert message in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "metrics.jsonl")


@pytest.mark.slow
def test_stacked_params_loss_and_stream_step():
  v, h, n_layers = 5, 4, 2
  params = jrnn.init_stacked(jax.random.key(9), v, h, v, num_layers=n_layers, scheme="glorot",
                             dtype=F64)
  tokens = jax.random.randint(jax.random.key(10), (7, 3), 0, v, jnp.int32)
  batch = jtrain.Batch(tokens[:-1], tokens[1:])
  h0 = jax.random.normal(jax.random.key(11), (n_layers, 3, h), F64)
  loss = jtrain.sequence_loss("cross_entropy", one_hot=v)

  def reference(p):
    out = jrnn.stacked_forward(p, jax.nn.one_hot(tokens[:-1], v, dtype=F64), h0=h0,
                               grad="autodiff")
    return jrnn.softmax_cross_entropy(out.ys, tokens[1:], reduction="mean"), out.h_last

  step = jtrain.make_stream_train_step(loss, optax.sgd(0.1), donate=False, carry_axis=1)
  new, _, h_next, m = step(params, optax.sgd(0.1).init(params), h0, batch)
  want_loss, want_h = reference(params)
  np.testing.assert_allclose(m["loss"], want_loss, rtol=1e-12)
  np.testing.assert_allclose(h_next, want_h, rtol=1e-12)
  grads = jax.grad(lambda p: reference(p)[0])(params)
  for a, p, g in zip(*map(jax.tree_util.tree_leaves, (new, params, grads))):
    np.testing.assert_allclose(a, p - 0.1 * g, rtol=1e-10, atol=1e-13)
