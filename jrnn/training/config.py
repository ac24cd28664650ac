"""The configuration of a ``jrnn-train`` run: :class:`Config`, its checks, and what may change
when a run is resumed.

Every field is a flag of the same name (``hidden`` is ``--hidden``, ``batch_size`` is
``--batch-size``). A checkpoint stores the whole config; ``--resume`` takes it from there, and
flags given beside ``--resume`` may change only the fields in :data:`FREE_ON_RESUME` (``steps``
too for a constant learning rate): the others change the trajectory of the parameters.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, List

from jrnn import engine, kernels
from jrnn.init import SCHEMES
from jrnn.training import optimizers


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run. Defaults: the main job (char-LM in under 5 minutes)."""
  task: str = "charlm"
  hidden: int = 256
  layers: int = 2  # stacked Elman layers; 1 is the seed's single-layer RNN
  seq_len: int = 64
  batch_size: int = 16  # the global batch: split over processes, then over their devices
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
  grad: str = "hand"  # jrnn.engine.GRADS
  kernel: str = "auto"  # jrnn.kernels.KERNELS
  solver: str = "sequential"  # jrnn.engine.SOLVERS
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
FREE_ON_RESUME = ("log_every", "ckpt_every", "sample_len", "temperature")


def flag(name: str) -> str:
  """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
  return "--" + name.replace("_", "-")


def choices() -> Dict[str, Iterable[str]]:
  """The allowed values of the fields that name something, read now (not at import time), so a
  solver or task registered later by another module is accepted."""
  from jrnn.training import tasks  # pylint: disable=import-outside-toplevel
  return {"task": tuple(tasks.BUILDERS), "optimizer": optimizers.OPTIMIZERS,
          "schedule": optimizers.SCHEDULES, "init": SCHEMES, "grad": engine.GRADS,
          "kernel": kernels.KERNELS, "solver": engine.SOLVERS}


def check_config(cfg: Config, n_devices: int = 1) -> None:
  """Raises ``ValueError`` naming the flag to change if ``cfg`` cannot train.

  ``n_devices``: the devices the global batch is split over (all processes together).
  """
  def positive_int(name):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"{flag(name)} must be a positive integer, got {v!r}")

  for name in ("hidden", "layers", "seq_len", "batch_size", "steps", "unroll", "log_every",
               "ckpt_every", "val_batch"):
    positive_int(name)
  for name, allowed in choices().items():
    if getattr(cfg, name) not in allowed:
      raise ValueError(f"{flag(name)} must be one of {', '.join(allowed)}; "
                       f"got {getattr(cfg, name)!r}")
  try:
    engine.check_choices(cfg.grad, cfg.kernel, cfg.solver)
  except ValueError as e:
    raise ValueError(f"--grad {cfg.grad} --kernel {cfg.kernel} --solver {cfg.solver}: {e}") from e
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
  if cfg.batch_size % n_devices:
    raise ValueError(f"--batch-size={cfg.batch_size} must be divisible by the {n_devices} "
                     "devices it is split over")


def changed_fields(cfg: Config, saved: Dict[str, Any]) -> List[str]:
  """The fields of ``saved`` (a checkpoint's config) that differ in ``cfg`` and may not change
  on resume; empty when ``cfg`` may resume it."""
  free = set(FREE_ON_RESUME)
  if cfg.schedule == "constant" and saved.get("schedule") == "constant":
    free.add("steps")
  return [k for k in sorted(saved) if k not in free and saved[k] != getattr(cfg, k, None)]


def differences(cfg: Config, saved: Dict[str, Any]) -> List[str]:
  """:func:`changed_fields` as ``"--flag OLD (this run asks NEW)"``."""
  return [f"{flag(k)} {saved[k]!r} (this run asks {getattr(cfg, k)!r})"
          for k in changed_fields(cfg, saved)]


def from_dict(values: Dict[str, Any]) -> Config:
  """A :class:`Config` from a checkpoint's JSON (fields it lacks take their defaults; unknown
  ones are an error naming them)."""
  names = {f.name for f in dataclasses.fields(Config)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f"unknown config fields {unknown}: the checkpoint was written by another "
                     "version of jrnn-train")
  return Config(**values)
