"""The training loop of ``jrnn-train``: :func:`run`.

:func:`run` checks everything before the first step (config, ``--out``, the checkpoint to
resume, the memory the model needs), then steps one compiled program (:func:`make_loop_step`)
over the task's batches, and syncs with the device only at log and checkpoint steps.

What a run guarantees (docs/reliability.md lists the faults tried):

* **Resume is exact.** A checkpoint holds params, optimiser state, carried state, PRNG key,
  parameter average, the step, and the per-step training losses since the last log step, so
  ``--resume`` reaches the same parameters *and* the same ``metrics.jsonl`` rows as an
  uninterrupted run (timing fields aside). A half-written last metrics line is dropped.
* **No non-finite state is kept.** The compiled step checks the loss, the gradient norm and
  the new state (:func:`jrnn.training.steps.make_train_step`'s ``guard``); from the first step
  that fails, every later step leaves the state unchanged and records that step on the device.
  At the next log or checkpoint step the loop saves that last finite state (at the step before
  the bad one) and stops with :class:`Diverged` naming the step and the flags to change. A
  non-finite validation metric stops the run too, without writing a checkpoint.
* **The test split is read once.** ``metrics.jsonl``'s ``val_*`` metric is measured on the
  task's validation split; a task with a test split (:attr:`Task.test`) is scored on it only
  when the run reaches ``--steps``, and the score goes to ``test.json`` (``{"step",
  "test_accuracy" | "test_mse"}``), never into the metrics a user chooses settings by.
* **Signals save.** SIGINT (Ctrl-C) and SIGTERM stop the loop after the step in flight; the
  state is checkpointed at that step and :func:`run` returns with ``summary["signal"]`` set
  (the CLI exits with 128 + the signal number: 130, 143). A second signal stops at once (the
  last periodic checkpoint stays intact).
* **Online gradients** (``--online rtrl|uoro|snap1``, :func:`make_online_method`): the carried
  state is then the online state of the ``B`` streams (``h`` and the influence, every leaf
  leading with ``B``). It is reset where the stream restarts, checkpointed, split over devices
  along ``B`` like the batch, and goes through the same guard; UORO's random signs come from
  ``fold_in(fold_in(key, 4), step)``, so a resumed run draws the same ones.
* **Gradient flow** (``--diagnose-every N``, :mod:`jrnn.training.flow`): every ``N`` steps the
  loop dispatches :func:`jrnn.training.flow.measure` on a probe batch fixed by the seed and goes
  on training, with the spectral radius on a host thread beside the next steps
  (:func:`jrnn.training.flow.spectral_radius_in_background`); the record is written to
  ``diagnostics.jsonl`` at the next log or checkpoint step.
  The file is truncated and resumed exactly like ``metrics.jsonl``, and the checkpoint keeps the
  clipping count since the last record, so a resumed run writes the same file.
* **Several processes** (``jax.distributed``): each feeds its columns of the global batch, the
  mesh spans every device, only process 0 writes, and processes agree at log and checkpoint
  steps on whether to stop (so a signal is acted on at the next such step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import online
from jrnn.init import init_params, init_stacked
from jrnn.params import RNNParams, StackedParams
from jrnn.training import checkpoint, distributed, flow, optimizers, report, sharding
from jrnn.training import steps as jtrain
from jrnn.training.config import (
  Config,
  changed_fields,
  check_config,
  differences,
  flag,
  from_dict,
)
from jrnn.training.tasks import Task, make_task

CKPT_NAME = "checkpoint.safetensors"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
PLOT_NAME = "loss.png"
TEST_NAME = "test.json"
SAMPLE_NAME = "sample.txt"
DIAGNOSTICS_NAME = flow.DIAGNOSTICS_NAME
RUN_FILES = (CKPT_NAME, METRICS_NAME, CONFIG_NAME)  # any of them: the directory holds a run


class RunState(NamedTuple):
  """Everything a checkpoint holds besides the step and config."""

  params: Any
  opt_state: Any
  carry: Any  # shape=(B, H) or (L, B, H): the hidden state carried into the next batch; with
  # --online the method's state of the B streams (a NamedTuple, every leaf leading with B)
  key: jax.Array  # the run's base PRNG key; everything random derives from it by fold_in
  ema: Any = None  # the running average of params (with --ema), else None


class TrainState(NamedTuple):
  """The device state one compiled loop step updates (donated each step)."""

  params: Any
  opt_state: Any
  carry: Any  # shape=(B, H) or (L, B, H), or --online's state, split over devices along B
  ema: Any  # the parameter average, or None
  first_bad: jax.Array  # shape=(), int32: the first step whose update was not finite; -1: none


class Diverged(FloatingPointError):
  """Training produced a non-finite loss, gradient, state or validation metric."""


def make_optimizer(cfg: Config):
  return optimizers.make_optimizer(
    cfg.optimizer,
    cfg.lr,
    clip_norm=cfg.clip or None,
    schedule=cfg.schedule,
    total_steps=cfg.steps,
    warmup_steps=cfg.warmup,
    weight_decay=cfg.weight_decay,
  )


def carry_axis(cfg: Config) -> int:
  """The batch axis of the carried state: ``(B, H)``, or ``(L, B, H)`` for a stack."""
  return 0 if cfg.layers == 1 else 1


ONLINE_KEY = 4  # fold_in(run key, ONLINE_KEY) seeds --online's per-step keys


def make_online_method(cfg: Config, task: Task) -> Optional[online.OnlineMethod]:
  """``--online``'s :class:`jrnn.online.OnlineMethod` (``None`` for ``--online none``).

  Its own size limit is off: :func:`check_online` applies ``--online-max-bytes`` to all the
  streams together before anything is allocated."""
  if cfg.online == "none":
    return None
  return online.online_method(
    # online_loss is a str for every task check_online lets through.
    cfg.online,
    loss=task.online_loss,  # type: ignore[arg-type]
    activation="tanh",
    max_influence_bytes=None,
  )


def _param_shapes(cfg: Config, task: Task):
  return jax.eval_shape(lambda: init_params(jax.random.key(0), task.n_in, cfg.hidden, task.n_out))


def online_state_bytes(cfg: Config, task: Task) -> int:
  """Bytes of ``--online``'s state for all ``cfg.batch_size`` streams (0 without it)."""
  method = make_online_method(cfg, task)
  if method is None:
    return 0
  return method.state_bytes(_param_shapes(cfg, task)) * cfg.batch_size


def check_online(cfg: Config, task: Task) -> None:
  """Raises ``ValueError`` naming the flag to change when ``--online`` cannot train ``task``:
  a task that does not stream, or an online state above ``--online-max-bytes`` (exact RTRL's
  influence is ``H·P`` numbers a stream, ``P = H² + H·I + H``)."""
  if cfg.online == "none":
    return
  if not task.stateful or task.online_loss is None:
    raise ValueError(
      f"--online {cfg.online} learns along a stream, and --task {cfg.task} is "
      "not one (its batches are fresh sequences, no state carries between "
      "them); use a streaming task (--task charlm) or drop --online"
    )
  need = online_state_bytes(cfg, task)
  if cfg.online_max_bytes and need > cfg.online_max_bytes:
    h, n_rec = cfg.hidden, online.num_recurrent_params(_param_shapes(cfg, task))
    cost = (
      f"exact RTRL keeps H*P = {h}*{n_rec} numbers a stream and costs O(H^2*P) = "
      f"{h * h * n_rec:.3g} multiply-adds a step; "
      if cfg.online == "rtrl"
      else ""
    )
    raise ValueError(
      f"--online {cfg.online}: the online state of {cfg.batch_size} streams needs about "
      f"{need} bytes ({need / 2**20:.1f} MiB), above --online-max-bytes={cfg.online_max_bytes}"
      f"; {cost}use --online snap1 or uoro, lower --hidden or --batch-size, or raise "
      "--online-max-bytes (0: no limit)"
    )


def initial_state(cfg: Config, task: Task, optimizer) -> RunState:
  key = jax.random.key(cfg.seed)
  dtype = jnp.dtype(cfg.dtype)
  method = make_online_method(cfg, task)
  params: Union[RNNParams, StackedParams]
  if cfg.layers == 1:
    params = init_params(
      jax.random.fold_in(key, 0),
      task.n_in,
      cfg.hidden,
      task.n_out,
      scheme=cfg.init,
      scale=cfg.init_scale or None,
      dtype=dtype,
    )
    carry = jnp.zeros((cfg.batch_size, cfg.hidden), dtype)
    if method is not None:
      carry = online.init_streams(method, params, cfg.batch_size)
  else:
    params = init_stacked(
      jax.random.fold_in(key, 0),
      task.n_in,
      cfg.hidden,
      task.n_out,
      num_layers=cfg.layers,
      scheme=cfg.init,
      scale=cfg.init_scale or None,
      dtype=dtype,
    )
    carry = jnp.zeros((cfg.layers, cfg.batch_size, cfg.hidden), dtype)
  ema = jax.tree_util.tree_map(jnp.copy, params) if cfg.ema else None
  return RunState(params, optimizer.init(params), carry, key, ema)


# --------------------------------------------------------------------------------------------
# Memory: refuse a model that cannot fit before allocating it.

_OPT_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adagrad": 1, "rmsprop": 1}


def estimate_memory(cfg: Config, task: Task, n_devices: int = 1) -> Dict[str, int]:
  """Bytes one device needs, roughly: ``state`` (params, gradient, optimiser moments, average)
  and ``activations`` (one training step on its ``B/n_devices`` sequences, and one validation
  pass), in ``cfg.dtype``."""
  h, layers, n_in, n_out = cfg.hidden, cfg.layers, task.n_in, task.n_out
  n_params = h * n_in + h * h + h + (layers - 1) * (2 * h * h + h) + n_out * h + n_out
  copies = 2 + _OPT_COPIES[cfg.optimizer] + (1 if cfg.ema else 0)  # params, gradient, …
  n_steps = task.tokens_per_step // cfg.batch_size
  width = 3 * layers * h + n_in + 2 * n_out  # per (step, sequence): states, inputs, logits
  train = n_steps * (cfg.batch_size // n_devices) * width
  evaluation = task.eval_positions * (2 * layers * h + n_in + 2 * n_out)
  # --online: the streams' state, and as much again for the step's intermediates
  size = jnp.dtype(cfg.dtype).itemsize
  state = size * copies * n_params + 2 * online_state_bytes(cfg, task) // n_devices
  return {"state": state, "activations": size * (train + evaluation)}


def available_memory() -> Optional[int]:
  """Bytes free for one device's arrays: the accelerator's limit, or the host's available
  memory (``/proc/meminfo``) on CPU; ``None`` when unknown."""
  dev = jax.local_devices()[0]
  if dev.platform != "cpu":
    stats = dev.memory_stats() or {}
    return stats.get("bytes_limit")
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024 // jax.local_device_count()
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // jax.local_device_count()
  except (ValueError, OSError, AttributeError):
    return None


def check_memory(cfg: Config, task: Task, n_devices: int) -> None:
  """Raises ``MemoryError`` naming the size in bytes and the flags to lower when the model
  cannot fit in one device's memory (:func:`estimate_memory` against
  :func:`available_memory`)."""
  need = estimate_memory(cfg, task, n_devices)
  have = available_memory()
  total = sum(need.values())
  if have is not None and total > have:
    lower = "--hidden, --layers, --batch-size or --seq-len"
    if task.vocab is None:
      lower += " (and --val-batch)"
    raise MemoryError(
      f"the model needs about {total} bytes per device ({need['state']} for parameters, "
      f"gradient and optimiser state, {need['activations']} for activations) but "
      f"{have} bytes are available; lower {lower}"
    )


# --------------------------------------------------------------------------------------------
# The compiled step.


_COMPILED: Dict[Any, Callable[..., Any]] = {}  # loop steps already built in this process


def _cached_loop_step(task: Task, optimizer, cfg: Config, mesh) -> Callable[..., Any]:
  """:func:`make_loop_step`, reused for a config that differs only where the step cannot see
  it (seed, logging, validation size, ``steps`` of a constant schedule): a process running
  several runs (a notebook, a resumed run, the tests) then compiles each step once. A task's
  loss and ``stateful`` are functions of the config alone, which is what makes this sound."""
  neutral = dataclasses.replace(
    cfg,
    seed=0,
    log_every=1,
    ckpt_every=1,
    sample_len=0,
    temperature=1.0,
    val_batch=1,
    diagnose_every=0,
  )
  if cfg.schedule == "constant":
    neutral = dataclasses.replace(neutral, steps=1)
  key = (neutral, tuple(d.id for d in mesh.devices.flat), jax.process_count())
  if key not in _COMPILED:
    while len(_COMPILED) >= 4:
      _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = make_loop_step(task, optimizer, cfg, mesh)
  return _COMPILED[key]


def make_loop_step(task: Task, optimizer, cfg: Config, mesh) -> Callable[..., Any]:
  """``loop_step(state, batch, index, decay, reset, key=None) -> (state, metrics)``, compiled
  once.

  One train step of ``task`` (guarded: see :mod:`jrnn.training.steps`), the parameter average
  ``θ̄ ← d θ̄ + (1 - d) θ`` with ``d = decay``, and the carried state zeroed first where
  ``reset`` (a new epoch of a stream). Once a step fails the guard, ``state.first_bad`` records
  its ``index`` and this and every later call return ``state`` unchanged, so the state stays
  the last finite one until the host looks.

  With ``--online`` the step is :func:`jrnn.online.make_online_train_step` over the window
  (``T = --seq-len`` steps, an update every ``--online-every``), the carried state is the
  method's state of the ``B`` streams (reset to fresh streams where ``reset``), and ``key``
  (``fold_in(run key, ONLINE_KEY)``) gives the window's key ``fold_in(key, index)``. The guard
  checks the loss, the last update's gradient norm, and the new parameters, optimiser state and
  online state.
  """
  method = make_online_method(cfg, task)
  inner: Any  # its arity differs by branch: (params, opt_state, [carry,] batch[, key])
  if method is not None:
    every = cfg.online_every or cfg.seq_len
    online_step = online.make_online_train_step(
      method, optimizer, every=every, reduction="mean", jit=False, donate=False
    )

    def online_inner(params, opt_state, carry, batch, key):
      xs = batch.xs
      if task.one_hot is not None:
        xs = jax.nn.one_hot(xs, task.one_hot, dtype=params.w_hh.dtype)
      window = online.OnlineBatch(xs, batch.targets, batch.mask)
      params, opt_state, carry, m = online_step(
        params, opt_state, carry, window, key if method.needs_key else None
      )
      ok = (
        jnp.isfinite(m["loss"])
        & jnp.isfinite(m["grad_norm"])
        & jtrain.all_finite(params)
        & jtrain.all_finite(opt_state)
        & jtrain.all_finite(carry)
      )
      return params, opt_state, carry, dict(m, ok=ok)

    inner = online_inner
  elif task.stateful:
    inner = jtrain.make_stream_train_step(task.loss, optimizer, jit=False, guard=True)
  else:
    inner = jtrain.make_train_step(task.loss, optimizer, has_aux=True, jit=False, guard=True)

  def loop_step(state: TrainState, batch, index, decay, reset, key=None):
    if method is not None:
      n_streams = jax.tree_util.tree_leaves(state.carry)[0].shape[0]
      fresh = online.init_streams(method, state.params, n_streams)
      carry = jtrain.select_tree(reset, fresh, state.carry)
      params, opt_state, carry, m = inner(
        state.params, state.opt_state, carry, batch, jax.random.fold_in(key, index)
      )
    elif task.stateful:
      carry = jnp.where(reset, jnp.zeros_like(state.carry), state.carry)
      params, opt_state, carry, m = inner(state.params, state.opt_state, carry, batch)
    else:
      params, opt_state, m = inner(state.params, state.opt_state, batch)
      carry = state.carry
    ema = state.ema
    if ema is not None:
      ema = jax.tree_util.tree_map(lambda a, b: decay * a + (1 - decay) * b, ema, params)
    healthy = state.first_bad < 0
    ok = m["ok"] & healthy
    params, opt_state, carry, ema = jtrain.select_tree(
      ok, (params, opt_state, carry, ema), state[:4]
    )
    first_bad = jnp.where(healthy & ~m["ok"], index, state.first_bad).astype(jnp.int32)
    return TrainState(params, opt_state, carry, ema, first_bad), m

  rep = sharding.replicated(mesh)
  # The state's tree of shardings, for out_shardings.
  state_sharding = TrainState(
    rep,
    rep,
    sharding.batch_sharding(mesh, carry_axis(cfg)),
    rep if cfg.ema else None,
    rep,  # type: ignore[arg-type]
  )
  return jax.jit(loop_step, donate_argnums=0, out_shardings=(state_sharding, rep))


# --------------------------------------------------------------------------------------------
# The run directory.


def _describe_run(out: str, cfg: Config) -> str:
  path = os.path.join(out, CKPT_NAME)
  if not os.path.exists(path):
    return "no checkpoint yet"
  try:
    meta = checkpoint.load_metadata(path)
  except (ValueError, OSError):
    return "its checkpoint is unreadable"
  diffs = differences(cfg, meta.get("config", {}))
  what = f"checkpoint at step {meta.get('step')}"
  return what + (f" of another configuration: {'; '.join(diffs[:3])}" if diffs else "")


def check_out(out: str, cfg: Config, *, resume: Optional[str], overwrite: bool) -> None:
  """Raises ``ValueError`` if ``out`` cannot take this run: a file, or a directory holding
  another run (unless ``overwrite``, or it is the run being resumed)."""
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out {out} is a file, not a directory; pick another --out")
  if resume is not None and os.path.realpath(out) == os.path.realpath(resume):
    return
  if overwrite or not any(os.path.exists(os.path.join(out, n)) for n in RUN_FILES):
    return
  raise ValueError(
    f"--out {out} already holds a run ({_describe_run(out, cfg)}); continue it "
    f"with --resume {out}, pick a fresh --out, or pass --overwrite to replace it"
  )


def new_run_id() -> str:
  """A run's identity (32 hex digits from ``os.urandom``): written at creation into
  ``config.json`` and every checkpoint, checked on resume. Not training randomness: it never
  reaches the parameters or the metrics."""
  return os.urandom(16).hex()


def _check_progress(path: str, meta: Dict[str, Any], resume: str) -> None:
  """Range-checks the checkpoint's ``step`` and ``pending_losses`` and checks that they agree
  with ``metrics.jsonl``: the last row at or before ``step`` is the last logged step,
  ``step - len(pending_losses)``, with the training loss the checkpoint recorded."""
  step, pending = meta.get("step"), meta.get("pending_losses", [])
  bad = f"{path} is not a usable checkpoint"
  if isinstance(step, bool) or not isinstance(step, int) or step < 0:
    raise checkpoint.CheckpointError(
      f"{bad}: its step must be an integer >= 0, got {step!r}; start a fresh run with a new --out"
    )
  if not (
    isinstance(pending, list)
    and len(pending) <= step
    and all(
      isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in pending
    )
  ):
    raise checkpoint.CheckpointError(
      f"{bad}: pending_losses must be at most step={step} finite numbers, got "
      f"{str(pending)[:80]}; start a fresh run with a new --out"
    )
  if "pending_losses" not in meta:
    return  # written before the checkpoint recorded them: nothing to compare
  metrics = os.path.join(resume, METRICS_NAME)
  rows, _ = report.read_rows(metrics, step)
  last_log = step - len(pending)
  logged, loss = (rows[-1]["step"], rows[-1].get("train_loss")) if rows else (0, None)
  recorded = meta.get("last_train_loss", loss)  # absent from checkpoints before run ids
  if logged != last_log or loss != recorded:
    if not rows:
      what = f"it has no row at or before step {step}"
    elif logged != last_log:
      what = f"its last row at or before step {step} is step {logged}"
    else:
      what = (
        f"its row at step {logged} has train_loss {loss!r}, the checkpoint recorded {recorded!r}"
      )
    raise checkpoint.CheckpointError(
      f"{path} (step {step}, last logged step {last_log}) does not match {metrics} ({what}): "
      "the checkpoint or the metrics come from another run or another point of this one; "
      "put this run's files back, or start a fresh run with a new --out"
    )


def check_resumable(cfg: Config, resume: str, *, allow_unverified: bool = False) -> Dict[str, Any]:
  """The metadata of ``resume``'s checkpoint, after checking its sha256 (first: an edited file
  is reported as such), that ``cfg`` may continue it, that its step and pending losses are in
  range and agree with ``metrics.jsonl``, and that it belongs to the run recorded in that
  directory's ``config.json`` (same config, same run id).

  A run made before run ids existed has none in either file and resumes (checksum permitting);
  from then on it carries a new one. One file with an id and the other without is refused.
  """
  path = os.path.join(resume, CKPT_NAME)
  if not os.path.exists(path) and os.path.exists(os.path.join(resume, CONFIG_NAME)):
    raise ValueError(
      f"no checkpoint at {path}: that run stopped before its first checkpoint; "
      f"start it again with --out {resume} --overwrite"
    )
  meta = checkpoint.verify(path, allow_unverified=allow_unverified)
  saved = meta.get("config")
  if not isinstance(saved, dict) or not isinstance(meta.get("step"), int):
    raise checkpoint.CheckpointError(
      f"{path} has no config or step in its metadata: it was not "
      "written by jrnn-train; start a fresh run with a new --out"
    )
  _check_progress(path, meta, resume)
  diffs = differences(cfg, saved)
  if diffs:
    raise ValueError(
      f"checkpoint {path} was written by another configuration: it used "
      + "; ".join(diffs)
      + ". Drop those flags to resume it, or start a new run "
      "with a fresh --out."
    )
  recorded = report.read_config(os.path.join(resume, CONFIG_NAME))
  if recorded:
    try:
      foreign = [
        f"{flag(k)} {saved[k]!r} in the checkpoint, {recorded.get(k)!r} in {CONFIG_NAME}"
        for k in changed_fields(from_dict(recorded), saved)
      ]
    except (TypeError, ValueError):
      foreign = [f"{CONFIG_NAME} is not a jrnn-train config"]
    if foreign:
      raise checkpoint.CheckpointError(
        f"{path} belongs to another configuration than the run in {resume} "
        f"({'; '.join(foreign[:3])}): it was copied from another run; put this run's "
        "checkpoint back, or resume the other run from its own directory"
      )
  if os.path.exists(os.path.join(resume, CONFIG_NAME)):
    ids = meta.get("run_id"), report.read_config(os.path.join(resume, CONFIG_NAME), "run_id")
    if ids[0] != ids[1]:
      raise checkpoint.CheckpointError(
        f"{path} belongs to another run than the one in {resume} (run id {ids[0]} in the "
        f"checkpoint, {ids[1]} in {CONFIG_NAME}): it was copied from another run; put this "
        "run's checkpoint back, or resume the other run from its own directory"
      )
  return meta


def _prepare_out(
  out: str,
  cfg: Config,
  rows: List[Dict[str, Any]],
  *,
  fresh: bool,
  run_id: str,
  diag_rows: Optional[List[Dict[str, Any]]] = None,
) -> None:
  os.makedirs(out, exist_ok=True)
  if fresh:  # --overwrite: no file of the old run may outlive the new run's start
    for name in RUN_FILES + (PLOT_NAME, DIAGNOSTICS_NAME):
      if os.path.exists(os.path.join(out, name)):
        os.remove(os.path.join(out, name))
  report.write_config(os.path.join(out, CONFIG_NAME), dataclasses.asdict(cfg), run_id=run_id)
  report.write_rows(os.path.join(out, METRICS_NAME), rows)  # drops rows past the checkpoint
  if diag_rows is not None:  # the same for the gradient-flow records
    report.write_rows(os.path.join(out, DIAGNOSTICS_NAME), diag_rows)
  for name in (TEST_NAME, SAMPLE_NAME):  # fresh or resumed: scored and sampled anew
    if os.path.exists(os.path.join(out, name)):
      os.remove(os.path.join(out, name))


class Signals:
  """Records SIGINT/SIGTERM while a loop runs (main thread only; ``enabled=False``: nothing);
  a second signal raises KeyboardInterrupt. Used as ``with Signals(True) as s: ... s.caught``."""

  def __init__(self, enabled: bool):
    self.enabled = enabled and threading.current_thread() is threading.main_thread()
    self.caught: Optional[int] = None
    self._old: Dict[int, Any] = {}

  def _handle(self, signum, frame):
    del frame
    if self.caught is not None:
      raise KeyboardInterrupt
    self.caught = signum

  def __enter__(self):
    if self.enabled:
      for s in (signal.SIGINT, signal.SIGTERM):
        self._old[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._old.items():
      signal.signal(s, handler)
    return False


# --------------------------------------------------------------------------------------------
# The run.


def run(
  cfg: Config,
  out: str,
  *,
  resume: Optional[str] = None,
  overwrite: bool = False,
  time_budget: Optional[float] = None,
  progress: bool = True,
  log: Callable[[str], None] = print,
  handle_signals: bool = True,
  allow_unverified: bool = False,
) -> Dict[str, Any]:
  """Trains ``cfg`` writing to ``out``; returns the last logged metrics and the final state.

  Args:
    cfg: the run's configuration (with ``resume``: one :func:`check_resumable` accepts).
    out: the run directory; it must not hold another run unless ``overwrite``.
    resume: a run directory to continue from its checkpoint.
    overwrite: replace a run already in ``out``.
    time_budget: stop (and checkpoint) at the first log step after this many seconds.
    progress: show a progress bar (process 0 only).
    log: where messages go (process 0 only).
    handle_signals: catch SIGINT and SIGTERM to checkpoint and stop (main thread only).
    allow_unverified: resume from a checkpoint without a sha256.

  Returns:
    ``{"step", "elapsed_s", <the last metrics row>, "sample"?, "signal"?, "state"}``.

  Raises:
    ValueError, MemoryError, OSError, CheckpointError: before the first step, naming the flag
      or file to change. :class:`Diverged`: when training stops on a non-finite value.
  """
  writer = distributed.is_writer()
  say = log if writer else (lambda _: None)
  n_devices = jax.device_count()
  check_config(cfg, n_devices)
  if cfg.dtype == "float64" and not jax.config.read("jax_enable_x64"):
    raise ValueError(
      "--dtype float64 needs JAX's 64-bit mode: jax.config.update('jax_enable_x64', True) "
      "before any array is made (jrnn-train does this itself)"
    )
  if resume is not None:
    check_resumable(cfg, resume, allow_unverified=allow_unverified)
  check_out(out, cfg, resume=resume, overwrite=overwrite)
  task = make_task(cfg, jax.random.fold_in(jax.random.key(cfg.seed), 1))
  check_online(cfg, task)
  check_memory(cfg, task, n_devices)
  optimizer = make_optimizer(cfg)
  state = initial_state(cfg, task, optimizer)
  rows: List[Dict[str, Any]]
  start, pending, rows, run_id = 0, [], [], new_run_id()
  diag_rows: Optional[List[Dict[str, Any]]] = [] if cfg.diagnose_every else None
  clip_carry = (0, 0)  # (clipped, steps) since the last gradient-flow record, from a checkpoint
  if resume is not None:
    ckpt_in = os.path.join(resume, CKPT_NAME)
    state, meta = checkpoint.load(ckpt_in, state, allow_unverified=allow_unverified)
    run_id = meta.get("run_id") or run_id  # the same run; one made before run ids gets one
    start = meta["step"]
    pending = [np.asarray(x, cfg.dtype) for x in meta.get("pending_losses", [])]
    task = make_task(cfg, jax.random.fold_in(state.key, 1))  # randomness from the saved key
    if start > cfg.steps:
      raise ValueError(
        f"checkpoint {ckpt_in} is at step {start}, past --steps={cfg.steps}; "
        "raise --steps to continue it"
      )
    rows, torn = report.read_rows(os.path.join(resume, METRICS_NAME), start)
    if torn:
      say(f"{os.path.join(resume, METRICS_NAME)}: dropped a half-written last line")
    diag_in = os.path.join(resume, DIAGNOSTICS_NAME)
    if cfg.diagnose_every or os.path.exists(diag_in):
      diag_rows, torn = report.read_rows(diag_in, start)
      if torn:
        say(f"{diag_in}: dropped a half-written last line")
    saved_clip = meta.get("diagnose_clip", (0, 0))
    clip_carry = (int(saved_clip[0]), int(saved_clip[1]))
  # Every check is done: only now does anything get written (by process 0; all agree first).
  error = None
  if writer:
    try:
      _prepare_out(
        out,
        cfg,
        rows,
        fresh=resume is None or os.path.realpath(out) != os.path.realpath(resume),
        run_id=run_id,
        diag_rows=diag_rows,
      )
    except OSError as e:
      error = e
  if distributed.agree(error is not None):
    raise error if error is not None else OSError(f"process 0 could not write to --out {out}")
  ckpt_path, metrics_path = os.path.join(out, CKPT_NAME), os.path.join(out, METRICS_NAME)
  diag_path = os.path.join(out, DIAGNOSTICS_NAME)

  mesh = sharding.data_mesh()
  axis = carry_axis(cfg)
  loop_step = _cached_loop_step(task, optimizer, cfg, mesh)
  params, opt_state, ema = sharding.replicate((state.params, state.opt_state, state.ema), mesh)
  carry = sharding.shard_batch(distributed.local_columns(state.carry, axis), mesh, batch_axis=axis)
  train = TrainState(params, opt_state, carry, ema, sharding.replicate(np.int32(-1), mesh))
  # --online's keys: fold_in(online_key, step) for the window of that step (UORO's signs).
  online_key = (
    sharding.replicate(jax.random.fold_in(state.key, ONLINE_KEY), mesh)
    if cfg.online != "none"
    else None
  )

  # Gradient flow (--diagnose-every): a record is dispatched at its step and written at the
  # next log or checkpoint step, where the loop syncs with the device anyway. Its program is
  # compiled on a thread of its own from here on, while the train step compiles and runs.
  flow_probe = flow_key = flow_program = None
  flow_lags: tuple = ()
  flow_names: List[str] = []
  if cfg.diagnose_every:
    flow_probe = sharding.replicate(flow.probe_batch(task.batch(0), one_hot=task.one_hot), mesh)
    flow_key = sharding.replicate(jax.random.fold_in(state.key, flow.FLOW_KEY), mesh)
    flow_lags = flow.log_lags(int(flow_probe.xs.shape[0]))
    flow_names = flow.parameter_names(state.params)
    flow_program = flow.compile_in_background(
      train.params,
      flow_probe,
      flow_key,
      lags=flow_lags,
      loss_kind=task.loss_kind,
      spectral_radius=False,  # the eigenvalues run on a host thread: spectral_radius_in_background
    )
  # (step, measured, future of the spectral radii, grad norms of the steps it covers)
  flow_pending: List[Any] = []
  grad_norms: Dict[int, Any] = {}  # step -> gradient norm, since the last record

  def clip_count(norms: List[Any]) -> int:
    return int(sum(float(np.asarray(x)) > cfg.clip for x in norms)) if cfg.clip else 0

  def flush_flow(upto: int) -> None:
    """Writes the records of steps ``<= upto``; later ones (a frozen diverged state) go."""
    nonlocal clip_carry
    done = [r for r in flow_pending if r[0] <= upto]
    flow_pending.clear()
    for rec_step, measured, radius, norms in done:
      host = {**distributed.to_host(measured), "spectral_radius": radius.result()}
      clipped, n = clip_count(norms) + clip_carry[0], len(norms) + clip_carry[1]
      clip_carry = (0, 0)
      row = flow.to_row(
        rec_step,
        host,
        flow_lags,
        flow_names,
        clip_fraction=clipped / n if cfg.clip and n else None,
        clip_steps=n,
      )
      if writer:
        report.append_row(diag_path, row)

  def save(step: int, losses_pending: List[Any]) -> None:
    flush_flow(step)
    since = [v for s, v in grad_norms.items() if s <= step]
    clip_meta = [clip_count(since) + clip_carry[0], len(since) + clip_carry[1]]
    host = distributed.to_host(train[:4])  # every process takes part; process 0 writes
    if writer:
      checkpoint.save(
        ckpt_path,
        RunState(host[0], host[1], host[2], state.key, host[3]),
        {
          "config": dataclasses.asdict(cfg),
          "step": step,
          "data_position": task.position(step),
          "vocab": task.vocab,
          "metric": task.metric,
          "pending_losses": [float(x) for x in losses_pending],
          "run_id": run_id,
          "last_train_loss": rows[-1]["train_loss"] if rows else None,
          "diagnose_clip": clip_meta,
        },
      )

  def stop_if_diverged() -> None:
    bad = int(np.asarray(train.first_bad))
    if bad < 0:
      return
    # Steps bad, bad + 1, … left the state alone: it is the state after `bad` steps.
    save(bad, losses[: bad - log_start])
    m = recent[bad]
    loss, norm = float(np.asarray(m["loss"])), float(np.asarray(m["grad_norm"]))
    what = (
      f"loss {loss:g}, gradient norm {norm:g}"
      if not (math.isfinite(loss) and math.isfinite(norm))
      else f"the update overflowed (loss {loss:g}, gradient norm {norm:g})"
    )
    raise Diverged(
      f"training diverged at step {bad + 1}: {what}; the last finite state (step "
      f"{bad}) is saved in {ckpt_path}. Lower --lr (now {cfg.lr:g}) or set a "
      f"smaller --clip (now {cfg.clip:g}; 0 is off), and start again with a fresh "
      "--out"
    )

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  bar = tqdm(
    total=cfg.steps,
    initial=start,
    disable=not (progress and writer),
    unit="step",
    dynamic_ncols=True,
    file=sys.stderr,
  )
  t0 = t_log = time.monotonic()
  losses, log_start, n_timed = pending, start - len(pending), 0  # losses since the last log
  recent: Dict[int, Any] = {}  # step -> metrics, since the last log, for Diverged's message
  last: Dict[str, Any] = {}
  stopped_by = None
  step = start
  with Signals(handle_signals) as signals, bar:
    while step < cfg.steps:
      batch = sharding.shard_batch(distributed.local_columns(task.batch(step)), mesh)
      reset = task.stateful and task.position(step)["window"] == 0  # the streams restart
      decay = min(cfg.ema, (1 + step) / (10 + step)) if cfg.ema else 0.0  # forgets the init
      train, m = loop_step(
        train, batch, np.int32(step), np.asarray(decay, cfg.dtype), np.bool_(reset), online_key
      )
      losses.append(m["loss"])
      recent[step] = m
      step += 1
      if cfg.diagnose_every:
        grad_norms[step] = m["grad_norm"]
        if step % cfg.diagnose_every == 0:
          assert flow_program is not None
          measured = flow_program.result()(train.params, flow_probe, flow_key)
          radius = flow.spectral_radius_in_background(measured.pop("w_hh"))
          flow_pending.append((step, measured, radius, list(grad_norms.values())))
          grad_norms.clear()
      n_timed += 1
      bar.update(1)
      log_now = step % cfg.log_every == 0 or step == cfg.steps
      ckpt_now = step % cfg.ckpt_every == 0 and step < cfg.steps
      # A signal stops the run after this step; at a log step, after its row is written (else
      # the row is lost and the resumed run's next row averages twice the steps).
      caught = signals.caught is not None and jax.process_count() == 1
      if caught and not log_now:
        stopped_by = signals.caught
        break
      if not (log_now or ckpt_now):
        continue
      stop_if_diverged()  # every process reaches this line at the same step
      if log_now:
        train_loss = float(jnp.mean(jnp.stack(losses)))
        now = time.monotonic()
        values = (
          task.evaluate(distributed.to_host(train.ema if cfg.ema else train.params))
          if writer
          else {}
        )
        bad_value = [f"{k} {v}" for k, v in values.items() if not math.isfinite(v)]
        if distributed.agree(bool(bad_value)):
          what = ", ".join(bad_value) or "see process 0"
          raise Diverged(
            f"validation diverged at step {step}: {what}; the checkpoint on disk "
            f"is the last good one. Lower --lr (now {cfg.lr:g}) or set a smaller "
            f"--clip (now {cfg.clip:g}), and start again with a fresh --out"
          )
        row = {
          "step": step,
          "train_loss": train_loss,
          **values,
          "elapsed_s": round(now - t0, 3),
          "tokens_per_s": round(n_timed * task.tokens_per_step / (now - t_log), 1),
        }
        losses, log_start, n_timed, recent, t_log, last = [], step, 0, {}, time.monotonic(), row
        flush_flow(step)
        if writer:
          report.append_row(metrics_path, row)
          rows.append(row)
          bar.set_postfix(
            loss=f"{train_loss:.3f}",
            **{task.metric: f"{row[task.metric]:.3f}"},
            tok_s=f"{row['tokens_per_s']:.0f}",
          )
        if caught:
          stopped_by = signals.caught
          break
        if time_budget is not None and distributed.agree(now - t0 > time_budget):
          say(f"time budget of {time_budget:g} s reached at step {step}")
          break
      if ckpt_now:
        save(step, losses)
      if jax.process_count() > 1 and distributed.agree(signals.caught is not None):
        stopped_by = signals.caught or signal.SIGTERM
        break
    bar.close()  # before the messages below
    stop_if_diverged()
    save(step, losses)
  if writer and rows:
    report.plot(rows, task.metric, os.path.join(out, PLOT_NAME))
  summary = {"step": step, "elapsed_s": round(time.monotonic() - t0, 1), **last}
  say(
    f"step {step}: "
    + ", ".join(
      f"{k} {v:.4g}" for k, v in last.items() if k not in ("step",) and isinstance(v, float)
    )
  )
  final = RunState(train.params, train.opt_state, train.carry, state.key, train.ema)
  if stopped_by is not None:
    name = signal.Signals(stopped_by).name
    say(
      f"{name}: stopped at step {step} of {cfg.steps}; checkpoint saved to {ckpt_path}. "
      f"Continue with: jrnn-train --resume {out}"
    )
    return dict(summary, signal=int(stopped_by), state=final)
  if writer and task.test is not None and step == cfg.steps:
    summary["test"] = {
      "step": step,
      **task.test(distributed.to_host(final.ema if cfg.ema else final.params)),
    }
    report.write_atomically(os.path.join(out, TEST_NAME), json.dumps(summary["test"]) + "\n")
    say(
      "test split (read once, at the end): "
      + ", ".join(f"{k} {v:.4g}" for k, v in summary["test"].items() if k != "step")
    )
  if writer and task.vocab is not None and cfg.sample_len > 0:
    from jrnn.data import charlm  # pylint: disable=import-outside-toplevel
    from jrnn.training.sample import sample_tokens  # pylint: disable=import-outside-toplevel

    vocab = charlm.Vocab(task.vocab)
    prime = "The "
    tokens = sample_tokens(
      distributed.to_host(final.ema if cfg.ema else final.params),
      jax.random.fold_in(state.key, 2),
      jnp.asarray(charlm.encode(vocab, prime)),
      cfg.sample_len,
      temperature=cfg.temperature,
    )
    summary["sample"] = prime + charlm.decode(vocab, tokens)
    report.write_atomically(os.path.join(out, SAMPLE_NAME), summary["sample"])
    say(f"sample (temperature {cfg.temperature:g}):\n{summary['sample']}")
  summary["state"] = final
  return summary


__all__ = (
  "CKPT_NAME",
  "CONFIG_NAME",
  "DIAGNOSTICS_NAME",
  "Diverged",
  "METRICS_NAME",
  "RunState",
  "SAMPLE_NAME",
  "Signals",
  "TEST_NAME",
  "TrainState",
  "check_memory",
  "check_online",
  "check_out",
  "check_resumable",
  "estimate_memory",
  "initial_state",
  "make_loop_step",
  "make_online_method",
  "make_optimizer",
  "new_run_id",
  "online_state_bytes",
  "run",
)
