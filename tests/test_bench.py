"""The benchmark scripts: bench.py's quick mode runs end to end, every implementation it times
computes the same loss and gradients as jrnn at the same parameters, and benchlib (sizes, timer,
environment) behaves; the GPU script parses and exits cleanly without a GPU."""
import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
sys.path.insert(0, SCRIPTS)
import bench  # noqa: E402
from benchmarks import bench_impls  # noqa: E402
from common import benchlib  # noqa: E402

SIZE = (3, 7, 4, 5, 2)  # (B, T, I, H, O): all different, so a transposed weight cannot pass


@pytest.mark.slow
def test_quick_run_writes_json(tmp_path):
  """``bench.py --quick`` as .ci/run ran it just before the suite (``JRNN_CI_BENCH_QUICK``: the
  folder with its ``bench.json`` and ``stdout.txt``), else run here; with the user's XLA flags
  either way, not the suite's fast-compiling ones."""
  if os.environ.get("JRNN_CI_BENCH_QUICK"):
    ran = pathlib.Path(os.environ["JRNN_CI_BENCH_QUICK"])
    out, stdout = ran / "bench.json", (ran / "stdout.txt").read_text()
  else:
    out = tmp_path / "bench.json"
    env = dict(os.environ, XLA_FLAGS=os.environ.get("JRNN_TEST_SHIPPED_XLA_FLAGS", ""))
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, "bench.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=600,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
  result = json.loads(out.read_text())
  assert isinstance(result["device"], str) and result["device"]
  assert result["ceiling_gflops"] > 0
  rows = result["rows"]
  for row in rows:
    assert set(row) >= {"impl", "size", "mode", "ms", "peak_bytes"}
    assert row["mode"] in ("train", "forward")
    assert len(row["size"]) == 5 and all(isinstance(v, int) for v in row["size"])
  jrnn_rows = {(r["impl"], r["mode"]): r for r in rows if r["impl"].startswith("jrnn")}
  assert set(jrnn_rows) == {(i, m) for i in ("jrnn_hand", "jrnn_autodiff")
                            for m in ("train", "forward")}
  for row in jrnn_rows.values():
    assert row["ms"] > 0 and row["peak_bytes"] > 0
  # A peer is either timed or skipped with a reason, never silently missing.
  timed = {r["impl"] for r in rows}
  torch_name = "torch_cudnn" if result["backend"] == "gpu" else "torch_rnn"
  for peer in ("flax_linen", "flax_jrnn", "haiku_vanilla", torch_name):
    assert peer in timed or peer in result["skipped"]
  assert "jrnn_hand" in stdout and "/best-peer" in stdout
  assert set(result["environment"]) >= {"cpu", "versions", "backend"}
  sweep = result["sweep"]  # the sweep row: 4 members in quick mode, both sides timed
  assert sweep["members"] == 4 and sweep["ms_sweep"] > 0 and sweep["ms_sequential"] > 0
  assert sweep["ratio"] == pytest.approx(sweep["ms_sequential"] / sweep["ms_sweep"])
  assert "sweep / sequential throughput" in stdout
  if {"flax_linen", "flax_jrnn"} <= timed:  # the swap's side-by-side table
    assert "jrnn layer / SimpleCell" in stdout


def _missing(module):
  # find_spec, not an import: whether a peer is installed needs no import of it.
  return importlib.util.find_spec(module) is None


def _cases():
  """``(build, activation)``: each implementation and the jrnn activation it must match."""
  cases = [pytest.param(lambda p: bench_impls.build_jrnn(p, grad="hand"), "tanh",
                        id="jrnn_hand"),
           pytest.param(lambda p: bench_impls.build_jrnn(p, grad="autodiff", unroll=3), "tanh",
                        id="jrnn_autodiff_u3")]
  # hk.VanillaRNN is a ReLU RNN (see bench_impls.build_haiku).
  for name, module, build, act in (("flax_linen", "flax", bench_impls.build_flax, "tanh"),
                                   ("flax_jrnn", "flax", bench_impls.build_flax_jrnn, "tanh"),
                                   ("haiku_vanilla", "haiku", bench_impls.build_haiku, "relu"),
                                   ("torch_rnn", "torch", bench_impls.build_torch, "tanh")):
    cases.append(pytest.param(build, act, id=name, marks=pytest.mark.skipif(
        _missing(module), reason=f"{module} not installed")))
  return cases


def _as_run():
  """The benchmark's numerics: float32 and NumPy's rank promotion (the peers' internals rely on
  it), whereas this suite's conftest turns on x64 and strict promotion."""
  return jax.enable_x64(False), jax.numpy_rank_promotion("allow")


@pytest.mark.slow
@pytest.mark.parametrize("build, activation", _cases())
def test_same_loss_and_gradients_as_jrnn(build, activation):
  problem = bench_impls.make_problem(SIZE)
  x64, promotion = _as_run()
  with x64, promotion:
    ref_loss, ref_grads = bench_impls.build_jrnn(
        problem, grad="autodiff", activation=activation).loss_and_grads()
    loss, grads = build(problem).loss_and_grads()
  # The reference itself against the anchors' loss written out in NumPy float64.
  act = np.tanh if activation == "tanh" else lambda a: np.maximum(a, 0)
  p = problem.params
  h = np.zeros((SIZE[0], SIZE[3]))
  total = 0.0
  for x_t, y_t in zip(problem.xs, problem.targets):
    h = act(h @ np.float64(p.w_hh).T + x_t @ np.float64(p.w_xh).T + p.b_h)
    total += np.sum((h @ np.float64(p.w_hy).T + p.b_y - y_t) ** 2)
  np.testing.assert_allclose(ref_loss, total / SIZE[0], rtol=1e-5)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert set(grads) == set(ref_grads) == {"w_xh", "w_hh", "b_h", "w_hy", "b_y"}
  for name, g in grads.items():
    assert g.shape == ref_grads[name].shape, name
    np.testing.assert_allclose(g, ref_grads[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_peak_bytes_reported_for_jax_impls():
  problem = bench_impls.make_problem(SIZE)
  x64, promotion = _as_run()
  with x64, promotion:
    impl = bench_impls.build_jrnn(problem)
  # At least the arguments: five weights, inputs and targets, float32.
  n_args = sum(np.size(a) for a in problem.params if a is not None)
  assert impl.peak_bytes["train"] >= 4 * (n_args + problem.xs.size + problem.targets.size)


def test_parse_sizes_and_variants():
  assert benchlib.parse_sizes("1,1000,16,64,16; 32,128,64,256,64") == [
      (1, 1000, 16, 64, 16), (32, 128, 64, 256, 64)]
  for bad in ("1,2,3", "1,2,3,4,x", "1,2,3,4,0"):
    with pytest.raises(argparse.ArgumentTypeError, match="five positive integers"):
      benchlib.parse_sizes(bad)
  assert bench.parse_variants("hand,hand:8,hand/xla:32,autodiff:1,hand/pallas_interpret") == [
      ("hand", "auto", 1), ("hand", "auto", 8), ("hand", "xla", 32), ("autodiff", "auto", 1),
      ("hand", "pallas_interpret", 1)]
  for bad, why in (("fast:2", "grad must be one of"), ("hand/cuda", "kernel must be one of"),
                   ("autodiff/pallas", "differentiates XLA's loops"), ("hand:0", "positive")):
    with pytest.raises(argparse.ArgumentTypeError, match=why):
      bench.parse_variants(bad)


def test_impls_filter_and_variant_names():
  args = bench.parse_args(["--impls", "jrnn,flax", "--jrnn-variants",
                           "hand:1,hand:8,hand/xla,autodiff"])
  names = [n for n, _ in bench.make_builders(args, on_gpu=False)]
  assert names == ["jrnn_hand", "jrnn_hand_u8", "jrnn_hand_xla", "jrnn_autodiff", "flax_linen",
                   "flax_jrnn"]


def test_flax_swap_table_pairs_the_two_flax_rows():
  rows = [{"impl": n, "size": [1, 2, 3, 4, 5], "mode": m, "ms": ms}
          for n, m, ms in (("flax_linen", "train", 4.0), ("flax_jrnn", "train", 3.0),
                           ("flax_linen", "forward", 2.0))]
  table = bench.flax_swap_table(rows)
  assert "| (1, 2, 3, 4, 5) | train | 4.000 | 3.000 | 0.75 |" in table
  assert "forward" not in table  # no jrnn row to pair it with
  assert bench.flax_swap_table(rows[2:]) == ""


def test_flop_count_matches_the_anchor_formula():
  b, t, i, h, o = size = (32, 128, 64, 256, 64)
  assert benchlib.flop_count(size, "train") == 6 * t * b * (i * h + h * h) + 6 * t * b * h * o
  assert benchlib.flop_count(size, "forward") == 2 * t * b * (i * h + h * h + h * o)
  with pytest.raises(ValueError, match="mode must be"):
    benchlib.flop_count(size, "backward")


def test_median_ms_warms_up_then_takes_the_median():
  calls = []
  assert benchlib.median_ms(lambda: calls.append(1), reps=5, warmup=2) >= 0
  assert len(calls) == 7
  with pytest.raises(ValueError, match="reps must be at least 1"):
    benchlib.median_ms(lambda: None, reps=0)


def test_environment_names_the_machine_and_versions():
  env = benchlib.environment()
  assert env["cpu"] and env["backend"] == jax.default_backend()
  assert env["versions"]["jax"] == jax.__version__
  header = benchlib.format_environment(env)
  assert header.startswith("device: ") and f"jax {jax.__version__}" in header
  assert benchlib.anchor_sizes(False)[0] == (1, 1000, 16, 64, 16)
  assert len(benchlib.anchor_sizes(True)) == 4


def test_gpu_scripts_parse_and_exit_cleanly_without_a_gpu(tmp_path):
  for script in ("gpu/gpu_check.py", "gpu/gpu_probe.py", "benchmarks/bench_memory.py"):
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, script), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage" in proc.stdout, (script, proc.stderr[-2000:])


@pytest.mark.slow
def test_bench_parts_add_up_to_the_gradient_of_the_whole_step():
  """The breakdown times the real step cut into parts: the parts' weight gradients are the
  whole step's gradient (float32, rounding only), and every row gets a time."""
  from benchmarks import bench_parts

  size = (3, 7, 4, 5, 2)
  parts = bench_parts._parts(size)
  d_whh, d_wxh, d_bh, d_why, d_by = parts["weight gradients"]()
  _, g = parts["whole step"]()
  pairs = ((d_whh, g.w_hh), (d_wxh, g.w_xh), (d_bh, g.b_h), (d_why, g.w_hy), (d_by, g.b_y))
  for got, want in pairs:
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
  rows = bench_parts.measure(size, reps=1)
  sums = {"sum of the parts"} | {f"sum of the parts ({bench_parts.loop_kernel(size)} kernel)"}
  assert set(bench_parts.part_flops(size)) | {"sum of the parts"} <= set(rows)
  assert set(rows) - set(bench_parts.part_flops(size)) <= sums
  if bench_parts.loop_kernel(size) != "xla":  # the loops on the kernel compute the XLA loops' δ
    kern = bench_parts.loop_kernel(size)
    d_xla, _ = parts["recurrence backward"]()
    d_kern, _ = parts[f"recurrence backward ({kern} kernel)"]()
    np.testing.assert_allclose(np.asarray(d_kern), np.asarray(d_xla), rtol=1e-4, atol=1e-6)
  assert all(r["ms"] > 0 for r in rows.values())
