"""Online gradients on a memory task: truncated BPTT at several truncations, UORO, SnAp-1, RTRL.

Two parts, results written to ``--out`` (``docs/online`` for the published run):

1. Learning curves. The copy task (:mod:`jrnn.data.copy_task`: read ``L`` symbols, wait ``D``
   steps, write them back) as an endless stream: episodes follow one another and the state is
   never reset. ``B`` streams per seed, several seeds in one ``jax.vmap``; every method updates
   the parameters every ``k`` steps with Adam (:func:`jrnn.online.make_online_train_step`). The
   curve is the online (prequential) cross-entropy on the answer steps, before each update.
   Three streams per seed: the training stream; a validation stream (``--val-episodes``
   episodes, key ``split(fold_in(key(seed), 1))[1]``), scored after training: the number one
   would choose settings by; and a test stream (``--test-episodes``, key
   ``fold_in(key(seed), 3)``) read once, at the very end, after every method has trained.
2. Cost against ``H``: time per step of one stream (a compiled ``lax.scan`` of the method's
   step, the fastest of repeats) and the bytes of the state each method carries, beside full
   BPTT.

Writes to ``--out``: ``results.json`` (the command, commit, versions, SHA-256 of the train,
validation and test streams, seeds, machine, every curve and score and the state sizes: the
same bytes when the same command runs again on the same machine), ``timing.json`` (every time:
wall and CPU seconds, load, each method's training seconds and the µs-per-step table),
``results.md`` (tables from both), ``learning.png`` and ``cost.png``. An existing
``results.json`` in ``--out`` is refused unless ``--overwrite``.

  nice -n 5 python scripts/experiments/online_experiment.py --out docs/online
  python scripts/experiments/online_experiment.py --out /tmp/online --quick   # what the test runs
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
import jrnn.online as online
from jrnn.data import copy_task
from jrnn.training.optimizers import make_optimizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
from common import record  # noqa: E402  pylint: disable=wrong-import-position

QUICK = dict(
  hidden=8, seeds=2, streams=2, windows=4, truncations=[2], cost_hidden=[4], rtrl_max_hidden=4
)
DEFAULTS = dict(
  hidden=16,
  seeds=5,
  streams=8,
  windows=250,
  truncations=[2, 4, 8],
  cost_hidden=[8, 16, 32, 64, 128],
  rtrl_max_hidden=128,
)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "--out",
    type=pathlib.Path,
    required=True,
    help="directory for results.json, timing.json, results.md, PNGs",
  )
  p.add_argument(
    "--quick",
    action="store_true",
    help=f"a short run for tests: {QUICK} (explicit flags still win)",
  )
  p.add_argument(
    "--hidden",
    type=int,
    default=None,
    help=f"H of the learning runs (default {DEFAULTS['hidden']})",
  )
  record.add_kernel_flag(p, jrnn.KERNELS, " for the evaluation and the BPTT cost row")
  p.add_argument(
    "--seeds", type=int, default=None, help=f"seeds 0..S-1 (default S={DEFAULTS['seeds']})"
  )
  p.add_argument(
    "--streams", type=int, default=None, help=f"B streams per seed (default {DEFAULTS['streams']})"
  )
  p.add_argument(
    "--windows",
    type=int,
    default=None,
    help=f"windows of --episodes episodes (default {DEFAULTS['windows']})",
  )
  p.add_argument("--episodes", type=int, default=4, help="episodes per window")
  p.add_argument("--every", type=int, default=1, help="k: steps between parameter updates")
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--symbols", type=int, default=4, help="K data symbols")
  p.add_argument("--length", type=int, default=2, help="L symbols to copy")
  p.add_argument("--delay", type=int, default=3, help="D blank steps before 'go'")
  p.add_argument("--val-episodes", type=int, default=32, help="episodes in the validation stream")
  p.add_argument("--test-episodes", type=int, default=32, help="episodes in the test stream")
  p.add_argument(
    "--truncations",
    type=int,
    nargs="+",
    default=None,
    help=f"TBPTT truncations τ (default {DEFAULTS['truncations']})",
  )
  p.add_argument(
    "--methods",
    nargs="+",
    default=None,
    help="only these curves (labels as in the table, e.g. RTRL 'TBPTT τ=8')",
  )
  p.add_argument("--skip-cost", action="store_true", help="learning curves only")
  p.add_argument(
    "--cost-hidden",
    type=int,
    nargs="+",
    default=None,
    help=f"H values of the cost table (default {DEFAULTS['cost_hidden']})",
  )
  p.add_argument(
    "--rtrl-max-hidden",
    type=int,
    default=None,
    help=f"largest H at which exact RTRL is timed (default {DEFAULTS['rtrl_max_hidden']})",
  )
  p.add_argument("--no-plot", action="store_true", help="skip the PNGs")
  p.add_argument(
    "--overwrite", action="store_true", help="replace results already in --out (otherwise refused)"
  )
  args = p.parse_args(argv)
  for name, value in (QUICK if args.quick else DEFAULTS).items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  for name in (
    "hidden",
    "seeds",
    "streams",
    "windows",
    "episodes",
    "every",
    "val_episodes",
    "test_episodes",
  ):
    if getattr(args, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
  refusal = record.refuse_existing(args.out, args.overwrite)
  if refusal:
    p.error(refusal)
  return args


def stream_window(key, args):
  """``--episodes`` copy-task episodes back to back: ``xs (T, B, K+2)``, labels, answer mask."""
  keys = jax.random.split(key, args.episodes)
  eps = jax.vmap(
    lambda k: copy_task.batch(
      k, args.streams, n_symbols=args.symbols, length=args.length, delay=args.delay
    )
  )(keys)
  return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), eps)


def method_configs(args):
  """``(label, online_method)`` for every curve."""
  cfg = dict(loss="cross_entropy", activation="tanh")
  out = [
    (f"TBPTT τ={t}", online.online_method("tbptt", truncation=t, **cfg)) for t in args.truncations
  ]
  out += [
    ("UORO", online.online_method("uoro", **cfg)),
    ("SnAp-1", online.online_method("snap1", **cfg)),
    ("RTRL", online.online_method("rtrl", **cfg)),
  ]
  return out


def make_data(args):
  """Every seed's training stream ``(S, W, T_w, B, …)``, validation stream ``(S, T_v, B, …)``
  and test stream ``(S, T_t, B, …)``.

  Drawn once, outside the compiled training runs, and shared by every method: all methods see
  the same streams. The three keys of a seed are distinct, so the streams are independent draws.
  """

  def one(seed):
    key = jax.random.key(seed)
    k_data, k_val = jax.random.split(jax.random.fold_in(key, 1))
    k_test = jax.random.fold_in(key, 3)  # 0: init, 1: train/validation, 2: the steps' keys
    train = jax.vmap(lambda w: stream_window(jax.random.fold_in(k_data, w), args))(
      jnp.arange(args.windows)
    )
    return (
      train,
      stream_window(k_val, _with(args, episodes=args.val_episodes)),
      stream_window(k_test, _with(args, episodes=args.test_episodes)),
    )

  return jax.jit(jax.vmap(one))(jnp.arange(args.seeds))


@functools.partial(jax.jit, static_argnames="kernel")
def accuracy(params, stream, kernel="xla"):
  """Answer accuracy per seed on a held-out stream of episodes, the state carried as in
  training (from ``h0`` at the stream's start)."""
  ys = jax.vmap(lambda p, xs: jrnn.forward(p, xs, kernel=kernel).ys)(params, stream.xs)
  hit = (jnp.argmax(ys, -1) == stream.targets) & stream.mask
  return jnp.sum(hit, axis=(1, 2)) / jnp.sum(stream.mask, axis=(1, 2))


def _with(args, **kw):
  new = argparse.Namespace(**vars(args))
  for k, v in kw.items():
    setattr(new, k, v)
  return new


def init_seeds(args, n_in, n_out):
  """Every seed's initial parameters (orthogonal ``W_hh``), shared by every method."""
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0))(jnp.arange(args.seeds))
  return jax.jit(
    jax.vmap(lambda k: jrnn.init_params(k, n_in, args.hidden, n_out, scheme="orthogonal"))
  )(keys)


def learn(args, label, method, params, train, val):
  """Trains ``--seeds`` seeds at once; returns per-window losses ``(S, W)``, the validation
  accuracies ``(S,)``, the final parameters and the seconds taken."""
  n_updates = (
    args.windows * args.episodes * copy_task.num_steps(args.length, args.delay) // (args.every)
  )
  # Cosine decay to 0.1·lr: with a constant rate, Adam's tiny second moments after a long run
  # of near-zero losses let one surprising step throw a solved network off (seen with RTRL).
  opt = make_optimizer("adam", args.lr, clip_norm=1.0, schedule="cosine", total_steps=n_updates)
  step = online.make_online_train_step(method, opt, every=args.every, jit=False)

  def run(seed, params, stream):
    k_step = jax.random.fold_in(jax.random.key(seed), 2)
    state = online.init_streams(method, params, args.streams)

    def window(carry, inp):
      p, o, s = carry
      w, batch = inp
      p, o, s, metrics = step(
        p,
        o,
        s,
        online.OnlineBatch(batch.xs, batch.targets, batch.mask),
        jax.random.fold_in(k_step, w),
      )
      return (p, o, s), metrics["loss"]

    (params, _, _), losses = jax.lax.scan(
      window, (params, opt.init(params), state), (jnp.arange(args.windows), stream)
    )
    return losses, params

  t0 = time.perf_counter()
  losses, params = jax.jit(jax.vmap(run))(jnp.arange(args.seeds), params, train)
  acc = jax.block_until_ready(accuracy(params, val, kernel=args.kernel))
  seconds = time.perf_counter() - t0
  print(
    f"  {label:12s} final loss {np.median(np.asarray(losses)[:, -10:].mean(1)):.3f} nats, "
    f"validation accuracy {np.median(np.asarray(acc)):.3f} (medians over seeds; "
    f"{seconds:.1f} s)",
    flush=True,
  )
  return np.asarray(losses), np.asarray(acc), params, seconds


def _best_time(fn, *a, repeats=7, budget_s=3.0):
  """The fastest of up to ``repeats`` calls (fewer once ``budget_s`` is spent): the machine
  is shared, and other work only ever slows a call down."""
  jax.block_until_ready(fn(*a))
  times, spent = [], 0.0
  while len(times) < repeats and (spent < budget_s or len(times) < 2):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*a))
    times.append(time.perf_counter() - t0)
    spent += times[-1]
  return float(np.min(times))


def cost(args, n_in, n_out, n_steps=128):
  """Seconds per step and bytes of state per stream for each method and ``H``: rows of
  ``method, hidden, params, us_per_step, state_bytes`` (only ``us_per_step`` is a timing)."""
  rows = []
  cfg = dict(loss="cross_entropy", activation="tanh")
  labels = jax.random.randint(jax.random.key(2), (n_steps,), 0, n_out)
  xs = jax.nn.one_hot(
    jax.random.randint(jax.random.key(1), (n_steps,), 0, n_in), n_in, dtype=jnp.float32
  )  # the parameters are float32, also under jax_enable_x64
  for n_hidden in args.cost_hidden:
    params = jrnn.init_params(jax.random.key(0), n_in, n_hidden, n_out, scheme="orthogonal")
    methods = [
      (f"TBPTT τ={t}", online.online_method("tbptt", truncation=t, **cfg))
      for t in sorted({min(args.truncations), max(args.truncations)})
    ]
    methods += [
      ("UORO", online.online_method("uoro", **cfg)),
      ("SnAp-1", online.online_method("snap1", **cfg)),
    ]
    if n_hidden <= args.rtrl_max_hidden:
      methods.append(("RTRL", online.online_method("rtrl", **cfg)))
    for label, method in methods:

      def run(p, key, method=method):
        # Everything the step computes is returned (the state, the summed gradient), so XLA
        # cannot drop any of it as dead code.
        def body(carry, inp):
          s, total = carry
          x, y, t = inp
          s, g, value = method.step(p, s, x, y, key=jax.random.fold_in(key, t))
          return (s, jax.tree_util.tree_map(jnp.add, total, g)), value

        zero = jax.tree_util.tree_map(jnp.zeros_like, p)
        return jax.lax.scan(body, (method.init(p), zero), (xs, labels, jnp.arange(n_steps)))

      fn = jax.jit(run)
      seconds = _best_time(fn, params, jax.random.key(3)) / n_steps
      rows.append(
        dict(
          method=label,
          hidden=n_hidden,
          params=online.num_recurrent_params(params),
          us_per_step=seconds * 1e6,
          state_bytes=method.state_bytes(params),
        )
      )

    def bptt_loss(p):  # full BPTT over the same sequence, for scale
      ys = jrnn.forward(p, xs, kernel=args.kernel).ys
      return jrnn.softmax_cross_entropy(ys, labels, reduction="sum")

    fn = jax.jit(jax.grad(bptt_loss))
    seconds = _best_time(fn, params) / n_steps
    stored = n_steps * n_hidden * jnp.dtype(params.w_hh.dtype).itemsize  # the states h_1..h_T
    rows.append(
      dict(
        method=f"BPTT (T={n_steps})",
        hidden=n_hidden,
        params=online.num_recurrent_params(params),
        us_per_step=seconds * 1e6,
        state_bytes=stored,
      )
    )
    print(
      f"  H={n_hidden}: "
      + ", ".join(
        f"{r['method']} {r['us_per_step']:.0f} µs" for r in rows if r["hidden"] == n_hidden
      ),
      flush=True,
    )
  return rows


def refusal_message(n_in, n_out):
  params = jrnn.init_params(jax.random.key(0), n_in, 256, n_out)
  try:
    online.rtrl_init(params)
  except ValueError as e:
    return str(e)
  return None


def plot(out, args, curves, cost_rows):
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(7, 4.2))
  steps_per_window = args.episodes * copy_task.num_steps(args.length, args.delay)
  for label, c in curves.items():
    losses = c["losses"]  # (S, W)
    x = (np.arange(losses.shape[1]) + 1) * steps_per_window
    (line,) = ax.plot(x, np.median(losses, 0), label=label, lw=1.5)
    ax.fill_between(x, losses.min(0), losses.max(0), color=line.get_color(), alpha=0.15, lw=0)
  ax.axhline(np.log(args.symbols), color="gray", ls=":", lw=1, label="chance (ln K)")
  ax.set_yscale("log")
  ax.set_xlabel("stream steps (each of B streams)")
  ax.set_ylabel("online cross-entropy on answer steps (nats)")
  ax.set_title(
    f"copy task online: K={args.symbols}, L={args.length}, D={args.delay}, "
    f"H={args.hidden}; median and range of {args.seeds} seeds",
    fontsize=10,
  )
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "learning.png"), dpi=120)
  plt.close(fig)

  if not cost_rows:
    return
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for label in dict.fromkeys(r["method"] for r in cost_rows):
    rows = [r for r in cost_rows if r["method"] == label]
    hs = [r["hidden"] for r in rows]
    axes[0].loglog(hs, [r["us_per_step"] for r in rows], "o-", label=label)
    axes[1].loglog(hs, [r["state_bytes"] for r in rows], "o-", label=label)
  axes[0].set_ylabel("µs per step (one stream)")
  axes[1].set_ylabel("bytes of state per stream")
  for a in axes:
    a.set_xlabel("H")
    a.grid(True, which="both", alpha=0.3)
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "cost.png"), dpi=120)
  plt.close(fig)


def _spread(values, digits=3) -> str:
  """``median [min–max]`` of per-seed values."""
  v = [float(x) for x in values]
  return f"{statistics.median(v):.{digits}f} [{min(v):.{digits}f}–{max(v):.{digits}f}]"


def write_markdown(out, args, results, timing):
  """``results.md``: the learning table (from results.json) and the cost tables (µs per step from
  timing.json, bytes of state from results.json)."""
  m, steps = results["machine"], copy_task.num_steps(args.length, args.delay)
  lines = [
    "# Online gradients on the copy task: results",
    "",
    f"Command: `{results['command']}` (commit {results['git']['commit']}"
    f"{', with local changes' if results['git']['dirty'] else ''})  ",
    f"Machine: `{m['model_name']}` ({m['cpus']} CPUs), jax {results['versions']['jax']}, "
    f"{results['backend']}; {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s CPU, "
    f"finished {timing['finished_utc']}. Shared machine: load average "
    f"{timing['loadavg_start']} at the start, {timing['loadavg_end']} at the end; every time "
    "below is indicative only.",
    "",
    f"Copy task K={args.symbols}, L={args.length}, D={args.delay} "
    f"(episode {steps} steps, lag {args.length + args.delay + 1} from a symbol to its answer), "
    f"as one endless stream; H={args.hidden}, tanh, B={args.streams} streams × {args.seeds} "
    f"seeds, Adam lr {args.lr} (cosine decay to 0.1·lr, clip 1), update every {args.every} "
    f"step(s), {args.windows * args.episodes * steps} steps. Validation stream "
    f"{args.val_episodes} episodes, test stream {args.test_episodes} episodes per seed (read "
    "once, after every method has trained).",
    "",
    "Online loss: per seed, the mean over the last 10% of windows of the online cross-entropy "
    "on answer steps. Every cell: median [min–max] over the seeds; per-seed values in "
    "results.json.",
    "",
    "| method | online loss, last 10% (nats) | validation accuracy | test accuracy | "
    "training s (all seeds) |",
    "|---|---|---|---|---|",
  ]
  for label, c in results["curves"].items():
    lines.append(
      f"| {label} | {_spread(c['loss_last_10pct'])} | "
      f"{_spread(c['val_accuracy'])} | {_spread(c['test_accuracy'])} | "
      f"{timing['learn_s'][label]:.1f} |"
    )
  lines += [
    "",
    f"Chance: ln K = {np.log(args.symbols):.3f} nats, accuracy 1/K = {1 / args.symbols:.3f}.",
    "",
  ]
  tables = (
    (
      "µs per step (timing.json; the fastest of several repeats)",
      timing["cost"],
      "us_per_step",
      "{:,.1f}",
    ),
    ("bytes of state per stream (results.json)", results["state_bytes"], "state_bytes", "{:,}"),
  )
  for title, rows, field, fmt in tables:
    if not rows:
      break
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["hidden"]): r for r in rows}
    lines += [
      f"## Cost against H: {title}",
      "",
      f"I = {args.symbols + 2} inputs, O = {args.symbols} outputs; P = H² + H·I + H.",
      "",
      "| H | P | " + " | ".join(methods) + " |",
      "|---" * (len(methods) + 2) + "|",
    ]
    for h in sorted({r["hidden"] for r in rows}):
      cells = [fmt.format(by[(m, h)][field]) if (m, h) in by else "—" for m in methods]
      lines.append(f"| {h} | {by[(methods[0], h)]['params']:,} | " + " | ".join(cells) + " |")
    lines.append("")
  if results.get("rtrl_refusal"):
    lines += [
      "Exact RTRL at H=256 (float32) is refused by default:",
      "",
      f"> {results['rtrl_refusal']}",
    ]
  (pathlib.Path(out) / "results.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  args.out.mkdir(parents=True, exist_ok=True)
  clock = record.start_clock(announce=False)
  n_in, n_out = args.symbols + 2, args.symbols
  print(f"learning curves (H={args.hidden}, {args.seeds} seeds × {args.streams} streams)")
  train, val, test = make_data(args)
  digests = {
    name: record.digest(*(np.asarray(a) for a in jax.tree_util.tree_leaves(stream)))
    for name, stream in (("train", train), ("val", val), ("test", test))
  }
  # Taken before the long computation: the commit (and dirty flag) of the code that runs.
  prov = record.provenance(
    "experiments/online_experiment.py", argv, seeds=range(args.seeds), data=digests
  )
  params = init_seeds(args, n_in, n_out)
  curves, learn_s, final = {}, {}, {}
  for label, method in method_configs(args):
    if args.methods and label not in args.methods:
      continue
    losses, acc, final[label], learn_s[label] = learn(args, label, method, params, train, val)
    tail = losses[:, -max(1, losses.shape[1] // 10) :].mean(1)
    curves[label] = dict(
      losses=losses.tolist(), loss_last_10pct=tail.tolist(), val_accuracy=acc.tolist()
    )
  for label, p in final.items():  # the test stream, read once: each method's final parameters
    curves[label]["test_accuracy"] = np.asarray(accuracy(p, test, kernel=args.kernel)).tolist()
  print("cost against H")
  cost_rows = [] if args.skip_cost else cost(args, n_in, n_out)
  results = {
    **prov,
    "backend": jax.default_backend(),
    "config": record.settings(args),
    "rtrl_refusal": refusal_message(n_in, n_out),
    "state_bytes": [
      {k: r[k] for k in ("method", "hidden", "params", "state_bytes")} for r in cost_rows
    ],
    "curves": curves,
  }
  timing = record.timing(
    "experiments/online_experiment.py",
    argv,
    clock,
    learn_s={k: round(v, 2) for k, v in learn_s.items()},
    cost=[{k: r[k] for k in ("method", "hidden", "params", "us_per_step")} for r in cost_rows],
  )
  record.write(args.out, results, timing)
  write_markdown(args.out, args, results, timing)
  if not args.no_plot:
    plot(
      args.out, args, {k: {"losses": np.asarray(c["losses"])} for k, c in curves.items()}, cost_rows
    )
  print(
    f"wrote {args.out}/results.json, timing.json, results.md"
    f"{'' if args.no_plot else ', learning.png, cost.png'} ({timing['wall_s']:.0f} s)"
  )
  return results


if __name__ == "__main__":
  main()
