"""XLA:CPU flags as a lever: the hand path's training step and its matrix products under each.

XLA_FLAGS is read once per process, so each flag set runs in its own child process; sets are
taken in turn for several rounds so that machine noise falls on all of them alike.

    python scripts/bench_xla_flags.py                 # large CPU anchor size, 3 rounds
    python scripts/bench_xla_flags.py --size 32,128,64,256,64 --rounds 5

Prints, per flag set, the median over rounds of: the train step (jrnn hand path), the input
projection GEMM (T·B × I) @ (I × H), the weight-gradient GEMM (H × T·B) @ (T·B × H), and the
forward recurrence alone, plus the largest relative difference of the gradients from the
no-flag run (the flags must not change the maths beyond float32 rounding).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

FLAG_SETS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnn_dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "onednn_dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "vec512": "--xla_cpu_prefer_vector_width=512",
}


def child(size, reps):
  import time

  import jax
  import jax.numpy as jnp
  import numpy as np

  import jrnn
  from jrnn.bptt import forward_states

  b, t, i, h, o = size
  key = jax.random.PRNGKey(0)
  params = jrnn.init_params(key, i, h, o, scheme="pytorch")
  xs = jax.random.normal(jax.random.PRNGKey(1), (t, b, i))
  ys = jax.random.normal(jax.random.PRNGKey(2), (t, b, o))

  def loss(p):
    out = jrnn.forward(p, xs, time_major=True)
    return jnp.mean(jnp.sum((out.ys - ys) ** 2, axis=(0, 2)))

  step = jax.jit(jax.value_and_grad(loss))
  a = jax.random.normal(key, (t * b, i))
  w = jax.random.normal(key, (i, h))
  m = jax.random.normal(key, (t * b, h))
  proj = jax.jit(lambda a, w: a @ w)
  wgrad = jax.jit(lambda m: m.T @ m)
  u = jax.random.normal(key, (t, b, h))
  act = jrnn.get_activation("tanh")
  rec = jax.jit(lambda wh, u: forward_states(wh, u, jnp.zeros((b, h)), None, act, 1))

  def med(fn):
    jax.block_until_ready(fn())
    ts = []
    for _ in range(reps):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3

  out = {"train": med(lambda: step(params)), "proj": med(lambda: proj(a, w)),
         "wgrad": med(lambda: wgrad(m)), "recurrence": med(lambda: rec(params.w_hh, u))}
  grads = step(params)[1]
  out["grads"] = [np.asarray(g, np.float64).ravel().tolist()[:4096]
                  for g in jax.tree_util.tree_leaves(grads)]
  print("RESULT " + json.dumps(out))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", default="128,256,128,512,128", help="B,T,I,H,O")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--sets", default=",".join(FLAG_SETS), help="names from FLAG_SETS")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  size = tuple(int(v) for v in args.size.split(","))
  if args.child:
    child(size, args.reps)
    return 0
  import numpy as np
  names = args.sets.split(",")
  times = {n: [] for n in names}
  grads = {}
  for r in range(args.rounds):
    for n in names[r % len(names):] + names[:r % len(names)]:
      env = dict(os.environ, XLA_FLAGS=FLAG_SETS[n])
      res = subprocess.run([sys.executable, __file__, "--child", "--size", args.size,
                            "--reps", str(args.reps)], env=env, capture_output=True, text=True,
                           check=False)
      line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
      if not line:
        print(f"{n}: failed\n{res.stderr[-1500:]}")
        times[n].append(None)
        continue
      out = json.loads(line[-1][7:])
      grads[n] = out.pop("grads")
      times[n].append(out)
  base = grads.get("default")
  print(f"size (B,T,I,H,O) = {size}; median ms over {args.rounds} rounds")
  print(f"{'flags':12s} {'train':>9s} {'proj':>8s} {'wgrad':>8s} {'recur':>8s} {'grad diff':>10s}")
  for n in names:
    ok = [x for x in times[n] if x]
    if not ok:
      print(f"{n:12s} failed")
      continue
    med = {k: statistics.median(x[k] for x in ok) for k in ok[0]}
    diff = max(float(np.max(np.abs(np.asarray(g) - np.asarray(g0))) /
                     max(float(np.max(np.abs(g0))), 1e-30))
               for g, g0 in zip(grads[n], base)) if base and n in grads else float("nan")
    print(f"{n:12s} {med['train']:9.1f} {med['proj']:8.2f} {med['wgrad']:8.2f} "
          f"{med['recurrence']:8.1f} {diff:10.2e}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
