"""``jrnn-train --sweep``: a whole sweep of a task trained as one compiled program, with its
table, metrics, plot and checkpoint (:func:`run_sweep`).

Member ``n`` of the grid is the :class:`jrnn.training.config.Config` ``replace(cfg, **member)``
and trains exactly as ``jrnn-train`` would train that config alone: the same initial parameters
(:func:`jrnn.training.loop.initial_state`), the same batches (``Task.draw`` with the member's
task key ``fold_in(key(seed), 1)``), the same optimiser and guard, the same parameter average,
and it is evaluated on its own validation split. Only the matrix products are batched over
members, so a member's numbers agree with its single run to float rounding (see
:mod:`jrnn.training.sweep`).

What the sweep writes into ``--out``:

* ``sweep.json``: the config, the axes and, per member, its values, final ``train_loss`` and
  validation metric, and ``diverged_at`` (the step whose update was non-finite, or ``null``);
* ``sweep.md``: the same as a Markdown table, one row per member;
* ``sweep_metrics.jsonl``: one row per member and logged step (``member``, ``step``,
  ``train_loss``, the validation metric; ``null`` where a value is not finite);
* ``sweep.png``: every member's training loss and validation metric against step, one colour
  per member;
* ``sweep_checkpoint.safetensors``: the whole sweep's state
  (:class:`jrnn.training.sweep.SweepState`) at the first log step past each multiple of
  ``--ckpt-every``, and at the end;
  ``jrnn-train --resume DIR`` continues it and reaches the same numbers as an uninterrupted
  sweep. SIGINT, SIGTERM and ``--time-budget`` stop the sweep at the next log step, checkpointed
  (exit status 130 or 143 after a signal).

A diverging member never stops the sweep: it keeps its last finite state, its rows carry
``diverged_at``, and its training loss is ``null`` from then on. The test split is not read:
a sweep is how a setting is chosen (by the validation metric); score the chosen member alone
with ``jrnn-train`` and its values.

Not swept (yet): the streaming char-LM (``--task charlm``, whose batches carry state), the
online methods, and several processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.training import checkpoint, report
from jrnn.training import sweep as jsweep
from jrnn.training.config import Config, check_config, differences, from_dict
from jrnn.training.loop import Signals, initial_state
from jrnn.training.loop import make_optimizer as make_single_optimizer
from jrnn.training.seeds import take_seed
from jrnn.training.tasks import Task, make_task

SWEEP_CKPT = "sweep_checkpoint.safetensors"
SWEEP_JSON = "sweep.json"
SWEEP_TABLE = "sweep.md"
SWEEP_METRICS = "sweep_metrics.jsonl"
SWEEP_PLOT = "sweep.png"
SWEEP_FILES = (SWEEP_CKPT, SWEEP_JSON, SWEEP_METRICS)
# Any of these in --out: it holds a single run, which a sweep must not mix with.
_RUN_FILES = ("checkpoint.safetensors", "metrics.jsonl", "config.json")


def member_config(cfg: Config, member: Mapping[str, Any]) -> Config:
  """The single-run config of one member: ``cfg`` with the member's axis values."""
  return dataclasses.replace(cfg, **dict(member))


def sweep_members(cfg: Config, axes: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
  """The grid of ``axes`` with the unswept axes at ``cfg``'s values; every member's config is
  checked (:func:`jrnn.training.config.check_config`), so a bad value names its member."""
  base = {k: getattr(cfg, k) for k in jsweep.SWEEP_AXES}
  members = jsweep.sweep_grid(axes, base)
  for n, m in enumerate(members):
    try:
      check_config(member_config(cfg, m))
    except ValueError as e:
      raise ValueError(f"--sweep member {n} ({_describe(m, axes)}): {e}") from None
  return members


def _describe(member: Mapping[str, Any], axes: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={member[k]!r}" for k in axes)


def _clean(x: Any) -> Optional[float]:
  x = float(x)
  return x if math.isfinite(x) else None


def check_sweep_config(cfg: Config, task: Task) -> None:
  """Raises ``ValueError`` naming the flag when ``cfg`` cannot be swept."""
  if task.draw is None or task.stateful:
    raise ValueError(
      f"--sweep trains tasks whose batches are fresh sequences (adding, copy, sine, "
      f"mnist1d); --task {cfg.task} carries state across batches and cannot be swept yet"
    )
  if cfg.online != "none":
    raise ValueError(f"--sweep trains with BPTT; drop --online {cfg.online}")
  if cfg.dtype != "float32":
    raise ValueError(f"--sweep trains in float32; drop --dtype {cfg.dtype}")
  if jax.process_count() > 1:
    raise ValueError("--sweep runs in one process; drop --coordinator/--distributed")


def _check_out(out: str, *, resume: Optional[str], overwrite: bool) -> None:
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out {out} is a file, not a directory; pick another --out")
  if resume is not None and os.path.realpath(out) == os.path.realpath(resume):
    return
  held = [n for n in SWEEP_FILES + _RUN_FILES if os.path.exists(os.path.join(out, n))]
  if held and not overwrite:
    what = "a sweep" if any(n in SWEEP_FILES for n in held) else "a run"
    raise ValueError(
      f"--out {out} already holds {what} ({', '.join(held)}); continue it with "
      f"--resume {out}, pick a fresh --out, or pass --overwrite to replace it"
    )


def saved_sweep(resume: str, *, allow_unverified: bool = False) -> Dict[str, Any]:
  """The verified metadata of the sweep checkpointed in ``resume`` (its ``config``, ``axes``,
  ``step``, ``run_id``)."""
  path = os.path.join(resume, SWEEP_CKPT)
  meta = checkpoint.verify(path, allow_unverified=allow_unverified)
  if not (
    isinstance(meta.get("config"), dict)
    and isinstance(meta.get("axes"), dict)
    and isinstance(meta.get("step"), int)
  ):
    raise checkpoint.CheckpointError(
      f"{path} has no config, axes or step in its metadata: it was not written by "
      "jrnn-train --sweep; start a fresh sweep with a new --out"
    )
  return meta


def is_sweep_dir(path: str) -> bool:
  """Whether ``path`` holds a sweep's checkpoint (so ``--resume path`` continues a sweep)."""
  return os.path.isfile(os.path.join(path, SWEEP_CKPT))


def _decays(cfg: Config, start: int, steps: int) -> Optional[np.ndarray]:
  """The parameter average's decay at steps ``start … start+steps-1``, as the loop computes it
  (host float64, then float32)."""
  if not cfg.ema:
    return None
  return np.asarray(
    [np.float32(min(cfg.ema, (1 + s) / (10 + s))) for s in range(start, start + steps)],
    np.float32,
  )


def _boundaries(cfg: Config, start: int) -> List[int]:
  """The steps after ``start`` where a chunk ends: every log step and the last step."""
  ends = set(range(cfg.log_every, cfg.steps, cfg.log_every)) | {cfg.steps}
  return sorted(s for s in ends if s > start)


def write_table(path: str, cfg: Config, axes: Mapping[str, Any], summary: List[Dict[str, Any]]):
  """``sweep.md``: one row per member (its axis values, final loss and metric, divergence)."""
  metric = summary[0]["metric"] if summary else "val"
  head = ["member", *axes, "train_loss", metric, "diverged_at"]
  lines = [
    f"# Sweep of `--task {cfg.task}`: {len(summary)} members, {cfg.steps} steps",
    "",
    "| " + " | ".join(head) + " |",
    "|" + "---|" * len(head),
  ]
  for row in summary:
    cells = [str(row["member"]), *(f"{row[k]:g}" for k in axes)]
    for key in ("train_loss", metric):
      cells.append("n/a" if row.get(key) is None else f"{row[key]:.5g}")
    cells.append("" if row["diverged_at"] is None else str(row["diverged_at"]))
    lines.append("| " + " | ".join(cells) + " |")
  report.write_atomically(path, "\n".join(lines) + "\n")


def plot_sweep(
  rows: List[Dict[str, Any]], members: Sequence[Mapping[str, Any]], axes, metric: str, path: str
) -> None:
  """``sweep.png``: the training loss and ``metric`` of every member against step."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 4.5))
  FigureCanvasAgg(fig)
  ax_loss, ax_metric = fig.subplots(1, 2)
  colours = [f"C{n % 10}" for n in range(len(members))]
  styles = ["-", "--", ":", "-."]
  for n, m in enumerate(members):
    mine = [r for r in rows if r["member"] == n]
    style = dict(
      color=colours[n], linestyle=styles[(n // 10) % 4], label=f"{n}: " + _describe(m, axes)
    )
    ax_loss.plot(
      [r["step"] for r in mine],
      [np.nan if r["train_loss"] is None else r["train_loss"] for r in mine],
      **style,
    )
    ax_metric.plot(
      [r["step"] for r in mine],
      [np.nan if r.get(metric) is None else r[metric] for r in mine],
      **style,
    )
  ax_loss.set_ylabel("train loss (mean per step)")
  ax_metric.set_ylabel(metric)
  for ax in (ax_loss, ax_metric):
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  ax_metric.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.tight_layout()
  fig.savefig(path + ".tmp", dpi=100, format="png")
  os.replace(path + ".tmp", path)


def run_sweep(
  cfg: Config,
  axes: Mapping[str, Sequence[Any]],
  out: str,
  *,
  resume: Optional[str] = None,
  overwrite: bool = False,
  time_budget: Optional[float] = None,
  log: Callable[[str], None] = print,
  allow_unverified: bool = False,
  handle_signals: bool = True,
) -> Dict[str, Any]:
  """Trains every member of ``axes`` (:func:`jrnn.training.sweep.parse_sweep`) around ``cfg``
  as one compiled program, writing into ``out`` (see the module docstring).

  Args:
    cfg: the shared configuration (the members override its swept fields).
    axes: ``{axis: values}``.
    out: the sweep's directory; one holding a run or a sweep is refused unless ``overwrite``.
    resume: a directory whose sweep checkpoint to continue (``cfg`` and ``axes`` must equal the
      saved ones; ``--log-every``, ``--ckpt-every`` may change).
    overwrite: replace what ``out`` holds.
    time_budget: stop (and checkpoint) at the first log step after this many seconds.
    log: where messages go.
    allow_unverified: resume from a checkpoint without a sha256.
    handle_signals: on SIGINT or SIGTERM (main thread), finish the chunk in flight (up to the
      next log step), checkpoint there and return with ``"signal"`` set; a second signal
      stops at once (the last checkpoint stays intact).

  Returns:
    ``{"step", "members": [per-member summary], "state": SweepState, "stopped": bool,
    "signal"?: int}``.
  """
  check_config(cfg)
  members = sweep_members(cfg, axes)
  start, run_id, meta = 0, os.urandom(16).hex(), None
  if resume is not None:
    meta = saved_sweep(resume, allow_unverified=allow_unverified)
    diffs = differences(cfg, meta["config"])
    if diffs:
      raise ValueError(
        f"the sweep in {resume} used another configuration: "
        + "; ".join(diffs)
        + "; drop those flags to resume it, or start a fresh sweep with a new --out"
      )
    if meta["axes"] != {k: list(v) for k, v in axes.items()}:
      raise ValueError(
        f"the sweep in {resume} has --sweep {jsweep.format_sweep(meta['axes'])!r}, this one "
        f"{jsweep.format_sweep(axes)!r}; resume it with its own spec (or none)"
      )
    start, run_id = meta["step"], meta.get("run_id") or run_id
    if start > cfg.steps:
      raise ValueError(f"the sweep in {resume} is at step {start}, past --steps={cfg.steps}")
  _check_out(out, resume=resume, overwrite=overwrite)

  seeds = sorted({m["seed"] for m in members})
  tasks = {s: make_task(member_config(cfg, {"seed": s}), _task_key(s)) for s in seeds}
  task = tasks[seeds[0]]
  check_sweep_config(cfg, task)
  draw: Callable[..., Any] = task.draw  # type: ignore[assignment]  # checked above
  optimizer = jsweep.sweep_optimizer(
    cfg.optimizer,
    schedule=cfg.schedule,
    total_steps=cfg.steps,
    warmup_steps=cfg.warmup,
  )

  def init_fn(member):
    mcfg = member_config(cfg, member)
    return initial_state(mcfg, tasks[mcfg.seed], make_single_optimizer(mcfg)).params

  data_keys = jnp.stack([_task_key(m["seed"]) for m in members])
  state = jsweep.init_sweep(members, init_fn, optimizer, data_keys, ema=bool(cfg.ema))
  rows: List[Dict[str, Any]] = []
  if resume is not None:
    state, _ = checkpoint.load(
      os.path.join(resume, SWEEP_CKPT), state, allow_unverified=allow_unverified
    )
    rows, _ = report.read_rows(os.path.join(resume, SWEEP_METRICS), start)

  os.makedirs(out, exist_ok=True)
  if resume is None or os.path.realpath(out) != os.path.realpath(resume):
    for name in SWEEP_FILES + (SWEEP_TABLE, SWEEP_PLOT):
      if os.path.exists(os.path.join(out, name)):
        os.remove(os.path.join(out, name))
  metrics_path = os.path.join(out, SWEEP_METRICS)
  report.write_rows(metrics_path, rows)

  def save(step: int, state: jsweep.SweepState) -> None:
    checkpoint.save(
      os.path.join(out, SWEEP_CKPT),
      state,
      {
        "config": dataclasses.asdict(cfg),
        "axes": {k: list(v) for k, v in axes.items()},
        "members": members,
        "step": step,
        "run_id": run_id,
      },
    )

  chunks: Dict[int, Callable[..., Any]] = {}
  step, t0, stopped, last_ckpt = start, time.monotonic(), False, start
  with Signals(handle_signals) as signals:
    log(f"sweep: {len(members)} members of --task {cfg.task}, steps {start}..{cfg.steps}")
    for end in _boundaries(cfg, start):
      n = end - step
      if n not in chunks:
        chunks[n] = jsweep.make_sweep_chunk(task.loss, optimizer, draw, steps=n, has_aux=True)
      state, metrics = chunks[n](state, step, _decays(cfg, step, n))
      losses = np.asarray(metrics["loss"])
      step = end
      bad = np.asarray(state.diverged_at)
      evaluated = state.ema if cfg.ema else state.params
      for i, m in enumerate(members):
        values = tasks[m["seed"]].evaluate(take_seed(evaluated, i))
        diverged = int(bad[i]) if bad[i] >= 0 else None
        row = {
          "member": i,
          "step": step,
          "train_loss": None if diverged is not None else _clean(jnp.mean(jnp.asarray(losses[i]))),
          **{k: _clean(v) for k, v in values.items()},
          "diverged_at": diverged,
        }
        rows.append(row)
        report.append_row(metrics_path, row)
      if step // cfg.ckpt_every > last_ckpt // cfg.ckpt_every or step == cfg.steps:
        save(step, state)
        last_ckpt = step
      over = time_budget is not None and time.monotonic() - t0 > time_budget
      if (over or signals.caught is not None) and step < cfg.steps:
        save(step, state)
        why = (
          f"time budget of {time_budget:g} s reached"
          if signals.caught is None
          else signal.Signals(signals.caught).name
        )
        log(f"{why}: stopped at step {step}; continue with --resume {out}")
        stopped = True
        break
  summary = _summaries(members, axes, rows, state, task.metric)
  result = {
    "config": dataclasses.asdict(cfg),
    "axes": {k: list(v) for k, v in axes.items()},
    "step": step,
    "steps": cfg.steps,
    "metric": task.metric,
    "members": summary,
  }
  report.write_atomically(os.path.join(out, SWEEP_JSON), json.dumps(result, indent=1) + "\n")
  write_table(os.path.join(out, SWEEP_TABLE), cfg, axes, summary)
  plot_sweep(rows, members, axes, task.metric, os.path.join(out, SWEEP_PLOT))
  n_bad = sum(r["diverged_at"] is not None for r in summary)
  log(
    f"sweep at step {step}: {len(members)} members, {n_bad} diverged; "
    f"table in {os.path.join(out, SWEEP_TABLE)}"
  )
  returned = {"step": step, "members": summary, "state": state, "stopped": stopped}
  if signals.caught is not None:
    returned["signal"] = int(signals.caught)
  return returned


def _task_key(seed: int) -> jax.Array:
  """The task key a single run of ``seed`` builds its task from (``loop.run``'s)."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def _summaries(members, axes, rows, state, metric) -> List[Dict[str, Any]]:
  bad = np.asarray(state.diverged_at)
  out = []
  for i, m in enumerate(members):
    mine = [r for r in rows if r["member"] == i]
    last = mine[-1] if mine else {}
    out.append(
      {
        "member": i,
        **m,
        "metric": metric,
        "train_loss": last.get("train_loss"),
        metric: last.get(metric),
        "diverged_at": int(bad[i]) if bad[i] >= 0 else None,
      }
    )
  return out


def resume_config(resume: str, given: Mapping[str, Any], *, allow_unverified: bool = False):
  """``(cfg, axes)`` to continue the sweep in ``resume``: its saved config with the flags in
  ``given`` applied (a :class:`Config` field that may not change is refused by
  :func:`run_sweep`)."""
  meta = saved_sweep(resume, allow_unverified=allow_unverified)
  values = dict(meta["config"])
  values.update(given)
  return from_dict(values), meta["axes"]


__all__ = (
  "SWEEP_CKPT",
  "SWEEP_JSON",
  "SWEEP_METRICS",
  "SWEEP_PLOT",
  "SWEEP_TABLE",
  "check_sweep_config",
  "is_sweep_dir",
  "member_config",
  "plot_sweep",
  "resume_config",
  "run_sweep",
  "saved_sweep",
  "sweep_members",
  "write_table",
)
