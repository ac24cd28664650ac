"""MNIST-1D (Greydanus 2020) with an Elman RNN, several seeds as one vmapped program.

Each example is a 40-step sequence of scalars; the RNN reads it step by step and the digit is
read from the state after the last step (:func:`jrnn.training.classification.classification_loss`).
The data are the ``mnist1d`` package's defaults (4,000 train / 1,000 test, generated offline from
its seed 42; :mod:`jrnn.data.mnist1d`). Published test accuracy on this split: logistic
regression 32%, MLP 68%, CNN 94%, GRU 91%, human 96%.

Three splits: ``--val-size`` (500) validation sequences are carved out of the 4,000 training
ones by a fixed seed (:func:`jrnn.data.mnist1d.split`, ``--split-seed``); the rest train.
Validation accuracy is measured every ``--eval-every`` steps (it is what settings are chosen
by); the test set is read once, after the last step. No early stopping: the reported model is
the final one.

Every seed trains on its own epoch order (a fresh permutation per epoch from its data key) from
its own initialisation; all seeds run as one program ``vmap``-ed over parameters, optimiser
state and data keys (:func:`jrnn.training.seeds.make_multi_seed_train_chunk`). The data of every
variant are made once, before any thread starts; ``--workers`` variants then train at once on
threads, and the results do not depend on ``--workers``. The ``shuffled`` variant applies one
fixed permutation to the 40 steps of every sequence (train, validation and test alike): the same
information without its order.

  python scripts/experiments/mnist1d_experiment.py --out docs/mnist1d
  python scripts/experiments/mnist1d_experiment.py --out /tmp/m1d --quick   # seconds: what CI runs

Writes ``results.json`` (the command, commit, versions, data hashes, config, every seed's
curves and final scores: the same bytes when the command is run again on the same machine),
``timing.json`` (wall and CPU times, load), ``results.md`` and ``curves.png`` (every seed's
validation accuracy against the published baselines).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn.data import mnist1d
from jrnn.training import classification
from jrnn.training import seeds as multi

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
from common import record  # noqa: E402  pylint: disable=wrong-import-position

VARIANTS = ("plain", "shuffled")
QUICK = dict(
  steps=20, seeds=[0, 1], hidden=8, batch=20, eval_every=10, variants=["plain"], warmup=0
)


def parse(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--out", type=pathlib.Path, required=True, help="output directory")
  p.add_argument(
    "--quick",
    action="store_true",
    help=f"a seconds-long smoke run for CI: {QUICK} (explicit flags still win)",
  )
  p.add_argument(
    "--variants", nargs="+", choices=VARIANTS, default=None, help="default: plain shuffled"
  )
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
  p.add_argument(
    "--weight-decay",
    type=float,
    default=0.05,
    help="decoupled weight decay λ (AdamW with adam; default 0.05)",
  )
  p.add_argument(
    "--grad",
    choices=jrnn.GRADS,
    default="hand",
    help="jrnn.forward's grad= (default hand, the library default)",
  )
  record.add_kernel_flag(p, jrnn.KERNELS)
  p.add_argument("--eval-every", type=int, default=None, help="default 250")
  p.add_argument(
    "--val-size",
    type=int,
    default=mnist1d.N_VAL,
    help=f"validation sequences carved from the training set (default {mnist1d.N_VAL})",
  )
  p.add_argument(
    "--split-seed", type=int, default=0, help="seed of the train/validation split (default 0)"
  )
  p.add_argument(
    "--no-test",
    action="store_true",
    help="a selection run: validation only, the test set is not read",
  )
  p.add_argument(
    "--cache-dir",
    type=pathlib.Path,
    default=None,
    help="keep the generated data here as .npz (default: regenerate)",
  )
  p.add_argument(
    "--workers",
    type=int,
    default=2,
    help="variants trained at once on threads (default 2: the cores)",
  )
  p.add_argument("--no-plot", action="store_true", help="skip curves.png")
  p.add_argument(
    "--overwrite", action="store_true", help="replace results already in --out (otherwise refused)"
  )
  cfg = p.parse_args(argv)
  defaults = dict(
    steps=4000,
    seeds=[0, 1, 2, 3, 4],
    hidden=128,
    batch=100,
    eval_every=250,
    warmup=0,
    variants=list(VARIANTS),
  )
  for name, value in (QUICK if cfg.quick else defaults).items():
    if getattr(cfg, name) is None:
      setattr(cfg, name, value)
  for name in ("steps", "hidden", "batch", "eval_every", "workers", "val_size"):
    if getattr(cfg, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
  if len(set(cfg.seeds)) != len(cfg.seeds):
    p.error(f"--seeds must be distinct, got {cfg.seeds}")
  refusal = record.refuse_existing(cfg.out, cfg.overwrite)
  if refusal:
    p.error(refusal)
  return cfg


def make_data(cfg) -> Dict[str, mnist1d.Splits]:
  """Every variant's three splits, made once, on the calling thread."""
  return {
    v: mnist1d.split(
      mnist1d.load(shuffle_seq=v == "shuffled", cache_dir=cfg.cache_dir),
      n_val=cfg.val_size,
      seed=cfg.split_seed,
    )
    for v in cfg.variants
  }


def run_variant(cfg, variant: str, data: mnist1d.Splits) -> Tuple[dict, float]:
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  val = classification.LabelledBatch(mnist1d.sequences(data.x_val), jnp.asarray(data.y_val))
  tx = jrnn.training.make_optimizer(
    cfg.optimizer,
    cfg.lr,
    clip_norm=cfg.clip or None,
    schedule=cfg.schedule,
    total_steps=cfg.steps if cfg.schedule != "constant" else None,
    warmup_steps=cfg.warmup,
    weight_decay=cfg.weight_decay,
  )
  keys = multi.seed_keys(cfg.seeds)
  init_keys, data_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
  params, states = multi.init_seeds(
    lambda k: jrnn.init_params(k, 1, cfg.hidden, mnist1d.N_CLASSES, scheme=cfg.init), tx, init_keys
  )
  loss = classification.classification_loss(
    activation=cfg.activation, grad=cfg.grad, kernel=cfg.kernel
  )

  def make_batch(key, k):
    return classification.LabelledBatch(*mnist1d.train_batch(key, k, x, y, cfg.batch))

  evaluate = jax.jit(
    jax.vmap(
      lambda p, batch: (
        classification.accuracy(p, batch, activation=cfg.activation, kernel=cfg.kernel),
        loss(p, batch),
      ),
      in_axes=(0, None),
    )
  )
  chunks = {}
  # Per-evaluation lists, stacked into (seeds, evaluations) arrays after the loop.
  val_acc: Any
  val_loss: Any
  train_loss: Any
  steps, val_acc, val_loss, train_loss = [], [], [], []
  wall0 = time.perf_counter()
  done = 0
  while done < cfg.steps:
    n = min(cfg.eval_every, cfg.steps - done)
    if n not in chunks:
      chunks[n] = multi.make_multi_seed_train_chunk(loss, tx, make_batch, steps=n)
    params, states, metrics = chunks[n](params, states, data_keys, done)
    done += n
    acc, vl = evaluate(params, val)
    steps.append(done)
    val_acc.append(np.asarray(acc))
    val_loss.append(np.asarray(vl))
    train_loss.append(np.asarray(jnp.mean(metrics["loss"], axis=1)))
    print(
      f"{variant} step {done}: validation accuracy per seed "
      f"{' '.join(f'{a:.3f}' for a in val_acc[-1])}",
      flush=True,
    )
  # The test split, read once: the final parameters, no selection (not at all with --no-test).
  test_acc: List[Optional[float]] = [None] * len(cfg.seeds)
  if not cfg.no_test:
    test = classification.LabelledBatch(mnist1d.sequences(data.x_test), jnp.asarray(data.y_test))
    test_acc = np.asarray(evaluate(params, test)[0]).tolist()
  wall = time.perf_counter() - wall0
  val_acc, val_loss, train_loss = (np.stack(c, 1) for c in (val_acc, val_loss, train_loss))
  final_val = val_acc[:, -1].tolist()
  scored = [a for a in test_acc if a is not None]
  return {
    "variant": variant,
    "test_accuracy": test_acc,
    "median": statistics.median(scored) if scored else None,
    "min": min(scored) if scored else None,
    "max": max(scored) if scored else None,
    "val_accuracy": final_val,
    "val_median": statistics.median(final_val),
    "val_min": min(final_val),
    "val_max": max(final_val),
    "seeds": [
      {
        "seed": s,
        "test_accuracy": test_acc[i],
        "val_accuracy": final_val[i],
        "curve": {
          "step": steps,
          "val_accuracy": val_acc[i].tolist(),
          "val_loss": val_loss[i].tolist(),
          "train_loss": train_loss[i].tolist(),
        },
      }
      for i, s in enumerate(cfg.seeds)
    ],
  }, round(wall, 1)


def table(results: dict, timing: dict) -> str:
  cfg, m = results["config"], results["machine"]
  n_train = mnist1d.N_TRAIN - cfg["val_size"]
  lines = [
    "# MNIST-1D: Elman RNN accuracy over seeds",
    "",
    f"Command: `{results['command']}` (commit {results['git']['commit']}"
    f"{', with local changes' if results['git']['dirty'] else ''})",
    "",
    f"Machine: `{m['model_name']}`, {m['cpus']} CPUs (load average at start "
    f"{timing['loadavg_start']}, at end {timing['loadavg_end']}); total "
    f"{timing['wall_s'] / 60:.1f} min wall, {timing['cpu_s'] / 60:.1f} min CPU.",
    "",
    f"H={cfg['hidden']} {cfg['activation']} ({cfg['init']} init), last-step readout; "
    f"batch {cfg['batch']}, {cfg['steps']} steps, {cfg['optimizer']} lr {cfg['lr']} "
    f"({cfg['schedule']}, warm-up {cfg['warmup']}), clip {cfg['clip'] or 'none'}, weight "
    f"decay {cfg['weight_decay']}, grad={cfg['grad']}; seeds {cfg['seeds']}; {n_train:,} "
    f"train / {cfg['val_size']} validation (split seed {cfg['split_seed']}) / 1,000 test "
    "sequences of 40 steps. Final model, no early stopping; the test set is read once.",
    "",
    "| variant | test median | test range | test per seed | validation median | wall s |",
    "|---|---|---|---|---|---|",
  ]
  for v in results["variants"]:
    if v["median"] is None:  # --no-test
      per = ", ".join(f"{a:.3f}" for a in v["val_accuracy"])
      lines.append(
        f"| {v['variant']} | not read (--no-test) | — | validation: {per} | "
        f"{v['val_median']:.3f} | {timing['variants'][v['variant']]} |"
      )
      continue
    per = ", ".join(f"{a:.3f}" for a in v["test_accuracy"])
    lines.append(
      f"| {v['variant']} | {v['median']:.3f} | {v['min']:.3f} – {v['max']:.3f} | "
      f"{per} | {v['val_median']:.3f} | {timing['variants'][v['variant']]} |"
    )
  pub = ", ".join(f"{k} {v:.0%}" for k, v in mnist1d.PUBLISHED.items())
  lines += ["", f"Published (Greydanus 2020, test set of the same split): {pub}."]
  return "\n".join(lines) + "\n"


def plot(results: dict, path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  variants = results["variants"]
  fig, axes = plt.subplots(
    1, len(variants), squeeze=False, sharey=True, figsize=(5 * len(variants), 3.6)
  )
  for ax, v in zip(axes[0], variants, strict=True):
    for s in v["seeds"]:
      ax.plot(
        s["curve"]["step"], s["curve"]["val_accuracy"], lw=1, alpha=0.8, label=f"seed {s['seed']}"
      )
    for name, acc in mnist1d.PUBLISHED.items():
      if name in ("gru", "cnn", "mlp", "logistic"):
        ax.axhline(acc, color="gray", ls=":", lw=0.8)
        ax.text(
          0,
          acc,
          f" {name.upper() if len(name) < 5 else name} {acc:.0%}",
          fontsize=7,
          va="bottom",
          color="gray",
        )
    ax.set_title(f"{v['variant']}: median validation accuracy {v['val_median']:.1%}", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
  axes[0][0].set_ylabel("validation accuracy")
  axes[0][0].legend(fontsize=7, loc="lower right")
  fig.suptitle(
    "MNIST-1D, Elman RNN: every seed's validation accuracy (dotted: published "
    "models' test accuracy)",
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] = ()) -> dict:
  cfg = parse(list(argv))
  cfg.out.mkdir(parents=True, exist_ok=True)
  clock = record.start_clock(announce=False)
  data = make_data(cfg)  # before any thread starts
  digests = {
    f"{v}/{part}": record.digest(getattr(d, f"x_{part}"), getattr(d, f"y_{part}"))
    for v, d in data.items()
    for part in ("train", "val", "test")
  }
  # Before training: the commit recorded is the code that runs.
  provenance = record.provenance(
    "experiments/mnist1d_experiment.py", argv, seeds=cfg.seeds, data=digests
  )
  print(
    f"machine: {record.benchlib.cpu_model()} ({os.cpu_count()} CPUs, load "
    f"{[round(x, 2) for x in clock.load]})",
    flush=True,
  )
  with concurrent.futures.ThreadPoolExecutor(cfg.workers) as pool:  # XLA releases the GIL
    done = list(pool.map(lambda v: run_variant(cfg, v, data[v]), cfg.variants))
  results = {
    **provenance,
    "config": record.settings(cfg),
    "published": mnist1d.PUBLISHED,
    "variants": [r for r, _ in done],
  }
  timing = record.timing(
    "experiments/mnist1d_experiment.py",
    argv,
    clock,
    workers=cfg.workers,
    variants={v: w for v, (_, w) in zip(cfg.variants, done, strict=True)},
  )
  record.write(cfg.out, results, timing)
  (cfg.out / "results.md").write_text(table(results, timing))
  if not cfg.no_plot:
    plot(results, cfg.out / "curves.png")
  print(table(results, timing))
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
