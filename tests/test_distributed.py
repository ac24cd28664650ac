"""jrnn-train on jax.distributed: 2 CPU processes with 2 devices each train to the parameters of
1 process with 4 devices, and the 2-process run resumes in 1 process."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from jrnn.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--hidden", "8", "--seq-len", "8", "--batch-size", "8", "--layers", "2",
        "--no-progress", "--sample-len", "0", "--schedule", "constant", "--log-every", "2",
        "--ckpt-every", "2", "--ema", "0.9", "--dropout", "0.1"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(args, n_devices, cache):
  # A compilation cache shared by the processes: later ones load what earlier ones compiled.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                       f"--xla_force_host_platform_device_count={n_devices}")
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "train.py"), *args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT)


def _wait(procs, timeout=240):
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]


def _rows(out):
  with open(os.path.join(out, loop.METRICS_NAME), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_processes_equal_one_and_resume_in_one(tmp_path):
  cache = str(tmp_path / "jax_cache")
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  _wait([_start(TINY + ["--steps", "6", "--out", one], 4, cache)])
  group = f"127.0.0.1:{_free_port()}"
  _wait([_start(TINY + ["--steps", "4", "--out", two, "--coordinator", group,
                        "--num-processes", "2", "--process-id", str(i)], 2, cache)
         for i in range(2)])
  # Process 1 wrote nothing: one row per log step, from process 0.
  assert [r["step"] for r in _rows(two)] == [2, 4]
  for a, b in zip(_rows(two), _rows(one)):
    np.testing.assert_allclose([a["train_loss"], a["val_bpc"]], [b["train_loss"], b["val_bpc"]],
                               rtol=1e-5)
  # The 2-process run continues in 1 process, to step 6.
  _wait([_start(["--resume", two, "--steps", "6", "--no-progress"], 4, cache)])
  assert [r["step"] for r in _rows(two)] == [2, 4, 6]
  got, want = (load_file(os.path.join(d, loop.CKPT_NAME)) for d in (two, one))
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6, err_msg=name)
