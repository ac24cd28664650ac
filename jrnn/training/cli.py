"""``jrnn-train``: the training job (``python scripts/train.py`` runs the same ``main``).

With no arguments it trains a character-level language model on ``pydoc_data.topics`` (see
:mod:`jrnn.data.charlm`) with truncated BPTT over carried state, prints the validation bits per
character as it goes and a sample at the end. ``--task`` picks ``charlm``, ``copy``, ``sine``
or ``adding``; ``jrnn-train --help`` lists every flag.

Writes to ``--out DIR`` (default ``runs/<task>``):

* ``metrics.jsonl``: one JSON object per logged step (``step``, ``train_loss``, the validation
  metric — ``val_bpc``, ``val_accuracy``, ``val_mse`` — ``elapsed_s``, ``tokens_per_s``);
* ``checkpoint.safetensors``: params, optimiser state, carried state, PRNG key, step, data
  position and config (:mod:`jrnn.checkpoint`), every ``--ckpt-every`` steps and at the end;
* ``loss.png``: the training loss and validation metric against step.

``--resume DIR`` continues from ``DIR/checkpoint.safetensors`` with that run's config (flags
may change only ``--steps`` of a constant-rate run and the logging/output flags) and reaches
the same parameters as an uninterrupted run.

The default configuration was tuned for validation bits per character within a few CPU
minutes. The corpus is small (418k training characters), so every model over-fits it after a
few epochs; what helped most, in order: a running average of the parameters for evaluation
(``--ema``, about -0.1 bpc), two stacked Elman layers instead of one (about -0.1 bpc at the same
step count), and small batches (more updates per epoch). Weight decay and readout dropout
did not help within the budget; wider single layers (384, 512) over-fit sooner.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from jrnn.training import checkpoint, optimizers, sharding
from jrnn.training import steps as jtrain
from jrnn.init import SCHEMES, init_params, init_stacked
from jrnn.params import StackedParams
from jrnn.unroll import forward, stacked_forward

TASKS = ("charlm", "copy", "sine", "adding")
CKPT_NAME = "checkpoint.safetensors"
METRICS_NAME = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run. Defaults: the main job (char-LM in under 5 minutes)."""
  task: str = "charlm"
  hidden: int = 256
  layers: int = 2  # stacked Elman layers; 1 is the seed's single-layer RNN
  seq_len: int = 64
  batch_size: int = 16
  optimizer: str = "adam"
  lr: float = 2e-3
  clip: float = 1.0  # global gradient norm; 0 turns clipping off
  weight_decay: float = 0.0
  dropout: float = 0.0  # on the readout's input, in training only
  ema: float = 0.9995  # decay of the params' running average used to evaluate and sample; 0: off
  schedule: str = "cosine"
  warmup: int = 0
  steps: int = 6000
  seed: int = 0
  init: str = "orthogonal"
  unroll: int = 1
  log_every: int = 500
  ckpt_every: int = 2000
  sample_len: int = 400
  temperature: float = 0.8
  n_symbols: int = 8  # copy task
  copy_len: int = 10  # copy task
  delay: int = 10  # copy task
  val_batch: int = 256  # synthetic tasks: validation sequences


# Fields that may differ between a checkpoint and the run resuming it: they do not change the
# trajectory of the parameters. ``steps`` joins them only for a constant learning rate.
_FREE_ON_RESUME = ("log_every", "ckpt_every", "sample_len", "temperature")


def check_config(cfg: Config) -> None:
  """Raises ``ValueError`` naming the flag to change if ``cfg`` cannot train."""
  def flag(name):
    return "--" + name.replace("_", "-")

  def positive_int(name):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"{flag(name)} must be a positive integer, got {v!r}")

  for name in ("hidden", "layers", "seq_len", "batch_size", "steps", "unroll", "log_every", "ckpt_every",
               "val_batch"):
    positive_int(name)
  for name, choices in (("task", TASKS), ("optimizer", optimizers.OPTIMIZERS),
                        ("schedule", optimizers.SCHEDULES), ("init", SCHEMES)):
    if getattr(cfg, name) not in choices:
      raise ValueError(f"{flag(name)} must be one of {', '.join(choices)}; "
                       f"got {getattr(cfg, name)!r}")
  if not (math.isfinite(cfg.lr) and cfg.lr > 0):
    raise ValueError(f"--lr must be a positive learning rate such as 3e-3, got {cfg.lr}")
  if not (math.isfinite(cfg.clip) and cfg.clip >= 0):
    raise ValueError(f"--clip must be >= 0 (0 turns clipping off), got {cfg.clip}")
  if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
    raise ValueError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
  if not 0.0 <= cfg.ema < 1.0:
    raise ValueError(f"--ema must lie in [0, 1) (0 turns it off), got {cfg.ema}")
  if not 0.0 <= cfg.dropout < 1.0:
    raise ValueError(f"--dropout must lie in [0, 1), got {cfg.dropout}")
  if not cfg.temperature > 0:
    raise ValueError(f"--temperature must be > 0, got {cfg.temperature}")
  if cfg.sample_len < 0:
    raise ValueError(f"--sample-len must be >= 0, got {cfg.sample_len}")
  if cfg.warmup < 0 or (cfg.schedule != "constant" and cfg.warmup >= cfg.steps):
    raise ValueError(f"--warmup must be >= 0 and below --steps={cfg.steps}, got {cfg.warmup}")
  if cfg.task == "copy":
    if cfg.n_symbols < 2 or cfg.copy_len < 1 or cfg.delay < 0:
      raise ValueError("the copy task needs --n-symbols >= 2, --copy-len >= 1, --delay >= 0; "
                       f"got {cfg.n_symbols}, {cfg.copy_len}, {cfg.delay}")
  n_dev = jax.local_device_count()
  if cfg.batch_size % n_dev:
    raise ValueError(f"--batch-size={cfg.batch_size} must be divisible by the {n_dev} local "
                     "devices it is split over")


# --------------------------------------------------------------------------------------------
# Tasks: each gives the model sizes, the loss, the batches and the validation metric.


class Task(NamedTuple):
  n_in: int
  n_out: int
  loss: Callable[..., Any]
  stateful: bool  # carries the hidden state across batches (truncated BPTT over a stream)
  tokens_per_step: int
  batch: Callable[[int], Any]  # step -> Batch (host arrays)
  position: Callable[[int], Dict[str, int]]  # step -> where in the data that batch came from
  evaluate: Callable[[Any], Dict[str, float]]  # params -> validation metrics
  metric: str  # the key of evaluate's main metric
  vocab: Optional[str] = None


def _charlm_task(cfg: Config, key) -> Task:
  from jrnn.data import charlm  # pylint: disable=import-outside-toplevel
  data = charlm.load()
  v = data.vocab.size
  rows = charlm.streams(data.train, cfg.batch_size)
  n_win = charlm.num_windows(rows, cfg.seq_len)
  # Validation: 8 contiguous streams over the held-out text, each read from its start with
  # the state carried through it, in one compiled forward pass.
  val_rows = charlm.streams(data.val, 8)
  val_x = jnp.asarray(val_rows[:, :-1].T)
  val_y = jnp.asarray(val_rows[:, 1:].T)
  loss = jtrain.sequence_loss("cross_entropy", one_hot=v, unroll=cfg.unroll,
                              dropout=cfg.dropout)
  eval_loss = jax.jit(lambda p: loss(p, jtrain.Batch(val_x, val_y))[0])

  def batch(step):  # the stream is read in order; only dropout is random
    x, y = charlm.window(rows, step % n_win, cfg.seq_len)
    return jtrain.Batch(x, y, key=jax.random.fold_in(key, step) if cfg.dropout else None)

  return Task(
      n_in=v, n_out=v, loss=loss, stateful=True, tokens_per_step=cfg.seq_len * cfg.batch_size,
      batch=batch, position=lambda s: {"epoch": s // n_win, "window": s % n_win},
      evaluate=lambda p: {"val_bpc": charlm.bits_per_char(eval_loss(p))},
      metric="val_bpc", vocab=data.vocab.chars)


def _synthetic_task(cfg: Config, key, make, n_in, n_out, kind, evaluate) -> Task:
  from jrnn.data import copy_task  # pylint: disable=import-outside-toplevel
  train_key, val_key = copy_task.split_keys(key)
  val = make(val_key, cfg.val_batch)
  loss = jtrain.sequence_loss(kind, unroll=cfg.unroll, dropout=cfg.dropout)
  make_jit = jax.jit(lambda k: make(k, cfg.batch_size))
  drop_key = jax.random.fold_in(key, 1)

  def batch(step):
    k = jax.random.fold_in(train_key, step)
    return jtrain.Batch(*make_jit(k), key=jax.random.fold_in(drop_key, step)
                        if cfg.dropout else None)

  example = make(val_key, 1)
  return Task(n_in=n_in, n_out=n_out, loss=loss, stateful=False,
              tokens_per_step=example[0].shape[0] * cfg.batch_size, batch=batch,
              position=lambda s: {"batch": s},
              evaluate=lambda p: {k: float(v) for k, v in evaluate(p, val).items()},
              metric=_metric_name(kind))


def _forward(params, xs, unroll):
  run = stacked_forward if isinstance(params, StackedParams) else forward
  return run(params, xs, unroll=unroll)


def _carry_axis(cfg: Config) -> int:
  """The batch axis of the carried state: ``(B, H)``, or ``(L, B, H)`` for a stack."""
  return 0 if cfg.layers == 1 else 1


def _metric_name(kind: str) -> str:
  return "val_accuracy" if kind == "cross_entropy" else "val_mse"


def _copy_task(cfg: Config, key) -> Task:
  from jrnn.data import copy_task  # pylint: disable=import-outside-toplevel

  def make(k, b):
    return copy_task.batch(k, b, n_symbols=cfg.n_symbols, length=cfg.copy_len, delay=cfg.delay)

  @jax.jit
  def evaluate(params, val):
    ys = _forward(params, val.xs, cfg.unroll).ys
    hit = (jnp.argmax(ys, -1) == val.targets) & val.mask
    return {"val_accuracy": jnp.sum(hit) / jnp.sum(val.mask)}

  return _synthetic_task(cfg, key, make, cfg.n_symbols + 2, cfg.n_symbols, "cross_entropy",
                         evaluate)


def _sine_task(cfg: Config, key) -> Task:
  from jrnn.data import sine  # pylint: disable=import-outside-toplevel

  @jax.jit
  def evaluate(params, val):
    ys = _forward(params, val.xs, cfg.unroll).ys
    return {"val_mse": jnp.mean((ys - val.targets) ** 2)}

  return _synthetic_task(cfg, key, lambda k, b: sine.batch(k, b, cfg.seq_len), 1, 1,
                         "squared_error", evaluate)


def _adding_task(cfg: Config, key) -> Task:
  from jrnn.data import adding  # pylint: disable=import-outside-toplevel

  def make(k, b):
    xs, target = adding.batch(k, b, cfg.seq_len)[:2]
    # The answer is read at the last step only: target and mask are zero elsewhere.
    targets = jnp.zeros(xs.shape[:2] + (1,), xs.dtype).at[-1].set(target.reshape(b, 1))
    mask = jnp.zeros(xs.shape[:2], bool).at[-1].set(True)
    return xs, targets, mask

  @jax.jit
  def evaluate(params, val):
    ys = _forward(params, val[0], cfg.unroll).ys
    return {"val_mse": jnp.mean((ys[-1] - val[1][-1]) ** 2)}

  return _synthetic_task(cfg, key, make, 2, 1, "squared_error", evaluate)


def make_task(cfg: Config, key) -> Task:
  return {"charlm": _charlm_task, "copy": _copy_task, "sine": _sine_task,
          "adding": _adding_task}[cfg.task](cfg, key)


# --------------------------------------------------------------------------------------------
# State, checkpoints and the loop.


class RunState(NamedTuple):
  """Everything a checkpoint holds besides the step and config."""
  params: Any
  opt_state: Any
  carry: jax.Array  # shape=(B, H): the hidden state carried into the next batch
  key: jax.Array  # the run's base PRNG key; everything random derives from it by fold_in
  ema: Any = None  # the running average of params (with --ema), else None


def make_optimizer(cfg: Config):
  return optimizers.make_optimizer(cfg.optimizer, cfg.lr, clip_norm=cfg.clip or None,
                               schedule=cfg.schedule, total_steps=cfg.steps,
                               warmup_steps=cfg.warmup, weight_decay=cfg.weight_decay)


def initial_state(cfg: Config, task: Task, optimizer) -> RunState:
  key = jax.random.key(cfg.seed)
  if cfg.layers == 1:
    params = init_params(jax.random.fold_in(key, 0), task.n_in, cfg.hidden, task.n_out,
                         scheme=cfg.init)
    carry = jnp.zeros((cfg.batch_size, cfg.hidden), jnp.float32)
  else:
    params = init_stacked(jax.random.fold_in(key, 0), task.n_in, cfg.hidden, task.n_out,
                          num_layers=cfg.layers, scheme=cfg.init)
    carry = jnp.zeros((cfg.layers, cfg.batch_size, cfg.hidden), jnp.float32)
  ema = jax.tree_util.tree_map(jnp.copy, params) if cfg.ema else None
  return RunState(params, optimizer.init(params), carry, key, ema)


def _resume_check(cfg: Config, saved: Dict[str, Any], path: str) -> None:
  free = set(_FREE_ON_RESUME)
  if cfg.schedule == "constant" and saved.get("schedule") == "constant":
    free.add("steps")
  diffs = [f"--{k.replace('_', '-')} {saved[k]!r} (this run asks {getattr(cfg, k)!r})"
           for k in saved if k not in free and saved[k] != getattr(cfg, k, None)]
  if diffs:
    raise ValueError(f"checkpoint {path} was written by another configuration: it used "
                     + "; ".join(diffs) + ". Drop those flags to resume it, or start a new run "
                     "with a fresh --out.")


def _plot(rows: List[Dict[str, Any]], metric: str, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4))
  steps = [r["step"] for r in rows]
  ax.plot(steps, [r["train_loss"] for r in rows], label="train loss (mean per step, nats)")
  if any(metric in r for r in rows):
    ax.plot([r["step"] for r in rows if metric in r], [r[metric] for r in rows if metric in r],
            label=metric)
  ax.set_xlabel("step")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _read_rows(path: str, upto: int) -> List[Dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if r["step"] <= upto]


def run(cfg: Config, out: str, *, resume: Optional[str] = None, time_budget: Optional[float] =
        None, progress: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Trains ``cfg`` writing to ``out``; returns the last logged metrics and the final state.

  All validation happens before the first step.
  """
  check_config(cfg)
  ckpt_in = None
  if resume is not None:
    ckpt_in = os.path.join(resume, CKPT_NAME)
    meta = checkpoint.load_metadata(ckpt_in)
    _resume_check(cfg, meta["config"], ckpt_in)
  task = make_task(cfg, jax.random.fold_in(jax.random.key(cfg.seed), 1))
  optimizer = make_optimizer(cfg)
  state = initial_state(cfg, task, optimizer)
  start = 0
  if ckpt_in is not None:
    state, meta = checkpoint.load(ckpt_in, state)
    start = meta["step"]
    task = make_task(cfg, jax.random.fold_in(state.key, 1))  # randomness from the saved key
    if start > cfg.steps:
      raise ValueError(f"checkpoint {ckpt_in} is at step {start}, past --steps={cfg.steps}; "
                       "raise --steps to continue it")
  os.makedirs(out, exist_ok=True)
  metrics_path = os.path.join(out, METRICS_NAME)
  rows = _read_rows(metrics_path, start) if resume is not None else []
  with open(metrics_path, "w", encoding="utf-8") as f:  # drop rows past the checkpoint
    f.writelines(json.dumps(r) + "\n" for r in rows)

  mesh = sharding.data_mesh()
  if task.stateful:
    step_fn = jtrain.make_stream_train_step(task.loss, optimizer, mesh=mesh,
                                            carry_axis=_carry_axis(cfg))
  else:
    step_fn = jtrain.make_train_step(task.loss, optimizer, has_aux=True, mesh=mesh)
  params, opt_state, ema = sharding.replicate((state.params, state.opt_state, state.ema), mesh)
  carry = sharding.shard_batch(state.carry, mesh, batch_axis=_carry_axis(cfg))

  def save(step):
    host_state = RunState(params, opt_state, carry, state.key, ema)
    checkpoint.save(os.path.join(out, CKPT_NAME), host_state, {
        "config": dataclasses.asdict(cfg), "step": step, "data_position": task.position(step),
        "vocab": task.vocab, "metric": task.metric})

  # θ̄ ← d θ̄ + (1 - d) θ, with d ramping up from 0.1 so early averages forget the init.
  ema_update = jax.jit(lambda e, p, d: jax.tree_util.tree_map(lambda a, b: d * a + (1 - d) * b,
                                                              e, p), donate_argnums=0)
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=cfg.steps, initial=start, disable=not progress, unit="step",
             dynamic_ncols=True, file=sys.stderr)
  t0, t_log, last = time.monotonic(), time.monotonic(), {}
  losses = []
  step = start
  while step < cfg.steps:
    batch = sharding.shard_batch(task.batch(step), mesh)
    if task.stateful:
      if task.position(step)["window"] == 0:  # a new epoch: the streams restart
        carry = jnp.zeros_like(carry)
      params, opt_state, carry, m = step_fn(params, opt_state, carry, batch)
    else:
      params, opt_state, m = step_fn(params, opt_state, batch)
    losses.append(m["loss"])
    if cfg.ema:
      ema = ema_update(ema, params, jnp.asarray(min(cfg.ema, (1 + step) / (10 + step)),
                                                 jnp.float32))
    step += 1
    bar.update(1)
    if step % cfg.log_every == 0 or step == cfg.steps:
      train_loss = float(jnp.mean(jnp.stack(losses)))
      now = time.monotonic()
      row = {"step": step, "train_loss": train_loss, **task.evaluate(ema if cfg.ema else params),
             "elapsed_s": round(now - t0, 3),
             "tokens_per_s": round(len(losses) * task.tokens_per_step / (now - t_log), 1)}
      losses, t_log, last = [], time.monotonic(), row
      with open(metrics_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
      rows.append(row)
      bar.set_postfix(loss=f"{train_loss:.3f}", **{task.metric: f"{row[task.metric]:.3f}"},
                      tok_s=f"{row['tokens_per_s']:.0f}")
      if not math.isfinite(train_loss):
        bar.close()
        raise FloatingPointError(f"training diverged at step {step} (loss {train_loss}); "
                                 "lower --lr or set --clip")
      if time_budget is not None and now - t0 > time_budget:
        log(f"time budget of {time_budget:g} s reached at step {step}")
        break
    if step % cfg.ckpt_every == 0 and step < cfg.steps:
      save(step)
  bar.close()
  save(step)
  if rows:
    _plot(rows, task.metric, os.path.join(out, "loss.png"))
  elapsed = time.monotonic() - t0
  summary = {"step": step, "elapsed_s": round(elapsed, 1), **last}
  log(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()
                                   if k not in ("step",) and isinstance(v, float)))
  if task.vocab is not None and cfg.sample_len > 0:
    from jrnn.data import charlm  # pylint: disable=import-outside-toplevel
    from jrnn.training.sample import sample_tokens  # pylint: disable=import-outside-toplevel
    vocab = charlm.Vocab(task.vocab)
    prime = "The "
    tokens = sample_tokens(ema if cfg.ema else params, jax.random.fold_in(state.key, 2),
                           jnp.asarray(charlm.encode(vocab, prime)), cfg.sample_len,
                           temperature=cfg.temperature)
    summary["sample"] = prime + charlm.decode(vocab, tokens)
    log(f"sample (temperature {cfg.temperature:g}):\n{summary['sample']}")
  summary["state"] = RunState(params, opt_state, carry, state.key, ema)
  return summary


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="jrnn-train", description="Train an Elman RNN with jrnn. With no flags: the "
      "character-level language model on pydoc_data.topics, in under 5 minutes on 2 CPU "
      "cores.", argument_default=argparse.SUPPRESS,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  d = Config()
  for field in dataclasses.fields(Config):
    default = getattr(d, field.name)
    kwargs = {"type": type(default), "help": f"(default {default})"}
    if field.name in ("task", "optimizer", "schedule", "init"):
      kwargs["choices"] = {"task": TASKS, "optimizer": optimizers.OPTIMIZERS,
                           "schedule": optimizers.SCHEDULES, "init": SCHEMES}[field.name]
    p.add_argument("--" + field.name.replace("_", "-"), dest=field.name, **kwargs)
  p.add_argument("--out", help="output directory (default runs/<task>, or the --resume DIR)")
  p.add_argument("--resume", metavar="DIR", help="continue the run checkpointed in DIR")
  p.add_argument("--time-budget", type=float, metavar="SECONDS",
                 help="stop (and checkpoint) at the first log step after this many seconds")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def config_from_args(args: argparse.Namespace) -> Config:
  """Flags given override the defaults, or with ``--resume`` the checkpoint's config."""
  given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
           if hasattr(args, f.name)}
  base = dataclasses.asdict(Config())
  resume = getattr(args, "resume", None)
  if resume is not None:
    base.update(checkpoint.load_metadata(os.path.join(resume, CKPT_NAME))["config"])
  base.update(given)
  return Config(**base)


def train_from_args(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Parses ``argv`` and runs; returns :func:`run`'s summary. Bad flags exit with status 2."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    cfg = config_from_args(args)
    check_config(cfg)
  except (ValueError, TypeError, FileNotFoundError) as e:
    parser.exit(2, f"jrnn-train: error: {e}\n")
  out = getattr(args, "out", None) or getattr(args, "resume", None) or os.path.join(
      "runs", cfg.task)
  try:
    return run(cfg, out, resume=getattr(args, "resume", None),
               time_budget=getattr(args, "time_budget", None),
               progress=not getattr(args, "no_progress", False))
  except (ValueError, FileNotFoundError) as e:
    parser.exit(2, f"jrnn-train: error: {e}\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The console script ``jrnn-train``."""
  train_from_args(argv)
  return 0


if __name__ == "__main__":
  sys.exit(main())
