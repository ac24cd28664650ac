"""The adding problem at several lengths T, several seeds per cell, all seeds of a row vmapped.

Cells: three initialisations × with and without clipping, each over ``--seeds``:

* ``seed``: every weight ``N(0, 0.01²)``, tanh (the seed document's ``SimpleRNN``);
* ``orthogonal``: ``W_hh`` random orthogonal, Glorot input/readout weights, tanh;
* ``irnn``: ``W_hh = I``, input/readout weights ``N(0, 0.001²)``, ReLU (Le, Jaitly & Hinton 2015).

Clipped runs rescale the gradient to global norm at most ``--clip-threshold`` (Pascanu et al.
2013, :func:`jrnn.training.global_norm_clipping`) before the optimiser; unclipped runs use the same
transform at threshold ∞, which records the norm and never clips (``--clipping on|off`` runs
only one of the two). Every run minimises the mean squared error of the prediction after the
last step on fresh batches (batch ``k`` of seed ``s`` from ``fold_in(data_key_s, k)``).

Three splits per T: the training stream, a validation set (``--val-size`` sequences from key
``20000 + T``) on which the MSE is measured every ``--eval-every`` steps — step counts and
settings are chosen on it — and a test set (``--test-size`` sequences from key ``10000 + T``)
read once, after the last step. Predicting the mean scores ``1/6 ≈ 0.167``; a run counts as
solved when its final test MSE is below ``--solved`` (0.01), and as diverged when a validation
MSE exceeds ``--diverged`` (1.0, six times the mean predictor's) or is not finite.

Seeds in parallel: the runs of one init at one T (clipped and unclipped × every seed) are the
members of a single program ``vmap``-ed over members
(:func:`jrnn.training.seeds.make_multi_seed_train_chunk`): parameters, optimiser state (the
clipping threshold is part of it, so clipped and unclipped runs share the program) and data keys
all carry a leading member axis. Seed ``s`` has the same data for every init and the same initial
parameters with and without clipping: the two clipping columns are paired. ``--workers``
programs run at once on threads (XLA releases the GIL), one per core by default; every program
is a pure function of its seeds, so the results do not depend on ``--workers``.

Every init in a row (one T) trains with the same settings; ``--steps`` may differ per T.

  python scripts/experiments/adding_experiment.py --out docs/adding  # the table in docs/adding
  python scripts/experiments/adding_experiment.py --out /tmp/adding --quick  # seconds (CI)

Writes ``results.json`` (the command, commit, versions, data hashes, config, every run with its
curves: the same bytes when the command is run again on the same machine), ``timing.json``
(wall and CPU times per program, load), ``results.md`` (per cell: median and range of the final
test MSE over seeds, solved/seeds, diverged) and ``curves.png`` (every seed's validation curve).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jrnn
from jrnn.data import adding
from jrnn.training import seeds as multi

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
from common import record  # noqa: E402  pylint: disable=wrong-import-position

INITS = {  # name: (init scheme, activation)
  "seed": ("seed", "tanh"),
  "orthogonal": ("orthogonal", "tanh"),
  "irnn": ("identity", "relu"),
}
QUICK = dict(
  lengths=[10],
  steps=[20],
  seeds=[0, 1],
  hidden=8,
  batch=8,
  test_size=64,
  val_size=64,
  eval_every=10,
)
CLIPPING = {"both": (False, True), "on": (True,), "off": (False,)}


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
    "--lengths", type=int, nargs="+", default=None, help="T values (default 50 100 200 400)"
  )
  p.add_argument(
    "--steps",
    type=int,
    nargs="+",
    default=None,
    help="training steps per run: one value, or one per T (default 1000 3000 "
    "8000 6000: the 30-minute budget, see docs/adding)",
  )
  p.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS))
  p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 3 4")
  p.add_argument("--hidden", type=int, default=None, help="H (default 64)")
  p.add_argument("--batch", type=int, default=None, help="sequences per step (default 16)")
  p.add_argument("--optimizer", choices=jrnn.training.OPTIMIZERS, default="rmsprop")
  p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
  p.add_argument(
    "--schedule",
    choices=jrnn.training.SCHEDULES,
    default="cosine",
    help="learning-rate schedule over each row's steps (default cosine, to 0.1 lr)",
  )
  p.add_argument(
    "--clip-threshold",
    type=float,
    default=1.0,
    help="global-norm clipping threshold θ of the clipped runs (default 1.0)",
  )
  p.add_argument(
    "--grad",
    choices=jrnn.GRADS,
    default="hand",
    help="jrnn.forward's grad= (default hand: 20%% faster here than autodiff)",
  )
  record.add_kernel_flag(p, jrnn.KERNELS)
  p.add_argument(
    "--clipping",
    choices=list(CLIPPING),
    default="both",
    help="run the clipped runs, the unclipped ones, or both (default)",
  )
  p.add_argument(
    "--val-size", type=int, default=None, help="validation sequences per T (default 1000)"
  )
  p.add_argument("--test-size", type=int, default=None, help="test sequences (default 1000)")
  p.add_argument(
    "--eval-every",
    type=int,
    default=None,
    help="steps per compiled chunk and between test evaluations (default 500)",
  )
  p.add_argument("--solved", type=float, default=0.01, help="solved when test MSE < this")
  p.add_argument(
    "--diverged",
    type=float,
    default=1.0,
    help="diverged when a validation MSE exceeds this (default 1.0) or is not finite",
  )
  p.add_argument(
    "--workers",
    type=int,
    default=2,
    help="groups (one init at one T) run at once on threads (default 2: the cores)",
  )
  p.add_argument("--no-plot", action="store_true", help="skip curves.png")
  p.add_argument(
    "--overwrite", action="store_true", help="replace results already in --out (otherwise refused)"
  )
  cfg = p.parse_args(argv)
  defaults: Dict[str, Any] = dict(
    lengths=[50, 100, 200, 400],
    steps=[1000, 3000, 8000, 6000],
    seeds=[0, 1, 2, 3, 4],
    hidden=64,
    batch=16,
    test_size=1000,
    val_size=1000,
    eval_every=500,
  )
  if cfg.steps is None and cfg.lengths is not None and not cfg.quick:
    # Each given T takes its own default step count, not the four-T list's.
    per_t = dict(zip(defaults["lengths"], defaults["steps"], strict=True))
    missing = [t for t in cfg.lengths if t not in per_t]
    if missing:
      p.error(
        f"--steps has no default for T={missing} (defaults exist for T in "
        f"{sorted(per_t)}); pass --steps"
      )
    cfg.steps = [per_t[t] for t in cfg.lengths]
  for name, value in (QUICK if cfg.quick else defaults).items():
    if getattr(cfg, name) is None:
      setattr(cfg, name, value)
  if len(cfg.steps) == 1:
    cfg.steps = cfg.steps * len(cfg.lengths)
  if len(cfg.steps) != len(cfg.lengths):
    p.error(f"--steps takes one value or one per T ({len(cfg.lengths)}), got {len(cfg.steps)}")
  for name in ("hidden", "batch", "test_size", "val_size", "eval_every", "workers"):
    if getattr(cfg, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
  if min(cfg.steps) < 1 or min(cfg.lengths) < 2:
    p.error("--steps must be >= 1 and --lengths >= 2")
  if len(set(cfg.seeds)) != len(cfg.seeds):
    p.error(f"--seeds must be distinct, got {cfg.seeds}")
  refusal = record.refuse_existing(cfg.out, cfg.overwrite)
  if refusal:
    p.error(refusal)
  return cfg


def held_out(cfg, seq_len: int):
  """The validation and test sets of one T: fixed keys, made once, before any thread starts."""
  make = jax.jit(adding.batch, static_argnums=(1, 2))
  return (
    make(jax.random.key(20_000 + seq_len), cfg.val_size, seq_len),
    make(jax.random.key(10_000 + seq_len), cfg.test_size, seq_len),
  )


def member_clipping(threshold: float) -> optax.GradientTransformation:
  """Global-norm clipping whose threshold lives in the optimiser state (one per member)."""
  return optax.inject_hyperparams(jrnn.training.global_norm_clipping)(threshold=threshold)


def make_mse(activation: str, grad: str, kernel: str = "xla"):
  def mse(params, batch: adding.AddingBatch):
    """Mean over the batch of ``(y_T - ŷ)²`` via :func:`jrnn.squared_error`."""
    # forward's ys is always an array (RNNOutput types it Optional for readout-less stacks).
    out = jrnn.forward(params, batch.xs, activation=activation, grad=grad, kernel=kernel)
    ys = out.ys[-1]  # type: ignore[index]
    return jrnn.squared_error(ys, batch.targets[:, None], reduction="mean")

  return mse


def stack(trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *trees)


def run_group(cfg, seq_len: int, steps: int, init: str, val, test):
  """The runs of one init at one T (each clipping setting × every seed) as one vmapped program.

  Returns ``(runs, wall_s)``.
  """
  base = jrnn.training.make_optimizer(
    cfg.optimizer,
    cfg.lr,
    schedule=cfg.schedule,
    total_steps=steps if cfg.schedule != "constant" else None,
  )
  tx = optax.chain(member_clipping(cfg.clip_threshold), base)
  scheme, activation = INITS[init]
  clips = CLIPPING[cfg.clipping]
  # Members: seeds of the first clipping setting, then of the next; a seed's runs start from the
  # same params.
  members = [(init, clip, seed) for clip in clips for seed in cfg.seeds]
  thresholds = np.array(
    [cfg.clip_threshold if clip else math.inf for _, clip, _ in members], np.float32
  )

  @jax.jit  # one compiled set-up rather than many small eager ops
  def setup(keys):
    init_keys, data_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    params, states = multi.init_seeds(
      lambda k: jrnn.init_params(k, 2, cfg.hidden, 1, scheme=scheme), tx, init_keys
    )
    params, states = stack([params] * len(clips)), stack([states] * len(clips))
    clip_state = states[0]._replace(
      hyperparams={**states[0].hyperparams, "threshold": jnp.asarray(thresholds)}
    )
    return (params, (clip_state,) + tuple(states[1:]), jnp.concatenate([data_keys] * len(clips)))

  params, states, data = setup(multi.seed_keys(cfg.seeds))
  make_batch = lambda key, k: adding.batch(jax.random.fold_in(key, k), cfg.batch, seq_len)
  mse = make_mse(activation, cfg.grad, cfg.kernel)
  chunks = {}
  evaluate = jax.jit(jax.vmap(mse, in_axes=(0, None)))
  # Per-evaluation lists, stacked into (members, evaluations) arrays after the loop.
  val_curves: Any
  train_curves: Any
  norm_curves: Any
  curve_steps, val_curves, train_curves, norm_curves = [], [], [], []
  wall0 = time.perf_counter()
  done = 0
  while done < steps:
    n = min(cfg.eval_every, steps - done)
    if n not in chunks:
      chunks[n] = multi.make_multi_seed_train_chunk(mse, tx, make_batch, steps=n)
    params, states, metrics = chunks[n](params, states, data, done)
    done += n
    curve_steps.append(done)
    val_curves.append(np.asarray(evaluate(params, val)))
    train_curves.append(np.asarray(jnp.mean(metrics["loss"], axis=1)))
    norm_curves.append(np.asarray(jnp.max(metrics["grad_norm"], axis=1)))
  test_mse = np.asarray(evaluate(params, test))  # the test set, read once: the final params
  wall = time.perf_counter() - wall0
  clipped = np.asarray(states[0].inner_state.clipped)
  val_curves, train_curves = np.stack(val_curves, 1), np.stack(train_curves, 1)
  norm_curves = np.stack(norm_curves, 1)
  solved = int(np.sum(test_mse < cfg.solved))
  print(
    f"T={seq_len:4d} {init:10s}: {solved}/{len(members)} runs solved "
    f"({len(cfg.seeds)} seeds × clipping {cfg.clipping}), {wall:.0f} s wall",
    flush=True,
  )
  runs = []
  for m, (init, clip, seed) in enumerate(members):
    final, curve = float(test_mse[m]), val_curves[m]
    runs.append(
      {
        "init": init,
        "scheme": INITS[init][0],
        "activation": activation,
        "clip": clip,
        "clip_threshold": cfg.clip_threshold if clip else None,
        "seq_len": seq_len,
        "seed": seed,
        "steps": steps,
        "test_mse": final,
        "val_mse": float(curve[-1]),
        "solved": bool(final < cfg.solved),
        "diverged": bool(not np.all(np.isfinite(curve)) or np.max(curve) > cfg.diverged),
        "max_val_mse": float(np.max(curve)),
        "clipped_steps": int(clipped[m]) if clip else 0,
        "curve": {
          "step": curve_steps,
          "val_mse": curve.tolist(),
          "train_mse": train_curves[m].tolist(),
          "max_grad_norm": norm_curves[m].tolist(),
        },
      }
    )
  return runs, round(wall, 1)


def cells(runs):
  """``(T, init, clip) -> [runs]`` in first-seen order."""
  out = {}
  for r in runs:
    out.setdefault((r["seq_len"], r["init"], r["clip"]), []).append(r)
  return out


def summary(rs: List[dict]) -> dict:
  vals = [
    r["test_mse"] if r["test_mse"] is not None and math.isfinite(r["test_mse"]) else math.inf
    for r in rs
  ]  # non-finite: inf
  return {
    "median": statistics.median(vals),
    "min": min(vals),
    "max": max(vals),
    "solved": sum(r["solved"] for r in rs),
    "diverged": sum(r["diverged"] for r in rs),
    "seeds": len(rs),
  }


def fmt(v: float) -> str:
  return "non-finite" if v is None or not math.isfinite(v) else f"{v:.4f}"


def table(results: dict, timing: dict) -> str:
  cfg, m = results["config"], results["machine"]
  steps = ", ".join(f"T={t}: {s}" for t, s in zip(cfg["lengths"], cfg["steps"], strict=True))
  lines = [
    "# Adding problem: final test MSE over seeds",
    "",
    f"Command: `{results['command']}` (commit {results['git']['commit']}"
    f"{', with local changes' if results['git']['dirty'] else ''})",
    "",
    f"Machine: `{m['model_name']}`, {m['cpus']} CPUs (load average at start "
    f"{timing['loadavg_start']}, at end {timing['loadavg_end']}); total "
    f"{timing['wall_s'] / 60:.1f} min wall, {timing['cpu_s'] / 60:.1f} min CPU.",
    "",
    f"H={cfg['hidden']}, batch {cfg['batch']}, {cfg['optimizer']} lr {cfg['lr']} "
    f"({cfg['schedule']} schedule), grad={cfg['grad']}, steps per run {steps}; seeds "
    f"{cfg['seeds']}; {cfg['val_size']} validation and {cfg['test_size']} test sequences per "
    f"T (the test set read once, after the last step). Clipped: global norm "
    f"θ={cfg['clip_threshold']}. Predicting the mean scores {adding.BASELINE_MSE:.3f}; solved "
    f"= test MSE < {cfg['solved']}; diverged = a validation MSE above {cfg['diverged']} (or "
    "non-finite) at some evaluation.",
    "",
    "| T | init | activation | clipping | median | range | solved | diverged |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for (seq_len, init, clip), rs in cells(results["runs"]).items():
    s = summary(rs)
    clip_s = f"θ={cfg['clip_threshold']}" if clip else "none"
    lines.append(
      f"| {seq_len} | {init} | {rs[0]['activation']} | {clip_s} | "
      f"{fmt(s['median'])} | {fmt(s['min'])} – {fmt(s['max'])} | "
      f"{s['solved']}/{s['seeds']} | {s['diverged']} |"
    )
  lines += [
    "",
    f"Programs ({timing['workers']} at a time on threads): one per init and T, "
    "vmapped over its runs.",
    "",
    "| T | init | runs | steps | wall s |",
    "|---|---|---|---|---|",
  ]
  for g in timing["groups"]:
    lines.append(f"| {g['seq_len']} | {g['init']} | {g['runs']} | {g['steps']} | {g['wall_s']} |")
  return "\n".join(lines) + "\n"


def plot(results: dict, path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  cfg = results["config"]
  by_cell = cells(results["runs"])
  inits = [i for i in INITS if i in cfg["inits"]]
  fig, axes = plt.subplots(
    len(cfg["lengths"]),
    len(inits),
    squeeze=False,
    sharey=True,
    figsize=(4 * len(inits), 2.8 * len(cfg["lengths"])),
  )
  for row, seq_len in enumerate(cfg["lengths"]):
    for col, init in enumerate(inits):
      ax = axes[row][col]
      for clip, colour in ((False, "tab:red"), (True, "tab:blue")):
        for r in by_cell.get((seq_len, init, clip), []):
          y = [np.nan if v is None else v for v in r["curve"]["val_mse"]]
          ax.plot(
            r["curve"]["step"],
            y,
            color=colour,
            alpha=0.7,
            lw=1,
            label=("clipped" if clip else "unclipped") if r["seed"] == cfg["seeds"][0] else None,
          )
      ax.axhline(adding.BASELINE_MSE, color="gray", ls="--", lw=0.8)
      ax.axhline(cfg["solved"], color="green", ls=":", lw=0.8)
      ax.set_yscale("log")
      ax.set_ylim(1e-4, 1.0)
      ax.set_title(f"T={seq_len}, {init} ({INITS[init][1]})", fontsize=9)
      if row == len(cfg["lengths"]) - 1:
        ax.set_xlabel("step")
      if col == 0:
        ax.set_ylabel("validation MSE")
      if row == 0 and col == 0:
        ax.legend(fontsize=7)
  fig.suptitle(
    "Adding problem: validation MSE of every seed (dashed: mean predictor; dotted: solved)",
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] = ()) -> dict:
  cfg = parse(list(argv))
  cfg.out.mkdir(parents=True, exist_ok=True)
  clock = record.start_clock()
  sets = {t: held_out(cfg, t) for t in cfg.lengths}  # before any thread starts
  # The training stream of seed s is fold_in(data_key_s, k): its first batch stands for it.
  data_keys = jax.vmap(jax.random.split, out_axes=1)(multi.seed_keys(cfg.seeds))[1]
  digests = {}
  for t, (val, test) in sets.items():
    digests[f"T={t}/train_first_batches"] = record.digest(
      *jax.vmap(lambda k, t=t: adding.batch(jax.random.fold_in(k, 0), cfg.batch, t))(data_keys)
    )
    digests[f"T={t}/val"] = record.digest(*val)
    digests[f"T={t}/test"] = record.digest(*test)
  # Before training: the commit recorded is the code that runs.
  provenance = record.provenance(
    "experiments/adding_experiment.py", argv, seeds=cfg.seeds, data=digests
  )
  jobs = [
    (seq_len, steps, init)
    for seq_len, steps in zip(cfg.lengths, cfg.steps, strict=True)
    for init in cfg.inits
  ]
  # Longest first (cost ∝ T·steps), so the last job to start is a short one.
  jobs.sort(key=lambda j: -j[0] * j[1])
  with concurrent.futures.ThreadPoolExecutor(cfg.workers) as pool:
    done = list(pool.map(lambda job: run_group(cfg, *job, *sets[job[0]]), jobs))
  order = {name: i for i, name in enumerate(INITS)}
  runs = [r for group_runs, _ in done for r in group_runs]
  runs.sort(key=lambda r: (cfg.lengths.index(r["seq_len"]), order[r["init"]], r["clip"]))
  groups = sorted(
    (
      {"seq_len": t, "init": i, "runs": len(rs), "steps": n, "wall_s": w}
      for (t, n, i), (rs, w) in zip(jobs, done, strict=True)
    ),
    key=lambda g: (cfg.lengths.index(g["seq_len"]), order[g["init"]]),
  )
  results = {
    **provenance,
    "config": record.settings(cfg),
    "baseline_mse": adding.BASELINE_MSE,
    "runs": runs,
  }
  results = record.benchlib.json_safe(results)
  results["cells"] = [
    dict(seq_len=t, init=i, clip=c, **summary(rs))
    for (t, i, c), rs in cells(results["runs"]).items()
  ]
  timing = record.timing(
    "experiments/adding_experiment.py",
    argv,
    clock,
    workers=cfg.workers,
    groups=groups,
  )
  record.write(cfg.out, results, timing)
  (cfg.out / "results.md").write_text(table(results, timing))
  if not cfg.no_plot:
    plot(results, cfg.out / "curves.png")
  print(table(results, timing))
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
