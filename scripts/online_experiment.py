"""Online gradients on a memory task: truncated BPTT at several truncations, UORO, SnAp-1, RTRL.

Two parts, results written to ``--out`` (``docs/online`` for the published run):

1. Learning curves. The copy task (:mod:`jrnn.data.copy_task`: read ``L`` symbols, wait ``D``
   steps, write them back) as an endless stream: episodes follow one another and the state is
   never reset. ``B`` streams per seed, several seeds in one ``jax.vmap``; every method updates
   the parameters every ``k`` steps with Adam (:func:`jrnn.online.make_online_train_step`). The
   curve is the online (prequential) cross-entropy on the answer steps, before each update;
   afterwards, accuracy on a held-out stream.
2. Cost against ``H``: time per step of one stream (a compiled ``lax.scan`` of the method's
   step, median of repeats) and the bytes of the state each method carries, beside full BPTT.

Run ``python scripts/online_experiment.py --out docs/online`` (``--quick`` for a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
import jrnn.online as online
from jrnn.data import copy_task
from jrnn.training.optimizers import make_optimizer


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True, help="directory for results.json, results.md, PNGs")
  p.add_argument("--quick", action="store_true", help="a few seconds: tiny sizes, few steps")
  p.add_argument("--hidden", type=int, default=16, help="H of the learning runs")
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--streams", type=int, default=8, help="B streams per seed")
  p.add_argument("--windows", type=int, default=250, help="windows of --episodes episodes")
  p.add_argument("--episodes", type=int, default=4, help="episodes per window")
  p.add_argument("--every", type=int, default=1, help="k: steps between parameter updates")
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--symbols", type=int, default=4, help="K data symbols")
  p.add_argument("--length", type=int, default=2, help="L symbols to copy")
  p.add_argument("--delay", type=int, default=3, help="D blank steps before 'go'")
  p.add_argument("--truncations", type=int, nargs="+", default=[2, 4, 8])
  p.add_argument("--methods", nargs="+", default=None,
                 help="only these curves (labels as in the table, e.g. RTRL 'TBPTT τ=8')")
  p.add_argument("--skip-cost", action="store_true", help="learning curves only")
  p.add_argument("--cost-hidden", type=int, nargs="+", default=[8, 16, 32, 64, 128])
  p.add_argument("--rtrl-max-hidden", type=int, default=128,
                 help="largest H at which exact RTRL is timed")
  args = p.parse_args(argv)
  if args.quick:
    args.hidden, args.seeds, args.streams, args.windows = 8, 2, 2, 6
    args.cost_hidden, args.rtrl_max_hidden = [4, 8], 8
  return args


def stream_window(key, args):
  """``--episodes`` copy-task episodes back to back: ``xs (T, B, K+2)``, labels, answer mask."""
  keys = jax.random.split(key, args.episodes)
  eps = jax.vmap(lambda k: copy_task.batch(k, args.streams, n_symbols=args.symbols,
                                           length=args.length, delay=args.delay))(keys)
  return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), eps)


def method_configs(args):
  """``(label, online_method)`` for every curve."""
  cfg = dict(loss="cross_entropy", activation="tanh")
  out = [(f"TBPTT τ={t}", online.online_method("tbptt", truncation=t, **cfg))
         for t in args.truncations]
  out += [("UORO", online.online_method("uoro", **cfg)),
          ("SnAp-1", online.online_method("snap1", **cfg)),
          ("RTRL", online.online_method("rtrl", **cfg))]
  return out


def make_data(args, n_val_episodes=32):
  """Every seed's training stream ``(S, W, T_w, B, …)`` and held-out stream ``(S, T_v, B, …)``.

  Drawn once, outside the compiled training runs, and shared by every method: all methods see
  the same streams.
  """
  def one(seed):
    k_data, k_val = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1))
    train = jax.vmap(lambda w: stream_window(jax.random.fold_in(k_data, w), args))(
        jnp.arange(args.windows))
    return train, stream_window(k_val, _with(args, episodes=n_val_episodes))

  return jax.jit(jax.vmap(one))(jnp.arange(args.seeds))


@jax.jit
def accuracy(params, val):
  """Answer accuracy on a held-out stream of episodes, the state carried as in training."""
  ys = jax.vmap(lambda p, xs: jrnn.forward(p, xs).ys)(params, val.xs)
  hit = (jnp.argmax(ys, -1) == val.targets) & val.mask
  return jnp.sum(hit, axis=(1, 2)) / jnp.sum(val.mask, axis=(1, 2))


def _with(args, **kw):
  new = argparse.Namespace(**vars(args))
  for k, v in kw.items():
    setattr(new, k, v)
  return new


def init_seeds(args, n_in, n_out):
  """Every seed's initial parameters (orthogonal ``W_hh``), shared by every method."""
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0))(jnp.arange(args.seeds))
  return jax.jit(jax.vmap(lambda k: jrnn.init_params(k, n_in, args.hidden, n_out,
                                                     scheme="orthogonal")))(keys)


def learn(args, label, method, params, data):
  """Trains ``--seeds`` seeds at once; returns per-window losses ``(S, W)`` and accuracies."""
  n_updates = args.windows * args.episodes * copy_task.num_steps(args.length, args.delay) // (
      args.every)
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
      p, o, s, metrics = step(p, o, s, online.OnlineBatch(batch.xs, batch.targets, batch.mask),
                              jax.random.fold_in(k_step, w))
      return (p, o, s), metrics["loss"]

    (params, _, _), losses = jax.lax.scan(window, (params, opt.init(params), state),
                                          (jnp.arange(args.windows), stream))
    return losses, params

  t0 = time.perf_counter()
  train, val = data
  losses, params = jax.jit(jax.vmap(run))(jnp.arange(args.seeds), params, train)
  acc = jax.block_until_ready(accuracy(params, val))
  seconds = time.perf_counter() - t0
  print(f"  {label:12s} final loss {np.mean(np.asarray(losses)[:, -10:]):.3f} nats, "
        f"accuracy {np.mean(np.asarray(acc)):.3f} ({seconds:.1f} s)", flush=True)
  return np.asarray(losses), np.asarray(acc), seconds


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
  """Seconds per step and bytes of state per stream for each method and ``H``."""
  rows = []
  cfg = dict(loss="cross_entropy", activation="tanh")
  labels = jax.random.randint(jax.random.key(2), (n_steps,), 0, n_out)
  xs = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (n_steps,), 0, n_in), n_in)
  for n_hidden in args.cost_hidden:
    params = jrnn.init_params(jax.random.key(0), n_in, n_hidden, n_out, scheme="orthogonal")
    methods = [(f"TBPTT τ={t}", online.online_method("tbptt", truncation=t, **cfg))
               for t in (min(args.truncations), max(args.truncations))]
    methods += [("UORO", online.online_method("uoro", **cfg)),
                ("SnAp-1", online.online_method("snap1", **cfg))]
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
      rows.append(dict(method=label, hidden=n_hidden, params=online.num_recurrent_params(params),
                       us_per_step=seconds * 1e6, state_bytes=method.state_bytes(params)))

    def bptt_loss(p):  # full BPTT over the same sequence, for scale
      ys = jrnn.forward(p, xs).ys
      return jrnn.softmax_cross_entropy(ys, labels, reduction="sum")

    fn = jax.jit(jax.grad(bptt_loss))
    seconds = _best_time(fn, params) / n_steps
    stored = n_steps * n_hidden * jnp.dtype(params.w_hh.dtype).itemsize  # the states h_1..h_T
    rows.append(dict(method=f"BPTT (T={n_steps})", hidden=n_hidden,
                     params=online.num_recurrent_params(params), us_per_step=seconds * 1e6,
                     state_bytes=stored))
    print(f"  H={n_hidden}: " + ", ".join(f"{r['method']} {r['us_per_step']:.0f} µs"
                                         for r in rows if r["hidden"] == n_hidden), flush=True)
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
    mean = losses.mean(0)
    line, = ax.plot(x, mean, label=label, lw=1.5)
    ax.fill_between(x, losses.min(0), losses.max(0), color=line.get_color(), alpha=0.15, lw=0)
  ax.axhline(np.log(args.symbols), color="gray", ls=":", lw=1, label="chance (ln K)")
  ax.set_yscale("log")
  ax.set_xlabel("stream steps (each of B streams)")
  ax.set_ylabel("online cross-entropy on answer steps (nats)")
  ax.set_title(f"copy task online: K={args.symbols}, L={args.length}, D={args.delay}, "
               f"H={args.hidden}; mean and range of {args.seeds} seeds")
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


def _cpu_name():
  try:
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
      if line.startswith("Model name"):
        return line.split(":", 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  return platform.processor() or "unknown"


def write_markdown(out, args, curves, cost_rows, meta):
  lines = [
      "# Online gradients on the copy task: results",
      "",
      f"Command: `{meta['command']}`  ",
      f"Machine: {meta['cpu']} ({meta['cores']} cores), jax {meta['jax']}, "
      f"{meta['backend']}; total time {meta['seconds']:.0f} s (run under `nice` on a shared "
      f"machine: load average {meta['load'][0]:.1f} at the start, {meta['load'][1]:.1f} at the "
      f"end; times per step are the fastest of several repeats).",
      "",
      f"Copy task K={args.symbols}, L={args.length}, D={args.delay} "
      f"(episode {copy_task.num_steps(args.length, args.delay)} steps, lag "
      f"{args.length + args.delay + 1} from a symbol to its answer), as one endless stream; "
      f"H={args.hidden}, tanh, B={args.streams} streams × {args.seeds} seeds, Adam lr "
      f"{args.lr} (cosine decay to 0.1·lr, clip 1), update every {args.every} step(s), "
      f"{args.windows * args.episodes * copy_task.num_steps(args.length, args.delay)} steps.",
      "",
      "| method | online loss, last 10% (nats) | held-out accuracy | seconds (all seeds) |",
      "|---|---|---|---|",
  ]
  for label, c in curves.items():
    losses, acc = c["losses"], c["accuracy"]
    tail = losses[:, -max(1, losses.shape[1] // 10):].mean(1)
    lines.append(f"| {label} | {tail.mean():.3f} (seeds {', '.join(f'{v:.2f}' for v in tail)}) "
                 f"| {acc.mean():.3f} (seeds {', '.join(f'{v:.2f}' for v in acc)}) "
                 f"| {c['seconds']:.1f} |")
  lines += ["", f"Chance: ln K = {np.log(args.symbols):.3f} nats, accuracy 1/K = "
            f"{1 / args.symbols:.3f}.", ""]
  methods = list(dict.fromkeys(r["method"] for r in cost_rows))
  hiddens = sorted({r["hidden"] for r in cost_rows})
  by = {(r["method"], r["hidden"]): r for r in cost_rows}
  for title, field, fmt in (("µs per step", "us_per_step", "{:,.1f}"),
                            ("bytes of state per stream", "state_bytes", "{:,}")):
    if not cost_rows:
      break
    lines += [f"## Cost against H: {title}", "",
              f"I = {args.symbols + 2} inputs, O = {args.symbols} outputs; P = H² + H·I + H.", "",
              "| H | P | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for h in hiddens:
      cells = [fmt.format(by[(m, h)][field]) if (m, h) in by else "—" for m in methods]
      lines.append(f"| {h} | {by[(methods[0], h)]['params']:,} | " + " | ".join(cells) + " |")
    lines.append("")
  if meta.get("refusal"):
    lines += ["Exact RTRL at H=256 (float32) is refused by default:", "",
              f"> {meta['refusal']}"]
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv=None):
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  t0, load0 = time.perf_counter(), os.getloadavg()[0]
  n_in, n_out = args.symbols + 2, args.symbols
  print(f"learning curves (H={args.hidden}, {args.seeds} seeds × {args.streams} streams)")
  curves = {}
  data, params = make_data(args), init_seeds(args, n_in, n_out)
  for label, method in method_configs(args):
    if args.methods and label not in args.methods:
      continue
    losses, acc, seconds = learn(args, label, method, params, data)
    curves[label] = dict(losses=losses, accuracy=acc, seconds=seconds)
  print("cost against H")
  cost_rows = [] if args.skip_cost else cost(args, n_in, n_out)
  meta = dict(command="python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
              cpu=_cpu_name(), cores=os.cpu_count(), jax=jax.__version__,
              backend=jax.default_backend(), seconds=time.perf_counter() - t0,
              refusal=refusal_message(n_in, n_out), load=(load0, os.getloadavg()[0]))
  plot(args.out, args, curves, cost_rows)
  write_markdown(args.out, args, curves, cost_rows, meta)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(dict(config=vars(args), meta=meta, cost=cost_rows,
                   curves={k: dict(losses=v["losses"].tolist(), accuracy=v["accuracy"].tolist(),
                                   seconds=v["seconds"]) for k, v in curves.items()}), f)
  print(f"wrote {args.out}/results.md, results.json, learning.png, cost.png "
        f"({meta['seconds']:.0f} s)")


if __name__ == "__main__":
  main()
