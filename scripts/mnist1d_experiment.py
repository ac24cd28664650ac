"""MNIST-1D (Greydanus 2020) with an Elman RNN, several seeds as one vmapped program.

Each example is a 40-step sequence of scalars; the RNN reads it step by step and the digit is
read from the state after the last step (:func:`jrnn.training.classification.classification_loss`).
The data are the ``mnist1d`` package's defaults (4,000 train / 1,000 test, generated offline from
its seed 42; :mod:`jrnn.data.mnist1d`). Published test accuracy on this split: logistic
regression 32%, MLP 68%, CNN 94%, GRU 91%, human 96%.

Every seed trains on its own epoch order (a fresh permutation per epoch from its data key) from
its own initialisation; all seeds run as one program ``vmap``-ed over parameters, optimiser
state and data keys (:func:`jrnn.training.seeds.make_multi_seed_train_chunk`). Test accuracy is
measured every ``--eval-every`` steps; the table reports the final one (no early stopping, no
model selection on the test set); ``--workers`` variants train at once on threads. The
``shuffled`` variant applies one fixed permutation to the 40 steps of every sequence (train and
test alike): the same information without its order.

  python scripts/mnist1d_experiment.py --out docs/mnist1d
  python scripts/mnist1d_experiment.py --out /tmp/m1d --quick   # seconds: what CI runs

Writes ``results.json`` (config, machine, times, every seed's curves), ``results.md`` and
``curves.png`` (every seed's test accuracy against the published baselines).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn.data import mnist1d
from jrnn.training import classification
from jrnn.training import seeds as multi

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  pylint: disable=wrong-import-position

VARIANTS = ("plain", "shuffled")
QUICK = dict(steps=20, seeds=[0, 1], hidden=8, batch=20, eval_every=10, variants=["plain"],
             warmup=0)


def parse(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", type=pathlib.Path, required=True, help="output directory")
  p.add_argument("--quick", action="store_true",
                 help=f"a seconds-long smoke run for CI: {QUICK} (explicit flags still win)")
  p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                 help="default: plain shuffled")
  p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 3 4")
  p.add_argument("--steps", type=int, default=None, help="training steps (default 4000)")
  p.add_argument("--hidden", type=int, default=None, help="H (default 128)")
  p.add_argument("--batch", type=int, default=None, help="sequences per step (default 100)")
  p.add_argument("--init", choices=jrnn.SCHEMES, default="orthogonal")
  p.add_argument("--activation", default="tanh", choices=sorted(jrnn.ACTIVATIONS))
  p.add_argument("--optimizer", choices=jrnn.training.OPTIMIZERS, default="adam")
  p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
  p.add_argument("--schedule", choices=jrnn.training.SCHEDULES, default="cosine")
  p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default 0)")
  p.add_argument("--clip", type=float, default=1.0, help="global-norm clipping (0: none)")
  p.add_argument("--weight-decay", type=float, default=0.05,
                 help="decoupled weight decay λ (AdamW with adam; default 0.05)")
  p.add_argument("--grad", choices=jrnn.GRADS, default="hand",
                 help="jrnn.forward's grad= (default hand, the library default)")
  p.add_argument("--eval-every", type=int, default=None, help="default 250")
  p.add_argument("--cache-dir", type=pathlib.Path, default=None,
                 help="keep the generated data here as .npz (default: regenerate)")
  p.add_argument("--workers", type=int, default=2,
                 help="variants trained at once on threads (default 2: the cores)")
  p.add_argument("--no-plot", action="store_true", help="skip curves.png")
  p.add_argument("--overwrite", action="store_true",
                 help="replace results already in --out (otherwise refused)")
  cfg = p.parse_args(argv)
  defaults = dict(steps=4000, seeds=[0, 1, 2, 3, 4], hidden=128, batch=100, eval_every=250,
                  warmup=0, variants=list(VARIANTS))
  for name, value in (QUICK if cfg.quick else defaults).items():
    if getattr(cfg, name) is None:
      setattr(cfg, name, value)
  for name in ("steps", "hidden", "batch", "eval_every", "workers"):
    if getattr(cfg, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
  if len(set(cfg.seeds)) != len(cfg.seeds):
    p.error(f"--seeds must be distinct, got {cfg.seeds}")
  if (cfg.out / "results.json").exists() and not cfg.overwrite:
    p.error(f"{cfg.out} already holds results.json; pass another --out, or --overwrite to "
            "replace it")
  return cfg


def run_variant(cfg, variant: str) -> dict:
  data = mnist1d.load(shuffle_seq=variant == "shuffled", cache_dir=cfg.cache_dir)
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  test = classification.LabelledBatch(mnist1d.sequences(data.x_test), jnp.asarray(data.y_test))
  tx = jrnn.training.make_optimizer(
      cfg.optimizer, cfg.lr, clip_norm=cfg.clip or None, schedule=cfg.schedule,
      total_steps=cfg.steps if cfg.schedule != "constant" else None, warmup_steps=cfg.warmup,
      weight_decay=cfg.weight_decay)
  keys = multi.seed_keys(cfg.seeds)
  init_keys, data_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
  params, states = multi.init_seeds(
      lambda k: jrnn.init_params(k, 1, cfg.hidden, mnist1d.N_CLASSES, scheme=cfg.init),
      tx, init_keys)
  loss = classification.classification_loss(activation=cfg.activation, grad=cfg.grad)

  def make_batch(key, k):
    return classification.LabelledBatch(*mnist1d.train_batch(key, k, x, y, cfg.batch))

  evaluate = jax.jit(jax.vmap(lambda p: (classification.accuracy(p, test,
                                                                  activation=cfg.activation),
                                         loss(p, test))))
  chunks = {}
  steps, test_acc, test_loss, train_loss = [], [], [], []
  wall0, cpu0 = time.perf_counter(), time.process_time()
  done = 0
  while done < cfg.steps:
    n = min(cfg.eval_every, cfg.steps - done)
    if n not in chunks:
      chunks[n] = multi.make_multi_seed_train_chunk(loss, tx, make_batch, steps=n)
    params, states, metrics = chunks[n](params, states, data_keys, done)
    done += n
    acc, tl = evaluate(params)
    steps.append(done)
    test_acc.append(np.asarray(acc))
    test_loss.append(np.asarray(tl))
    train_loss.append(np.asarray(jnp.mean(metrics["loss"], axis=1)))
    print(f"{variant} step {done}: test accuracy per seed "
          f"{' '.join(f'{a:.3f}' for a in test_acc[-1])}", flush=True)
  wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
  test_acc, test_loss, train_loss = (np.stack(c, 1) for c in (test_acc, test_loss, train_loss))
  final = test_acc[:, -1].tolist()
  return {
      "variant": variant, "wall_s": round(wall, 1),
      "process_cpu_s": round(cpu, 1),  # the whole process's: shared when variants overlap
      "test_accuracy": final, "median": statistics.median(final), "min": min(final),
      "max": max(final),
      "seeds": [{"seed": s, "test_accuracy": final[i],
                 "curve": {"step": steps, "test_accuracy": test_acc[i].tolist(),
                           "test_loss": test_loss[i].tolist(),
                           "train_loss": train_loss[i].tolist()}}
                for i, s in enumerate(cfg.seeds)],
  }


def table(results: dict) -> str:
  cfg, m = results["config"], results["machine"]
  lines = [
      "# MNIST-1D: Elman RNN test accuracy over seeds",
      "",
      f"Command: `{results['command']}`",
      "",
      f"Machine: `{m['model_name']}`, {m['cpus']} CPUs (load average at start "
      f"{m['loadavg_1_5_15']}, at end {results['loadavg_end']}); total "
      f"{results['wall_s'] / 60:.1f} min wall, {results['cpu_s'] / 60:.1f} min CPU.",
      "",
      f"H={cfg['hidden']} {cfg['activation']} ({cfg['init']} init), last-step readout; "
      f"batch {cfg['batch']}, {cfg['steps']} steps, {cfg['optimizer']} lr {cfg['lr']} "
      f"({cfg['schedule']}, warm-up {cfg['warmup']}), clip {cfg['clip'] or 'none'}, weight "
      f"decay {cfg['weight_decay']}, grad={cfg['grad']}; seeds {cfg['seeds']}; 4,000 train / "
      "1,000 test sequences of 40 steps. Final test accuracy, no early stopping.",
      "",
      "| variant | median | range | per seed | wall s |",
      "|---|---|---|---|---|",
  ]
  for v in results["variants"]:
    per = ", ".join(f"{a:.3f}" for a in v["test_accuracy"])
    lines.append(f"| {v['variant']} | {v['median']:.3f} | {v['min']:.3f} – {v['max']:.3f} | "
                 f"{per} | {v['wall_s']} |")
  pub = ", ".join(f"{k} {v:.0%}" for k, v in mnist1d.PUBLISHED.items())
  lines += ["", f"Published (Greydanus 2020, same split): {pub}."]
  return "\n".join(lines) + "\n"


def plot(results: dict, path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  variants = results["variants"]
  fig, axes = plt.subplots(1, len(variants), squeeze=False, sharey=True,
                           figsize=(5 * len(variants), 3.6))
  for ax, v in zip(axes[0], variants):
    for s in v["seeds"]:
      ax.plot(s["curve"]["step"], s["curve"]["test_accuracy"], lw=1, alpha=0.8,
              label=f"seed {s['seed']}")
    for name, acc in mnist1d.PUBLISHED.items():
      if name in ("gru", "cnn", "mlp", "logistic"):
        ax.axhline(acc, color="gray", ls=":", lw=0.8)
        ax.text(0, acc, f" {name.upper() if len(name) < 5 else name} {acc:.0%}", fontsize=7,
                va="bottom", color="gray")
    ax.set_title(f"{v['variant']}: median {v['median']:.1%}", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
  axes[0][0].set_ylabel("test accuracy")
  axes[0][0].legend(fontsize=7, loc="lower right")
  fig.suptitle("MNIST-1D, Elman RNN: every seed's test accuracy (dotted: published models)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] = ()) -> dict:
  cfg = parse(list(argv))
  cfg.out.mkdir(parents=True, exist_ok=True)
  info = benchlib.run_context()
  print(f"machine: {info['model_name']} ({info['cpus']} CPUs, load {info['loadavg_1_5_15']})",
        flush=True)
  wall0, cpu0 = time.perf_counter(), time.process_time()
  with concurrent.futures.ThreadPoolExecutor(cfg.workers) as pool:  # XLA releases the GIL
    variants = list(pool.map(lambda v: run_variant(cfg, v), cfg.variants))
  config = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(cfg).items()}
  results = benchlib.json_safe({
      "config": config, "machine": info, "published": mnist1d.PUBLISHED,
      "command": "python scripts/mnist1d_experiment.py " + " ".join(argv),
      "wall_s": round(time.perf_counter() - wall0, 1),
      "cpu_s": round(time.process_time() - cpu0, 1),
      "loadavg_end": [round(x, 2) for x in os.getloadavg()],
      "variants": variants})
  (cfg.out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
  (cfg.out / "results.md").write_text(table(results))
  if not cfg.no_plot:
    plot(results, cfg.out / "curves.png")
  print(table(results))
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
