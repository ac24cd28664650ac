"""Side-by-side timing of one Elman-RNN training step and forward pass: jrnn against its peers.

Implementations (see ``scripts/benchmarks/bench_impls.py``; all share one set of parameters and
data):
jrnn's hand BPTT and autodiff paths (``jrnn_hand``, ``jrnn_autodiff``; ``_{kernel}`` when a
kernel other than ``auto`` is asked for, ``_u{K}`` when ``unroll=K``), flax.linen
``RNN(SimpleCell)`` (``flax_linen``), the same Flax model with the jrnn layer
``jrnn.interop.flax_linen.ElmanRNN`` swapped in (``flax_jrnn``), haiku ``VanillaRNN`` +
``dynamic_unroll`` (``haiku_vanilla``; a ReLU RNN, haiku has no tanh option) and
``torch.nn.RNN`` (``torch_rnn`` on CPU, ``torch_cudnn`` on CUDA). Each adds a linear readout;
the loss is the mean over the batch of Σ_t squared error (``../shared/ANCHORS.md``), float32. A
training step is one jitted ``value_and_grad`` with respect to every parameter; the forward
pass returns the readout.

Method: everything for one size is built (and compiled) first; each (implementation, mode) is
warmed up, then all of them run round-robin, the starting point rotating each round, for
``--rounds`` rounds. A sample is the mean of ``number`` back-to-back calls, ``number`` chosen in
warm-up so that a sample lasts at least ``--min-sample-ms``; each call waits for its result. The
table shows the median sample. On a GPU, jax uses TF32 matrix units
(``default_matmul_precision("tensorfloat32")``) and torch allows TF32, unless ``--strict-f32``.

GFLOP/s counts the matrix products: training ``6·T·B·(I·H + H·H) + 6·T·B·H·O``, forward
``2·T·B·(I·H + H·H + H·O)`` (:func:`benchlib.flop_count`). The ceiling is a large float32
matrix product timed in the same run (XLA, and NumPy on CPU). Peak memory is XLA's buffer
assignment for the compiled step (arguments + outputs + temporaries) for the jax
implementations and ``torch.cuda.max_memory_allocated`` for torch on CUDA; torch on CPU has
none (``n/a``).

Examples::

  python scripts/bench.py                       # the CPU anchor sizes (or GPU ones on a GPU)
  python scripts/bench.py --quick               # tiny, seconds: the CI smoke run
  python scripts/bench.py --sizes "32,128,64,256,64" --impls jrnn,flax --json out.json
  python scripts/bench.py --jrnn-variants hand,hand:8,hand/xla:32,autodiff --impls jrnn
  python scripts/bench.py --impls flax            # the Flax model: SimpleCell vs the jrnn layer
  python scripts/bench.py --modes train --impls jrnn_hand --sizes "1,1000,16,64,16"  # + sweep row

The sweep row (:func:`time_sweep`, at the first size): ``--sweep-members`` learning rates trained
as one compiled program against the same members run one after another, in steps per second
summed over members (``--sweep-members 0`` leaves it out).

Sizes, the timer and the environment header come from ``scripts/common/benchlib.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time

# jax and torch share one GPU here: without this XLA reserves most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jrnn  # noqa: E402
from benchmarks import bench_impls  # noqa: E402
from common import benchlib  # noqa: E402
from common.benchlib import flop_count, parse_sizes  # noqa: E402,F401  (re-exported for the tests)

MODES = ("train", "forward")
# The Flax model with jrnn's layer: compared with the same model's nn.RNN(SimpleCell).
FLAX_SWAP, FLAX_BASE = "flax_jrnn", "flax_linen"


def parse_variants(text):
  """``"hand,hand:8,hand/xla:32,autodiff"`` -> ``[(grad, kernel, unroll), ...]``.

  A variant is ``GRAD[/KERNEL][:K]``: ``GRAD`` one of ``jrnn.GRADS``, ``KERNEL`` one of
  ``jrnn.KERNELS`` (default ``auto``), ``K`` the loops' unroll (default 1). Whatever jrnn offers
  now, so a new gradient method or kernel needs no change here.
  """
  variants = []
  for part in filter(None, (p.strip() for p in text.split(","))):
    choice, _, unroll = part.partition(":")
    grad, _, kernel = choice.partition("/")
    kernel = kernel or "auto"
    try:
      if not (unroll or "1").isdigit() or int(unroll or 1) < 1:
        raise ValueError(f"K must be a positive integer, got {unroll!r}")
      jrnn.engine.check_choices(grad, kernel, "sequential")
    except ValueError as e:
      raise argparse.ArgumentTypeError(
        f"a jrnn variant is GRAD[/KERNEL][:K], GRAD one of {jrnn.GRADS}, KERNEL one of "
        f"{jrnn.KERNELS}, K the unroll; got {part!r} ({e})"
      ) from None
    variants.append((grad, kernel, int(unroll or 1)))
  return variants


def variant_name(grad, kernel, unroll):
  return (
    f"jrnn_{grad}"
    + (f"_{kernel}" if kernel != "auto" else "")
    + (f"_u{unroll}" if unroll != 1 else "")
  )


def _is_ours(name):
  return name.startswith("jrnn") or name == FLAX_SWAP


def matmul_ceiling(on_gpu, tf32, quick):
  """GFLOP/s of square float32 matrix products, XLA (and NumPy on CPU), in this process."""
  sides = [256] if quick else ([8192] if on_gpu else [512, 2048])
  out = {}
  key = jax.random.PRNGKey(0)
  for n in sides:
    reps = 2 if quick else max(5, 2**33 // n**3)  # small products: more, shorter reps
    a = jax.random.normal(key, (n, n), jnp.float32)
    with bench_impls.precision(tf32):
      dot = jax.jit(jnp.dot).lower(a, a).compile()
    ms = benchlib.median_ms(lambda: dot(a, a), reps, warmup=1)
    out[f"xla_{n}"] = 2 * n**3 / ms / 1e6
    if not on_gpu:
      an = np.asarray(a)
      out[f"numpy_{n}"] = 2 * n**3 / benchlib.median_ms(lambda: an @ an, reps, warmup=1) / 1e6
  return out


def make_builders(args, on_gpu):
  """``[(name, build(problem) -> Impl)]`` in table order, after ``--impls``."""
  tf32 = on_gpu and not args.strict_f32
  builders = []
  for grad, kernel, unroll in args.jrnn_variants:
    builders.append(
      (
        variant_name(grad, kernel, unroll),
        lambda p, g=grad, k=kernel, u=unroll: bench_impls.build_jrnn(
          p, grad=g, kernel=k, unroll=u, tf32=tf32
        ),
      )
    )
  builders.append((FLAX_BASE, lambda p: bench_impls.build_flax(p, tf32=tf32)))
  builders.append((FLAX_SWAP, lambda p: bench_impls.build_flax_jrnn(p, tf32=tf32)))
  builders.append(("haiku_vanilla", lambda p: bench_impls.build_haiku(p, tf32=tf32)))
  torch_name = "torch_cudnn" if on_gpu else "torch_rnn"
  builders.append(
    (torch_name, lambda p: bench_impls.build_torch(p, device=_torch_device(on_gpu), tf32=tf32))
  )
  if args.impls:
    keep = [f.strip() for f in args.impls.split(",") if f.strip()]
    builders = [(n, b) for n, b in builders if any(n.startswith(f) for f in keep)]
  # Duplicate variants (e.g. --unroll 1 with hand:1 twice) would only waste time.
  seen = set()
  return [(n, b) for n, b in builders if not (n in seen or seen.add(n))]


def _torch_device(on_gpu):
  import torch

  if on_gpu:
    if not torch.cuda.is_available():
      # Comparing a CPU torch with a GPU jax says nothing; skip torch with the reason.
      raise ImportError("torch has no CUDA here while jax runs on the GPU")
    return "cuda"
  return "cpu"


def time_size(size, builders, args, modes):
  """Builds every implementation for ``size``, then times them round-robin.

  Returns ``(samples, impls, skipped)``: ``samples[(name, mode)]`` is a list of ms.
  """
  problem = bench_impls.make_problem(size)
  impls, skipped = {}, {}
  for name, build in builders:
    try:
      impls[name] = build(problem)
    except ImportError as e:
      skipped[name] = f"not installed: {e}"
    except Exception as e:  # one broken peer must not lose the whole run; it is reported
      skipped[name] = f"failed to build: {type(e).__name__}: {e}"
  tasks = []
  for name, impl in impls.items():
    for mode in modes:
      fn = getattr(impl, mode)
      for _ in range(args.warmup):
        fn()
      t0 = time.perf_counter()
      fn()
      once = time.perf_counter() - t0
      number = max(1, min(args.max_number, math.ceil(args.min_sample_ms / 1e3 / max(once, 1e-9))))
      tasks.append((name, mode, fn, number))
  samples = {(name, mode): [] for name, mode, _, _ in tasks}
  for r in range(args.rounds):
    k = r % len(tasks) if tasks else 0
    for name, mode, fn, number in tasks[k:] + tasks[:k]:
      t0 = time.perf_counter()
      for _ in range(number):
        fn()
      samples[(name, mode)].append((time.perf_counter() - t0) / number * 1e3)
  return samples, impls, skipped


def time_sweep(size, n_members, steps, rounds):
  """A sweep of ``n_members`` learning rates trained as one compiled program
  (:func:`jrnn.training.make_sweep_chunk`) against the same members trained one after another by
  the same compiled program for one member (so neither side recompiles): ``steps`` Adam steps
  each on the problem's batch, hand BPTT. Returns ms per call of each and the throughputs.

  Both sides run ``steps`` steps inside one ``lax.scan`` per call, so the headline ratio
  measures the batching, not Python dispatch; the sequential side's time is the sum over
  members. A third line steps each single run from Python, one dispatch a step, as
  ``jrnn-train``'s loop does (``ratio_stepped``).
  """
  problem = bench_impls.make_problem(size)
  params = jax.tree_util.tree_map(jnp.asarray, problem.params)
  batch = jrnn.training.Batch(jnp.asarray(problem.xs), jnp.asarray(problem.targets))
  loss = jrnn.training.sequence_loss("squared_error", reduction="sum")
  opt = jrnn.training.sweep_optimizer("adam")
  lrs = np.geomspace(1e-4, 1e-2, n_members).tolist()
  members = jrnn.training.sweep_grid({"lr": lrs}, base={"clip": 1.0, "weight_decay": 0.0})
  keys = jax.random.split(jax.random.key(0), n_members)

  def make_batch(key, k):  # the same batch every step: the data are not what is timed
    del key, k
    return batch

  def chunk_for(n):
    return jrnn.training.make_sweep_chunk(
      loss, opt, make_batch, steps=steps, has_aux=True, donate=False
    )

  whole, one = chunk_for(n_members), chunk_for(1)
  stepped = jrnn.training.make_sweep_chunk(
    loss, opt, make_batch, steps=1, has_aux=True, donate=False
  )
  state = jrnn.training.init_sweep(members, lambda m: params, opt, keys)
  singles = [
    jrnn.training.init_sweep([m], lambda m: params, opt, keys[i : i + 1])
    for i, m in enumerate(members)
  ]
  ms_sweep = benchlib.median_ms(lambda: whole(state, 0), rounds, warmup=1)
  ms_seq = benchlib.median_ms(lambda: [one(s, 0) for s in singles], rounds, warmup=1)

  def step_by_step():  # one dispatch per step, as jrnn-train's loop drives a single run
    out = []
    for s in singles:
      for k in range(steps):
        s = stepped(s, k)[0]
      out.append(s)
    return out

  ms_stepped = benchlib.median_ms(step_by_step, rounds, warmup=1)
  total = n_members * steps
  return {
    "size": list(size),
    "members": n_members,
    "steps": steps,
    "ms_sweep": ms_sweep,
    "ms_sequential": ms_seq,
    "ms_sequential_stepped": ms_stepped,
    "steps_per_s_sweep": total / ms_sweep * 1e3,
    "steps_per_s_sequential": total / ms_seq * 1e3,
    "ratio": ms_seq / ms_sweep,
    "ratio_stepped": ms_stepped / ms_sweep,
  }


def format_sweep(row):
  b, t, i, h, o = row["size"]
  n, k = row["members"], row["steps"]
  total = n * k
  return "\n".join(
    [
      f"== sweep   B={b} T={t} I={i} H={h} O={o}   {n} members x {k} Adam steps (learning rates)",
      f"{'impl':<32}{'ms/call':>10}{'steps/s, summed':>17}",
      f"{'jrnn sweep (one program)':<32}{row['ms_sweep']:>10.1f}{row['steps_per_s_sweep']:>17.1f}",
      f"{f'{n} sequential runs (same steps)':<32}{row['ms_sequential']:>10.1f}"
      f"{row['steps_per_s_sequential']:>17.1f}",
      f"{f'{n} sequential, a dispatch a step':<32}{row['ms_sequential_stepped']:>10.1f}"
      f"{total / row['ms_sequential_stepped'] * 1e3:>17.1f}",
      f"sweep / sequential throughput: {row['ratio']:.2f}x (goal >= 6x at the small anchor size); "
      f"against runs stepped from Python: {row['ratio_stepped']:.2f}x",
    ]
  )


def format_table(size, mode, rows, ceiling):
  """One block of the printed table: each implementation, and jrnn's ratios to each peer.

  With several jrnn variants, a last column compares each with the first one (the baseline
  when weighing a lever). ``flax_jrnn`` counts as ours: its ``/flax_linen`` column is the speed-up
  of swapping the layer in a Flax model.
  """
  b, t, i, h, o = size
  flops = flop_count(size, mode)
  peers = [r for r in rows if not _is_ours(r["impl"])]
  variants = [r for r in rows if r["impl"].startswith("jrnn")]
  base = variants[0] if len(variants) > 1 else None
  head = (
    f"{'impl':<18}{'ms':>10}{'GFLOP/s':>10}{'%ceil':>7}{'peak MiB':>10}"
    + "".join(f"{'/' + p['impl']:>16}" for p in peers)
    + ("  /best-peer" if peers else "")
    + (f"{'/' + base['impl']:>18}" if base else "")
  )
  lines = [f"== {mode:<7} B={b} T={t} I={i} H={h} O={o}   {flops / 1e9:.3g} GFLOP per call", head]
  best = min((p["ms"] for p in peers), default=None)
  for r in rows:
    gflops = flops / (r["ms"] / 1e3) / 1e9
    peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.2f}"
    pct = f"{100 * gflops / ceiling:>6.0f}%" if math.isfinite(ceiling) else f"{'-':>7}"
    line = f"{r['impl']:<18}{r['ms']:>10.3f}{gflops:>10.1f}{pct}{peak:>10}"
    if _is_ours(r["impl"]):
      line += "".join(f"{r['ms'] / p['ms']:>16.2f}" for p in peers)
      if best is not None:
        line += f"{r['ms'] / best:>11.2f}"
      if base and r["impl"].startswith("jrnn"):
        line += f"{r['ms'] / base['ms']:>18.2f}"
    lines.append(line)
  return "\n".join(lines)


def flax_swap_table(rows):
  """The Flax model, nn.RNN(SimpleCell) vs the jrnn layer, side by side at every size and mode."""
  by_key = {(tuple(r["size"]), r["mode"], r["impl"]): r["ms"] for r in rows}
  lines = []
  for size, mode in dict.fromkeys((tuple(r["size"]), r["mode"]) for r in rows):
    base, swap = by_key.get((size, mode, FLAX_BASE)), by_key.get((size, mode, FLAX_SWAP))
    if base and swap:
      lines.append(f"| {size} | {mode} | {base:.3f} | {swap:.3f} | {swap / base:.2f} |")
  if not lines:
    return ""
  return "\n".join(
    [
      "| size (B,T,I,H,O) | mode | flax nn.RNN(SimpleCell) ms | flax + jrnn "
      "ElmanRNN ms | jrnn layer / SimpleCell |",
      "|---|---|---|---|---|",
    ]
    + lines
  )


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--sizes",
    type=parse_sizes,
    default=None,
    help='"B,T,I,H,O;B,T,I,H,O" (default: the anchor sizes for the device)',
  )
  parser.add_argument(
    "--quick",
    action="store_true",
    help="tiny size, 2 rounds, small ceiling: a smoke run of a few seconds",
  )
  parser.add_argument(
    "--impls", default="", help="comma-separated name prefixes, e.g. jrnn,flax,torch (default: all)"
  )
  parser.add_argument("--modes", default="train,forward", help="train, forward or both")
  parser.add_argument(
    "--unroll", type=int, default=1, help="the loops' unroll for the default jrnn variants"
  )
  parser.add_argument(
    "--jrnn-variants",
    type=parse_variants,
    default=None,
    help='jrnn paths to time side by side, GRAD[/KERNEL][:K], e.g. '
    '"hand,hand:8,hand/xla,autodiff" (default: hand:UNROLL,autodiff:UNROLL)',
  )
  parser.add_argument(
    "--rounds",
    type=int,
    default=None,
    help="round-robin rounds (default 7 on CPU, 20 on GPU, 2 with --quick)",
  )
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls per impl and mode")
  parser.add_argument(
    "--min-sample-ms",
    type=float,
    default=None,
    help="repeat calls within a sample until it lasts this long (default 20, 1 with --quick)",
  )
  parser.add_argument("--max-number", type=int, default=100, help="cap on calls per sample")
  parser.add_argument(
    "--strict-f32", action="store_true", help="on a GPU, forbid TF32 for jax and torch"
  )
  parser.add_argument("--no-ceiling", action="store_true", help="skip the matmul ceiling")
  parser.add_argument(
    "--sweep-members",
    type=int,
    default=None,
    help="members of the sweep row, at the first size (default 16, 4 with --quick; 0: no row)",
  )
  parser.add_argument(
    "--sweep-steps",
    type=int,
    default=None,
    help="training steps per member in the sweep row (default 20, 2 with --quick)",
  )
  parser.add_argument("--json", default=None, help="write the results to this file")
  args = parser.parse_args(argv)
  if args.jrnn_variants is None:
    args.jrnn_variants = [("hand", "auto", args.unroll), ("autodiff", "auto", args.unroll)]
  modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  if not modes or any(m not in MODES for m in modes):
    parser.error(f"--modes must name some of {MODES}, got {args.modes!r}")
  args.modes = modes
  if args.rounds is not None and args.rounds < 1:
    parser.error("--rounds must be at least 1")
  return args


def main(argv=None):
  args = parse_args(argv)
  on_gpu = jax.default_backend() == "gpu"
  if args.sizes is None:
    args.sizes = benchlib.QUICK_SIZES if args.quick else benchlib.anchor_sizes(on_gpu)
  if args.rounds is None:
    args.rounds = 2 if args.quick else (20 if on_gpu else 7)
  if args.min_sample_ms is None:
    args.min_sample_ms = 1.0 if args.quick else 20.0
  tf32 = on_gpu and not args.strict_f32
  env = benchlib.environment()
  print(benchlib.format_environment(env) + f"\nTF32: {tf32}")
  try:
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
  except ImportError:
    pass

  ceilings = {} if args.no_ceiling else matmul_ceiling(on_gpu, tf32, args.quick)
  ceiling = max(ceilings.values(), default=float("nan"))
  if ceilings:
    print("matmul ceiling (GFLOP/s): " + ", ".join(f"{k} {v:.1f}" for k, v in ceilings.items()))

  builders = make_builders(args, on_gpu)
  rows, skipped = [], {}
  for size in args.sizes:
    samples, impls, skip = time_size(size, builders, args, args.modes)
    for name, why in skip.items():
      if name not in skipped:
        print(f"note: {name} skipped ({why})")
      skipped[name] = why
    for mode in args.modes:
      block = []
      for name, impl in impls.items():
        ms = samples[(name, mode)]
        block.append(
          {
            "impl": name,
            "size": list(size),
            "mode": mode,
            "ms": statistics.median(ms),
            "ms_min": min(ms),
            "samples": len(ms),
            "gflops": flop_count(size, mode) / statistics.median(ms) / 1e6,
            "peak_bytes": impl.peak_bytes[mode],
          }
        )
      rows.extend(block)
      if block:
        print("\n" + format_table(size, mode, block, ceiling), flush=True)
  print(
    "\nratios are jrnn_ms / peer_ms (< 1: jrnn faster). Peak memory: XLA buffer "
    "assignment for jax; torch.cuda.max_memory_allocated on CUDA; n/a for torch on CPU.\n"
    "haiku_vanilla is hk.VanillaRNN, a ReLU RNN (no tanh option); the others use tanh."
  )
  sweep_row = None
  members = args.sweep_members if args.sweep_members is not None else (4 if args.quick else 16)
  if members > 0:
    steps = args.sweep_steps or (2 if args.quick else 20)
    sweep_row = time_sweep(args.sizes[0], members, steps, args.rounds)
    print("\n" + format_sweep(sweep_row), flush=True)
  swap = flax_swap_table(rows)
  if swap:
    print(
      "\nThe Flax model (layer + Dense readout, batch-major): nn.RNN(nn.SimpleCell) vs "
      "jrnn.interop.flax_linen.ElmanRNN, same weights\n" + swap
    )

  if args.json:
    result = {
      "device": env["device"],
      "backend": env["backend"],
      "tf32": tf32,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "environment": env,
      "versions": env["versions"],
      "xla_flags": env["xla_flags"],
      "argv": sys.argv[1:] if argv is None else list(argv),
      "rounds": args.rounds,
      "ceiling_gflops": ceiling if ceilings else None,
      "ceilings": ceilings,
      "skipped": skipped,
      "rows": rows,
      "sweep": sweep_row,
    }
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
