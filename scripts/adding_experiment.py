"""The adding problem at several lengths T: seed init vs orthogonal vs IRNN, with and without
gradient clipping.

Initialisations (all with a linear readout of the last state):

* ``seed``: every weight ``N(0, 0.01²)``, tanh (the seed document's ``SimpleRNN``);
* ``orthogonal``: ``W_hh`` random orthogonal, Glorot input/readout weights, tanh;
* ``irnn``: ``W_hh = I``, input/readout weights ``N(0, 0.001²)``, ReLU (Le, Jaitly & Hinton 2015).

Each is trained with and without Pascanu et al.'s global-norm clipping (``jrnn.training.global_norm_clipping``)
by Adam (or RMSProp) on fresh batches (batch ``k`` from ``fold_in(train_key, k)``), minimising the
mean squared error of the prediction after the last step. The test MSE is measured on a fixed test
set drawn from its own key; predicting the mean scores ``1/6 ≈ 0.167`` and a run counts as solved
when its test MSE is below ``--solved`` (0.01).

Time bound: the default run (3 lengths × 3 inits × 2 clipping settings × 1 seed = 18 runs of
``--steps`` steps at H=``--hidden``) is sized to finish in at most about 10 minutes on a quiet
2-core CPU (float32). Larger settings by flags: ``--steps``, ``--hidden``, ``--lengths``,
``--seeds``, ``--batch``.

  python scripts/adding_experiment.py --out docs/adding
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

import jrnn
from jrnn.data import adding

INITS = {  # name: (init scheme, activation)
    "seed": ("seed", "tanh"),
    "orthogonal": ("orthogonal", "tanh"),
    "irnn": ("identity", "relu"),
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", type=pathlib.Path, required=True, help="output directory")
  p.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200], help="T values")
  p.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS))
  p.add_argument("--steps", type=int, default=8000, help="training steps per run (default 8000)")
  p.add_argument("--hidden", type=int, default=64, help="H (default 64)")
  p.add_argument("--batch", type=int, default=32, help="sequences per step (default 32)")
  p.add_argument("--optimizer", choices=["adam", "rmsprop"], default="adam")
  p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
  p.add_argument("--clip-threshold", type=float, default=1.0,
                 help="global-norm clipping threshold θ of the clipped runs (default 1.0)")
  p.add_argument("--test-size", type=int, default=1000, help="test sequences (default 1000)")
  p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
  p.add_argument("--log-every", type=int, default=100, help="steps per jitted chunk")
  p.add_argument("--solved", type=float, default=0.01, help="solved when test MSE < this")
  return p.parse_args(argv)


def predict(params, xs, activation):
  """The prediction after the last step, ``(B,)``."""
  return jrnn.forward(params, xs, activation=activation).ys[-1, :, 0]


def mse(params, xs, targets, activation):
  """Mean over the batch of ``(y_T - ŷ)²`` via :func:`jrnn.squared_error`."""
  ys = jrnn.forward(params, xs, activation=activation).ys[-1]
  return jrnn.squared_error(ys, targets[:, None], reduction="mean")


def make_optimizer(cfg, clip: bool) -> optax.GradientTransformation:
  opt = optax.adam(cfg.lr) if cfg.optimizer == "adam" else optax.rmsprop(cfg.lr)
  if clip:
    return optax.chain(jrnn.training.global_norm_clipping(cfg.clip_threshold), opt)
  return optax.chain(jrnn.training.global_norm_clipping(math.inf), opt)  # records norms, never clips


def make_chunk(cfg, tx, activation: str, seq_len: int, length: int):
  """``length`` training steps as one compiled function (one pure update per step)."""
  def step(carry, k):
    params, opt_state, train_key = carry
    batch = adding.batch(jax.random.fold_in(train_key, k), cfg.batch, seq_len)
    loss, grads = jax.value_and_grad(mse)(params, batch.xs, batch.targets, activation)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state, train_key), (loss, opt_state[0].norm)

  @jax.jit
  def chunk(params, opt_state, train_key, start):
    (params, opt_state, _), (losses, norms) = jax.lax.scan(
        step, (params, opt_state, train_key), start + jnp.arange(length))
    return params, opt_state, jnp.mean(losses), jnp.max(norms)

  return chunk


def train_one(cfg, init: str, clip: bool, seq_len: int, seed: int) -> dict:
  scheme, activation = INITS[init]
  key = jax.random.key(seed)
  k_init, k_train, k_test = jax.random.split(key, 3)
  params = jrnn.init_params(k_init, 2, cfg.hidden, 1, scheme=scheme)
  tx = make_optimizer(cfg, clip)
  opt_state = tx.init(params)
  chunks = {}  # chunk length -> compiled chunk; a last, shorter chunk compiles once more
  test = adding.batch(k_test, cfg.test_size, seq_len)
  evaluate = jax.jit(functools.partial(mse, activation=activation))
  start_time = time.perf_counter()
  curve = []
  done = 0
  while done < cfg.steps:
    length = min(cfg.log_every, cfg.steps - done)
    if length not in chunks:
      chunks[length] = make_chunk(cfg, tx, activation, seq_len, length)
    params, opt_state, loss, max_norm = chunks[length](params, opt_state, k_train, done)
    done += length
    curve.append({"step": done, "train_mse": float(loss), "max_grad_norm": float(max_norm)})
  test_mse = float(evaluate(params, test.xs, test.targets))
  return {
      "init": init, "scheme": scheme, "activation": activation, "clip": clip,
      "clip_threshold": cfg.clip_threshold if clip else None, "seq_len": seq_len, "seed": seed,
      "steps": done, "hidden": cfg.hidden, "batch": cfg.batch, "optimizer": cfg.optimizer,
      "lr": cfg.lr, "test_size": cfg.test_size, "test_mse": test_mse,
      "solved": bool(test_mse < cfg.solved),
      "diverged": not math.isfinite(test_mse),
      "clipped_steps": int(opt_state[0].clipped) if clip else 0,
      "curve": curve, "wall_s": round(time.perf_counter() - start_time, 2),
  }


def clean(x):
  """JSON-safe: non-finite floats to None."""
  if isinstance(x, dict):
    return {k: clean(v) for k, v in x.items()}
  if isinstance(x, list):
    return [clean(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def table(results: dict) -> str:
  cfg = results["config"]
  lines = [
      "# Adding problem: test MSE after training",
      "",
      f"Command: `{results['command']}`",
      "",
      f"H={cfg['hidden']}, batch {cfg['batch']}, {cfg['optimizer']} lr {cfg['lr']}, "
      f"steps {cfg['steps']} per run, seeds {cfg['seeds']}, test set {cfg['test_size']} "
      f"sequences. Clipped runs: global norm θ={cfg['clip_threshold']}. Predicting the mean "
      f"scores {adding.BASELINE_MSE:.3f}; solved = test MSE < {cfg['solved']}. Each cell: "
      "test MSE per seed, then solved/seeds.",
      "",
      "| T | init | activation | clipping | test MSE | solved |",
      "|---|---|---|---|---|---|",
  ]
  runs = results["runs"]
  keys = []
  for r in runs:
    k = (r["seq_len"], r["init"], r["clip"])
    if k not in keys:
      keys.append(k)
  for seq_len, init, clip in keys:
    rs = [r for r in runs if (r["seq_len"], r["init"], r["clip"]) == (seq_len, init, clip)]
    vals = ", ".join("diverged" if r["test_mse"] is None else f"{r['test_mse']:.4f}" for r in rs)
    solved = sum(r["solved"] for r in rs)
    clip_s = f"θ={rs[0]['clip_threshold']}" if clip else "none"
    lines.append(f"| {seq_len} | {init} | {rs[0]['activation']} | {clip_s} | {vals} | "
                 f"{solved}/{len(rs)} |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] = ()) -> dict:
  cfg = parse(list(argv))
  for name in ("steps", "hidden", "batch", "test_size", "log_every"):
    if getattr(cfg, name) < 1:
      raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
  cfg.out.mkdir(parents=True, exist_ok=True)
  runs = []
  for seq_len in cfg.lengths:
    for init in cfg.inits:
      for clip in (False, True):
        for seed in cfg.seeds:
          r = train_one(cfg, init, clip, seq_len, seed)
          runs.append(r)
          print(f"T={seq_len:4d} {init:10s} clip={str(clip):5s} seed={seed} "
                f"test MSE={r['test_mse']:.4f} solved={r['solved']} ({r['wall_s']} s)", flush=True)
  config = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(cfg).items()}
  results = {"config": config, "runs": runs, "baseline_mse": adding.BASELINE_MSE,
             "command": "python scripts/adding_experiment.py " + " ".join(argv),
             "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
  results = clean(results)
  (cfg.out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
  (cfg.out / "results.md").write_text(table(results))
  print(table(results))
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
