"""Second GPU call after ``scripts/gpu/gpu_check.py``: two open questions from its first runs.

A. The masked ReLU case with a streamed ``W_hh`` (H=256) under TF32 was 20x further from the
   IEEE float32 reference than XLA's own TF32 (gpu_check run 2). A race would make the error
   move between runs on the same inputs; a numerical cause would not. This runs the same inputs
   three times and varies one thing at a time (mask, activation, resident bf16).
B. ``num_stages`` (Triton software pipelining of the in-kernel loop): 2 was faster than 1 at
   (1, 1000, 64) but ran out of shared memory with a streamed H=256 ``W_hh``. Times 1, 2 and 3
   at the resident sizes, beside torch cuDNN, and checks each against the XLA path.

Run on a CUDA machine: ``python scripts/gpu/gpu_probe.py --out "$OUT"`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/

from common import benchlib  # noqa: E402  (the timer and the environment record)
from gpu import gpu_check as gc  # noqa: E402  (the same problems and cores)

PROBE_SIZES = [
  (1, 1000, 64, 64, 64),
  (1, 1000, 32, 32, 32),
  (1, 1000, 128, 128, 128),
  (16, 512, 64, 64, 64),
  (64, 256, 128, 128, 128),
]


def _grads(core, w, u, h0, g, mask):
  import jax

  hs, vjp = jax.vjp(lambda w, u, h0: core(w, u, h0, mask), w, u, h0)
  return (hs, *vjp(g))


def _inputs(b, t, h, seed, masked):
  import jax
  import jax.numpy as jnp

  k = jax.random.split(jax.random.PRNGKey(seed), 5)
  w = jax.random.normal(k[0], (h, h), jnp.float32) / h**0.5
  u = jax.random.normal(k[1], (t, b, h), jnp.float32)
  h0 = 0.5 * jax.random.normal(k[2], (b, h), jnp.float32)
  g = jax.random.normal(k[3], (t, b, h), jnp.float32)
  mask = jax.random.bernoulli(k[4], 0.8, (t, b)) if masked else None
  return w, u, h0, g, mask


def probe_streamed_tf32(log):
  import jax
  import jax.numpy as jnp

  from jrnn.activations import ACTIVATIONS

  rows = []
  cases = [
    ("relu", True, {"precision": "tf32"}, 3),
    ("relu", False, {"precision": "tf32"}, 1),
    ("tanh", True, {"precision": "tf32"}, 1),
    ("relu", True, {"precision": "tf32", "num_warps": 4}, 1),
    ("relu", True, {"compute_dtype": jnp.bfloat16, "resident": True}, 1),
  ]
  for name, masked, kw, repeats in cases:
    arrays = _inputs(5, 33, 256, 7, masked)
    act = ACTIVATIONS[name]
    try:
      xla = jax.jit(functools.partial(_grads, gc.make_core("xla", act)))
      with jax.default_matmul_precision("float32"):
        ref = xla(*arrays)
      with jax.default_matmul_precision("tensorfloat32"):
        xla_tf32 = xla(*arrays)
      run = jax.jit(functools.partial(_grads, gc.make_core("pallas", act, **kw)))
      errs = []
      for _ in range(repeats):
        got = run(*arrays)
        errs.append([gc.rel(a, r) for a, r in zip(got, ref, strict=True)])
      row = {
        "case": f"{name}/{'mask' if masked else 'nomask'}/{gc._show(kw)}",
        "pallas_err_hs_dW_du_dh0": errs,
        "xla_tf32_err": [gc.rel(a, r) for a, r in zip(xla_tf32, ref, strict=True)],
        "identical_repeats": all(e == errs[0] for e in errs),
      }
    except Exception as e:  # noqa: BLE001
      row = {
        "case": f"{name}/{masked}/{gc._show(kw)}",
        "status": f"ERROR {e!s:.300}",
        "traceback": traceback.format_exc()[-3000:],
      }
    rows.append(row)
    log(row)
  return rows


def probe_stages(reps, log):
  import jax

  from jrnn.activations import ACTIVATIONS

  act = ACTIVATIONS["tanh"]
  rows = []
  for size in PROBE_SIZES:
    b, t, _, h, _ = size
    params, xs, ys = gc.layer_problem(size)
    arrays = _inputs(b, t, h, 11, True)
    with jax.default_matmul_precision("float32"):
      ref = jax.jit(functools.partial(_grads, gc.make_core("xla", act)))(*arrays)
    for stages in (1, 2, 3):
      kw = {"num_stages": stages}
      try:
        got = jax.jit(
          functools.partial(_grads, gc.make_core("pallas", act, precision="highest", **kw))
        )(*arrays)
        err = max(gc.rel(a, r) for a, r in zip(got, ref, strict=True))
        with jax.default_matmul_precision("tensorfloat32"):
          step, fwd = gc.layer_fns(gc.make_core("pallas", act, **kw), size)
          train = benchlib.median_ms(lambda: step(params, xs, ys), reps)
          ms = benchlib.median_ms(lambda: fwd(params, xs), reps)
        row = {
          "size": size,
          "impl": f"pallas_tf32_stages{stages}",
          "train_ms": train,
          "fwd_ms": ms,
          "f32_masked_max_err": err,
          "status": "ok",
        }
      except Exception as e:  # noqa: BLE001
        row = {
          "size": size,
          "impl": f"pallas_tf32_stages{stages}",
          "status": f"ERROR {e!s:.300}",
          "traceback": traceback.format_exc()[-3000:],
        }
      rows.append(row)
      log(row)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
  p.add_argument("--reps", type=int, default=20)
  args = p.parse_args(argv)
  import jax

  if not any(d.platform == "gpu" for d in jax.devices()):
    print("no GPU found: nothing to probe")
    return 0
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)

  def log(row):
    print(
      "  ", json.dumps({k: v for k, v in row.items() if k != "traceback"}, default=str), flush=True
    )

  report = {"environment": benchlib.environment()}
  print(benchlib.format_environment(report["environment"]), flush=True)
  print("[A] streamed W_hh, TF32: race or rounding?", flush=True)
  report["streamed_tf32"] = probe_streamed_tf32(log)
  (out / "gpu_probe.json").write_text(json.dumps(report, indent=1, default=str))
  print("[B] num_stages at the resident sizes", flush=True)
  report["stages"] = probe_stages(args.reps, log)
  report["stages"] += gc.time_torch(PROBE_SIZES, args.reps, gc.Clock(1e9), log)
  (out / "gpu_probe.json").write_text(json.dumps(report, indent=1, default=str))
  print("\n" + gc.table(report["stages"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
