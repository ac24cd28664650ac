"""The configuration of a ``jrnn-train`` run: :class:`Config`, its checks, and what may change
when a run is resumed.

Every field is a flag of the same name (``hidden`` is ``--hidden``, ``batch_size`` is
``--batch-size``). A checkpoint stores the whole config; ``--resume`` takes it from there, and
flags given beside ``--resume`` may change only the fields in :data:`FREE_ON_RESUME` (``steps``
too for a constant learning rate): the others change the trajectory of the parameters.

``online`` picks the gradient method on a streaming task: ``"none"`` is truncated BPTT over each
window (:func:`jrnn.training.make_stream_train_step`); ``"rtrl"``, ``"uoro"`` and ``"snap1"``
are :mod:`jrnn.online`'s online methods, which carry their influence across windows and update
the parameters every ``online_every`` steps of the stream.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, List

from jrnn import engine, kernels
from jrnn.init import SCHEME_ARGS, SCHEMES
from jrnn.training import optimizers

# --online's choices: "none" (truncated BPTT over windows) or a method of jrnn.online. Online
# truncated BPTT ("tbptt" there) is left out: "none" is already truncated BPTT over a stream.
ONLINE_METHODS = ("none", "rtrl", "uoro", "snap1")
# --dtype's choices. float64 needs 64-bit JAX (jax_enable_x64), which jrnn-train turns on.
DTYPES = ("float32", "float64")
DEFAULT_ONLINE_MAX_BYTES = 2**28  # 256 MiB: the online state of all --batch-size streams


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
  init_scale: float = 0.0  # the --init scheme's scale (seed, orthogonal, identity); 0: its default
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
  online: str = "none"  # ONLINE_METHODS: the gradient method on a streaming task
  online_every: int = 0  # --online: steps of the stream between updates; 0: --seq-len
  online_max_bytes: int = DEFAULT_ONLINE_MAX_BYTES  # --online: the state's limit; 0: none
  diagnose_every: int = 0  # record gradient flow (jrnn.training.flow) every N steps; 0: off
  dtype: str = "float32"  # DTYPES: of the parameters and every computation on them


# Fields that may differ between a checkpoint and the run resuming it: they do not change the
# trajectory of the parameters. ``steps`` joins them only for a constant learning rate.
# ``diagnose_every`` only reads the parameters (jrnn.training.flow): a resumed run may change it.
FREE_ON_RESUME = (
  "log_every",
  "ckpt_every",
  "sample_len",
  "temperature",
  "online_max_bytes",
  "diagnose_every",
)

# What ``--help`` says of a field beyond its default (the others are named by their flag).
HELP = {
  "online": "gradient method on a streaming task (charlm): none = truncated BPTT over each "
  "--seq-len window; rtrl = exact real-time recurrent learning (O(H^4) time per "
  "step); uoro = unbiased rank-one estimate; snap1 = SnAp-1. The online methods "
  "carry their state across windows; they need --layers 1 and default --grad, "
  "--kernel, --solver, and no --dropout (see docs/online.md)",
  "online_every": "with --online: update the parameters every K steps of the stream; K must "
  "divide --seq-len; 0 means --seq-len (one update per window)",
  "init_scale": "the --init scheme's scale: orthogonal and identity multiply W_hh by it, seed "
  "draws every weight with that std; 0 keeps the scheme's default",
  "diagnose_every": "record gradient flow every N steps on a fixed probe batch (spectral "
  "radius and norm of each W_hh, largest Lyapunov exponent, |dh_T/dh_(T-k)| and the loss "
  "gradient through each lag k, per-parameter gradient norms, clipping rate) into "
  "diagnostics.jsonl; jrnn-report draws them; 0: off",
  "dtype": "of the parameters, the optimiser state, the data and every computation: float64 "
  "(jrnn-train turns on JAX's 64-bit mode for it) is for checking against float64 references, "
  "float32 for training",
  "online_max_bytes": "with --online: refuse to start when the online state of all "
  "--batch-size streams needs more bytes (exact RTRL's is B*H*P floats); "
  "0: no limit",
}


def flag(name: str) -> str:
  """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
  return "--" + name.replace("_", "-")


def choices() -> Dict[str, Iterable[str]]:
  """The allowed values of the fields that name something, read now (not at import time), so a
  solver or task registered later by another module is accepted."""
  from jrnn.training import tasks  # pylint: disable=import-outside-toplevel

  return {
    "task": tuple(tasks.BUILDERS),
    "optimizer": optimizers.OPTIMIZERS,
    "schedule": optimizers.SCHEDULES,
    "init": SCHEMES,
    "grad": engine.GRADS,
    "kernel": kernels.KERNELS,
    "solver": engine.SOLVERS,
    "dtype": DTYPES,
    "online": ONLINE_METHODS,
  }


def check_config(cfg: Config, n_devices: int = 1) -> None:
  """Raises ``ValueError`` naming the flag to change if ``cfg`` cannot train.

  ``n_devices``: the devices the global batch is split over (all processes together).
  """

  def positive_int(name):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"{flag(name)} must be a positive integer, got {v!r}")

  for name in (
    "hidden",
    "layers",
    "seq_len",
    "batch_size",
    "steps",
    "unroll",
    "log_every",
    "ckpt_every",
    "val_batch",
  ):
    positive_int(name)
  for name, allowed in choices().items():
    if getattr(cfg, name) not in allowed:
      raise ValueError(
        f"{flag(name)} must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}"
      )
  try:
    engine.check_choices(cfg.grad, cfg.kernel, cfg.solver)
  except ValueError as e:
    raise ValueError(f"--grad {cfg.grad} --kernel {cfg.kernel} --solver {cfg.solver}: {e}") from e
  if (
    isinstance(cfg.diagnose_every, bool)
    or not isinstance(cfg.diagnose_every, int)
    or cfg.diagnose_every < 0
  ):
    raise ValueError(f"--diagnose-every must be >= 0 (0: off), got {cfg.diagnose_every!r}")
  if not (math.isfinite(cfg.lr) and cfg.lr > 0):
    raise ValueError(f"--lr must be a positive learning rate such as 3e-3, got {cfg.lr}")
  if not (math.isfinite(cfg.clip) and cfg.clip >= 0):
    raise ValueError(f"--clip must be >= 0 (0 turns clipping off), got {cfg.clip}")
  if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
    raise ValueError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
  if not (math.isfinite(cfg.init_scale) and cfg.init_scale >= 0):
    raise ValueError(f"--init-scale must be >= 0 (0: the scheme's default), got {cfg.init_scale}")
  if cfg.init_scale and "scale" not in SCHEME_ARGS[cfg.init]:
    takes = ", ".join(s for s, args in SCHEME_ARGS.items() if "scale" in args)
    raise ValueError(
      f"--init-scale {cfg.init_scale:g} applies to --init {takes}, not --init {cfg.init}; "
      "drop it or pick one of those schemes"
    )
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
      raise ValueError(
        "the copy task needs --n-symbols >= 2, --copy-len >= 1, --delay >= 0; "
        f"got {cfg.n_symbols}, {cfg.copy_len}, {cfg.delay}"
      )
  check_online_config(cfg)
  if cfg.batch_size % n_devices:
    raise ValueError(
      f"--batch-size={cfg.batch_size} must be divisible by the {n_devices} devices it is split over"
    )


def check_online_config(cfg: Config) -> None:
  """Raises ``ValueError`` for an ``--online`` combination that cannot run or would ignore a
  flag (the checks that need the task, such as the state's size, are
  :func:`jrnn.training.loop.check_online`'s)."""
  if (
    isinstance(cfg.online_every, bool)
    or not isinstance(cfg.online_every, int)
    or cfg.online_every < 0
  ):
    raise ValueError(f"--online-every must be >= 0 (0: --seq-len), got {cfg.online_every!r}")
  if (
    isinstance(cfg.online_max_bytes, bool)
    or not isinstance(cfg.online_max_bytes, int)
    or cfg.online_max_bytes < 0
  ):
    raise ValueError(f"--online-max-bytes must be >= 0 (0: no limit), got {cfg.online_max_bytes!r}")
  if cfg.online == "none":
    if cfg.online_every:
      raise ValueError(
        f"--online-every {cfg.online_every} applies only with --online "
        f"{{{','.join(ONLINE_METHODS[1:])}}}; add --online or drop it"
      )
    return
  what = f"--online {cfg.online}"
  if cfg.layers != 1:
    raise ValueError(
      f"{what} trains one Elman layer (jrnn.online has no stacked form); got "
      f"--layers {cfg.layers}: pass --layers 1"
    )
  if cfg.dropout:
    raise ValueError(f"{what} runs without dropout; got --dropout {cfg.dropout}: drop it")
  d = Config()
  ignored = [
    f"{flag(k)} {getattr(cfg, k)}"
    for k in ("grad", "kernel", "solver")
    if getattr(cfg, k) != getattr(d, k)
  ]
  if ignored:
    raise ValueError(
      f"{what} computes its gradient forward in time, so {', '.join(ignored)} "
      "(BPTT's choices) would be ignored: drop them"
    )
  if cfg.online_every and cfg.seq_len % cfg.online_every:
    raise ValueError(
      f"--online-every {cfg.online_every} must divide --seq-len {cfg.seq_len} "
      "(the parameters are updated every K steps of each window)"
    )


def changed_fields(cfg: Config, saved: Dict[str, Any]) -> List[str]:
  """The fields of ``saved`` (a checkpoint's config) that differ in ``cfg`` and may not change
  on resume; empty when ``cfg`` may resume it."""
  free = set(FREE_ON_RESUME)
  if cfg.schedule == "constant" and saved.get("schedule") == "constant":
    free.add("steps")
  return [k for k in sorted(saved) if k not in free and saved[k] != getattr(cfg, k, None)]


def differences(cfg: Config, saved: Dict[str, Any]) -> List[str]:
  """:func:`changed_fields` as ``"--flag OLD (this run asks NEW)"``."""
  return [
    f"{flag(k)} {saved[k]!r} (this run asks {getattr(cfg, k)!r})"
    for k in changed_fields(cfg, saved)
  ]


def from_dict(values: Dict[str, Any]) -> Config:
  """A :class:`Config` from a checkpoint's JSON (fields it lacks take their defaults; unknown
  ones are an error naming them)."""
  names = {f.name for f in dataclasses.fields(Config)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(
      f"unknown config fields {unknown}: the checkpoint was written by another "
      "version of jrnn-train"
    )
  return Config(**values)
