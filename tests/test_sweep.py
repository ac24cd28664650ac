"""Sweeps (jrnn.training.sweep, sweep_run): the spec parser, members against one-at-a-time runs
(float64 tightly, float32 to rounding), one diverging member leaving the others bit for bit,
resume equal to an uninterrupted sweep, and the CLI's files and refusals."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.data import adding
from jrnn.training import checkpoint, cli, seeds, sweep, sweep_run
from jrnn.training.config import Config

I, H, O, T, B, STEPS = 2, 6, 1, 8, 3, 12


def _make_batch(dtype):
  def make_batch(key, k):
    xs, y = adding.batch(jax.random.fold_in(key, k), B, T, dtype=dtype)[:2]
    targets = jnp.zeros(xs.shape[:2] + (1,), xs.dtype).at[-1].set(y.reshape(B, 1))
    mask = jnp.zeros(xs.shape[:2], bool).at[-1].set(True)
    return jrnn.training.Batch(xs, targets, mask)
  return make_batch


LOSS = jrnn.training.sequence_loss("squared_error")


def _init(dtype):
  return lambda m: jrnn.init_params(jax.random.key(m["seed"]), I, H, O, scheme="orthogonal",
                                    scale=m["init_scale"] or None, dtype=dtype)


def _keys(members):
  return jnp.stack([jax.random.key(100 + m["seed"]) for m in members])


def _sweep(members, dtype, opt_kw, steps=STEPS, chunks=1):
  opt = sweep.sweep_optimizer(**opt_kw)
  state = sweep.init_sweep(members, _init(dtype), opt, _keys(members))
  chunk = sweep.make_sweep_chunk(LOSS, opt, _make_batch(dtype), steps=steps // chunks,
                                 has_aux=True)
  losses = []
  for c in range(chunks):
    state, m = chunk(state, c * (steps // chunks))
    losses.append(np.asarray(m["loss"]))
  return state, np.concatenate(losses, axis=1)


def _alone(member, dtype, opt_kw, steps=STEPS):
  """The member trained alone: make_optimizer + make_train_step, one Python step at a time."""
  opt = jrnn.training.make_optimizer(
      opt_kw.get("name", "adam"), member["lr"], clip_norm=member["clip"] or None,
      weight_decay=member["weight_decay"], schedule=opt_kw.get("schedule", "constant"),
      total_steps=opt_kw.get("total_steps"))
  params = _init(dtype)(member)
  opt_state = opt.init(params)
  step = jrnn.training.make_train_step(LOSS, opt, has_aux=True)
  key = jax.random.key(100 + member["seed"])
  make_batch = jax.jit(_make_batch(dtype))  # the same batches, one compiled program
  losses = []
  for k in range(steps):
    params, opt_state, m = step(params, opt_state, make_batch(key, k))
    losses.append(float(m["loss"]))
  return params, np.asarray(losses)


BASE = dict(seed=0, lr=1e-2, init_scale=0.0, clip=1.0, weight_decay=0.0)


# --- the spec ---

def test_parse_sweep_reads_lists_ranges_and_every_axis():
  assert sweep.parse_sweep("lr=1e-3,3e-3;seed=0:5") == {"lr": [1e-3, 3e-3], "seed": [0, 1, 2, 3, 4]}
  axes = sweep.parse_sweep(" seed = 2 ; clip=0,1 ;weight_decay=0,1e-4; init_scale=0.5,1")
  assert axes == {"seed": [2], "clip": [0.0, 1.0], "weight_decay": [0.0, 1e-4],
                  "init_scale": [0.5, 1.0]}
  assert sweep.parse_sweep(sweep.format_sweep(axes)) == axes


@pytest.mark.parametrize("spec, why", [
    ("lrr=1e-3", 'unknown axis .lrr. \\(allowed: seed, lr, init_scale, clip, weight_decay\\)'),
    ("lr=", "axis 'lr' has an empty list"),
    ("lr=1e-3,,3e-3", "empty value"),
    ("seed=5:0", "range a:b must have a < b"),
    ("seed=3:3", "range a:b must have a < b"),
    ("lr=0:3", "ranges are for integer axes"),
    ("lr=abc", "lr takes numbers, got 'abc'"),
    ("seed=1.5", "seed takes integers"),
    ("lr=0", "positive"),
    ("clip=-1", ">= 0"),
    ("lr=nan", "finite"),
    ("lr=1e-3;lr=2e-3", "given twice"),
    ("lr=1e-3,1e-3", "repeats a value"),
    ("lr 1e-3", "not name=values"),
    ("lr=1e-3;;seed=0", "empty axis"),
    ("", "the spec is empty"),
])
def test_parse_sweep_rejects_a_bad_spec_in_one_line_naming_the_part(spec, why):
  with pytest.raises(ValueError, match=why) as e:
    sweep.parse_sweep(spec)
  assert str(e.value).startswith("--sweep: ") and "\n" not in str(e.value)


def test_sweep_grid_is_the_product_last_axis_fastest_with_the_base_filled_in():
  members = sweep.sweep_grid({"lr": [1, 2], "seed": [0, 1, 2]}, base=BASE)
  assert [(m["lr"], m["seed"]) for m in members] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1),
                                                     (2, 2)]
  assert all(m["clip"] == 1.0 and list(m) == list(sweep.SWEEP_AXES) for m in members)
  with pytest.raises(ValueError, match="sweep axes must come from"):
    sweep.sweep_grid({"momentum": [0.9]})


# --- members against one-at-a-time runs ---

def _varied_members():
  """Four members that between them vary every axis (a full product would only cost time)."""
  members = sweep.sweep_grid({"lr": [1e-2, 3e-2], "seed": [0, 1]}, base=BASE)
  members[1].update(clip=0.0, init_scale=0.7)  # clipping off, a scaled init
  members[2].update(weight_decay=1e-2, clip=0.05)  # decay, and a threshold that clips
  members[3].update(weight_decay=1e-3, clip=0.0)
  return members


@pytest.mark.slow
@pytest.mark.parametrize("opt_kw", [dict(name="adam", schedule="cosine", total_steps=STEPS),
                                    dict(name="momentum")], ids=["adamw_cosine", "momentum"])
def test_members_equal_one_at_a_time_runs_float64(opt_kw):
  members = _varied_members()
  state, losses = _sweep(members, jnp.float64, opt_kw)
  assert losses.shape == (len(members), STEPS)
  assert np.all(np.asarray(state.diverged_at) == -1)
  for n, member in enumerate(members):
    params, want = _alone(member, jnp.float64, opt_kw)
    np.testing.assert_allclose(losses[n], want, rtol=1e-12, atol=1e-14)
    for got, ref in zip(jax.tree.leaves(seeds.take_seed(state.params, n)),
                        jax.tree.leaves(params)):
      np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-13)
  # The grid really varies the training: members differing only in lr end apart.
  assert not np.allclose(losses[0], losses[2])


@pytest.mark.slow
def test_members_equal_one_at_a_time_runs_float32_to_rounding():
  with jax.enable_x64(False):
    members = sweep.sweep_grid({"lr": [1e-2, 3e-2], "seed": [0, 1]}, base=BASE)
    kw = dict(name="adam", schedule="cosine", total_steps=STEPS)
    state, losses = _sweep(members, jnp.float32, kw)
    for n, member in enumerate(members):
      params, want = _alone(member, jnp.float32, kw)
      np.testing.assert_allclose(losses[n], want, rtol=2e-5)
      for got, ref in zip(jax.tree.leaves(seeds.take_seed(state.params, n)),
                          jax.tree.leaves(params)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.shipped_xla
def test_hyperparameters_as_arrays_change_no_bit_against_the_multi_seed_chunk():
  """Where rounding differs from a single run, it is vmap's batched products, not the
  per-member arrays: with every member's lr equal, the sweep is bit for bit seeds' chunk."""
  members = sweep.sweep_grid({"seed": [0, 1, 2]}, base=BASE)
  state, _ = _sweep(members, jnp.float64, dict(name="adam"))
  opt = jrnn.training.make_optimizer("adam", BASE["lr"], clip_norm=BASE["clip"])
  params = jax.tree.map(lambda *x: jnp.stack(x), *[_init(jnp.float64)(m) for m in members])
  chunk = seeds.make_multi_seed_train_chunk(LOSS, opt, _make_batch(jnp.float64), steps=STEPS,
                                            has_aux=True)
  want, _, _ = chunk(params, jax.vmap(opt.init)(params), _keys(members), 0)
  for got, ref in zip(jax.tree.leaves(state.params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(got, ref)


# --- divergence ---

@pytest.mark.slow
def test_a_diverging_member_is_frozen_flagged_and_leaves_the_others_bit_for_bit():
  grid = {"lr": [1e-2, 3e-2], "seed": [0, 1]}
  members = sweep.sweep_grid(grid, base=dict(BASE, clip=0.0))
  healthy, losses_ok = _sweep(members, jnp.float64, dict(name="sgd"))
  blown = [dict(m) for m in members]
  blown[1]["lr"] = 1e200  # overflows to inf within a step or two
  state, losses = _sweep(blown, jnp.float64, dict(name="sgd"))
  bad = np.asarray(state.diverged_at)
  assert bad[1] >= 0 and np.all(np.delete(bad, 1) == -1)
  for n in (0, 2, 3):
    np.testing.assert_array_equal(losses[n], losses_ok[n])
    for got, ref in zip(jax.tree.leaves(seeds.take_seed(state.params, n)),
                        jax.tree.leaves(seeds.take_seed(healthy.params, n))):
      np.testing.assert_array_equal(got, ref)
  # The diverged member holds its last finite state: the state before step diverged_at.
  frozen = seeds.take_seed(state.params, 1)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(frozen))
  if bad[1] > 0:
    # (A sweep of one member: another width of the batched products, so to rounding.)
    before, _ = _sweep(blown[1:2], jnp.float64, dict(name="sgd"), steps=int(bad[1]))
    for got, ref in zip(jax.tree.leaves(frozen), jax.tree.leaves(seeds.take_seed(before.params, 0))):
      np.testing.assert_allclose(got, ref, rtol=1e-12)


# --- resume ---

@pytest.mark.slow
def test_resumed_sweep_equals_the_uninterrupted_one(tmp_path):
  members = sweep.sweep_grid({"lr": [1e-2, 3e-2], "seed": [0, 1]}, base=BASE)
  kw = dict(name="adam", schedule="cosine", total_steps=STEPS)
  whole, whole_losses = _sweep(members, jnp.float64, kw, chunks=2)
  opt = sweep.sweep_optimizer(**kw)
  chunk = sweep.make_sweep_chunk(LOSS, opt, _make_batch(jnp.float64), steps=STEPS // 2,
                                 has_aux=True)
  first, m1 = chunk(sweep.init_sweep(members, _init(jnp.float64), opt, _keys(members)), 0)
  path = str(tmp_path / "sweep.safetensors")
  checkpoint.save(path, first, {"step": STEPS // 2})
  template = sweep.init_sweep(members, _init(jnp.float64), opt, _keys(members))
  loaded, meta = checkpoint.load(path, template)
  assert meta["step"] == STEPS // 2
  resumed, m2 = chunk(loaded, STEPS // 2)
  for got, ref in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole)):
    got, ref = (jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
                for x in (got, ref))
    np.testing.assert_array_equal(got, ref)
  np.testing.assert_array_equal(np.concatenate([m1["loss"], m2["loss"]], 1), whole_losses)


def test_chunk_and_init_reject_bad_arguments():
  members = sweep.sweep_grid({"seed": [0, 1]}, base=BASE)
  opt = sweep.sweep_optimizer("adam")
  with pytest.raises(ValueError, match=r"data_keys must have shape \(N,\)=\(2,\)"):
    sweep.init_sweep(members, _init(jnp.float64), opt, _keys(members)[:1])
  with pytest.raises(ValueError, match="lacks \\['lr'\\]"):
    sweep.init_sweep([{"seed": 0, "clip": 1.0, "weight_decay": 0.0}], _init(jnp.float64), opt,
                     _keys(members)[:1])
  with pytest.raises(ValueError, match="steps must be a positive int"):
    sweep.make_sweep_chunk(LOSS, opt, _make_batch(jnp.float64), steps=0)
  with pytest.raises(ValueError, match="optimizer must be one of"):
    sweep.sweep_optimizer("lion")
  chunk = sweep.make_sweep_chunk(LOSS, opt, _make_batch(jnp.float64), steps=2, has_aux=True)
  state = sweep.init_sweep(members, _init(jnp.float64), opt, _keys(members))
  with pytest.raises(ValueError, match="start must be an int in"):
    chunk(state, -1)
  with pytest.raises(ValueError, match="decays .* must be given exactly when"):
    chunk(state, 0, jnp.zeros(2))


# --- the CLI ---

def _read(directory, name):
  with open(os.path.join(directory, name), encoding="utf-8") as f:
    return f.read()


TINY = ["--task", "adding", "--hidden", "6", "--seq-len", "8", "--batch-size", "3", "--steps",
        "8", "--log-every", "4", "--ckpt-every", "4", "--val-batch", "4", "--no-progress"]


@pytest.mark.slow  # over 20 s on 2 busy cores: two runs of the job
def test_cli_sweep_writes_its_files_matches_single_runs_and_refuses_to_overwrite(tmp_path):
  out = str(tmp_path / "sw")
  summary = cli.train_from_args(TINY + ["--sweep", "lr=1e-2,1e30;seed=0:2", "--out", out])
  for name in ("sweep.json", "sweep.md", "sweep_metrics.jsonl", "sweep.png",
               "sweep_checkpoint.safetensors"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  result = json.loads(_read(out, "sweep.json"))
  assert [(m["lr"], m["seed"]) for m in result["members"]] == [(1e-2, 0), (1e-2, 1), (1e30, 0),
                                                               (1e30, 1)]
  assert [m["diverged_at"] is None for m in result["members"]] == [True, True, False, False]
  rows = [json.loads(line) for line in _read(out, "sweep_metrics.jsonl").splitlines()]
  assert sorted((r["member"], r["step"]) for r in rows) == [(n, s) for n in range(4)
                                                            for s in (4, 8)]
  table = _read(out, "sweep.md")
  assert "| member | lr | seed | train_loss | val_mse | diverged_at |" in table
  assert summary["step"] == 8 and len(summary["members"]) == 4
  # Member 1 against the same config run alone by jrnn-train (float32, to rounding).
  single = str(tmp_path / "single")
  cli.train_from_args(TINY + ["--lr", "1e-2", "--seed", "1", "--out", single])
  alone = [json.loads(line) for line in _read(single, "metrics.jsonl").splitlines()]
  mine = [r for r in rows if r["member"] == 1]
  for a, b in zip(alone, mine, strict=True):
    assert a["step"] == b["step"]
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["val_mse"], a["val_mse"], rtol=1e-5)
  with pytest.raises(SystemExit) as e:
    cli.train_from_args(TINY + ["--sweep", "lr=1e-2", "--out", out])
  assert e.value.code == 2
  with pytest.raises(SystemExit):
    cli.train_from_args(TINY + ["--sweep", "lr=1e-2", "--out", single])  # holds a run


def test_cli_rejects_a_bad_spec_and_an_unsweepable_task(tmp_path, capsys):
  for argv, why in ((TINY + ["--sweep", "lrr=1"], 'unknown axis "lrr"'.replace('"', "'")),
                    (["--task", "charlm", "--sweep", "seed=0:2"], "cannot be swept"),
                    (TINY + ["--sweep", "init_scale=0.5", "--init", "pytorch"],
                     "--init-scale 0.5 applies to")):
    with pytest.raises(SystemExit) as e:
      cli.train_from_args(argv + ["--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert why in err and err.count("\n") == 1, err


@pytest.mark.slow  # over 20 s on 2 busy cores: two runs of the job
def test_cli_resumed_sweep_equals_the_uninterrupted_one(tmp_path):
  spec = ["--sweep", "lr=1e-2,3e-2;seed=0:2"]
  whole = str(tmp_path / "whole")
  cli.train_from_args(TINY + spec + ["--out", whole])
  part = str(tmp_path / "part")
  first = cli.train_from_args(TINY + spec + ["--out", part, "--time-budget", "0"])
  assert first["stopped"] and first["step"] == 4
  cli.train_from_args(["--resume", part, "--no-progress"])
  assert checkpoint.same_state(os.path.join(part, sweep_run.SWEEP_CKPT),
                               os.path.join(whole, sweep_run.SWEEP_CKPT))
  rows = [_read(d, "sweep_metrics.jsonl") for d in (part, whole)]
  assert rows[0] == rows[1]
  with pytest.raises(SystemExit):  # another spec than the saved one
    cli.train_from_args(["--resume", part, "--sweep", "lr=1e-2"])


def test_init_scale_reaches_the_single_run_init():
  cfg = Config(task="adding", hidden=6, layers=1, init="orthogonal", init_scale=0.5, seq_len=8)
  from jrnn.training import loop, tasks
  task = tasks.make_task(cfg, jax.random.key(0))
  params = loop.initial_state(cfg, task, loop.make_optimizer(cfg)).params
  sv = np.linalg.svd(np.asarray(params.w_hh), compute_uv=False)
  np.testing.assert_allclose(sv, 0.5, rtol=1e-5)


@pytest.mark.slow  # two runs of the job
def test_a_signal_checkpoints_the_sweep_at_the_next_log_step_and_resume_finishes_it(tmp_path):
  import signal

  cfg = Config(task="adding", hidden=6, seq_len=8, batch_size=3, steps=8, log_every=4,
               ckpt_every=8, val_batch=4)
  out = str(tmp_path / "sw")

  def log(message):  # SIGINT as the sweep starts: it must finish the chunk, then stop
    if message.startswith("sweep:"):
      signal.raise_signal(signal.SIGINT)

  first = sweep_run.run_sweep(cfg, {"seed": [0, 1]}, out, log=log)
  assert first["signal"] == signal.SIGINT and first["stopped"] and first["step"] == 4
  assert checkpoint.load_metadata(os.path.join(out, sweep_run.SWEEP_CKPT))["step"] == 4
  done = sweep_run.run_sweep(cfg, {"seed": [0, 1]}, out, resume=out, log=lambda m: None)
  assert done["step"] == 8 and "signal" not in done
  assert [r["member"] for r in map(json.loads, _read(out, "sweep_metrics.jsonl").splitlines())
          ] == [0, 1, 0, 1]
