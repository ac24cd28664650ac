"""``jrnn.training``: compiled train steps, optimisers, clipping, gradient estimators for long
sequences, checkpoints, data parallelism, sampling and the ``jrnn-train`` job.

========================  ===================================================================
module                    what it holds
========================  ===================================================================
``steps``                 :class:`Batch`, :func:`sequence_loss`, :func:`make_train_step`,
                          :func:`make_stream_train_step`, :func:`make_eval_step`
``optimizers``            :func:`make_optimizer`, :func:`make_schedule`
``clipping``              global-norm and elementwise clipping (functions and optax transforms)
``truncated``             truncated BPTT(k1, k2), chunked and streaming forms
``checkpointed``          :func:`checkpointed_loss`: exact gradients in O(√T) memory
``checkpoint``            saving and loading a run's state (safetensors)
``sharding``              data-parallel meshes
``sample``                :func:`sample_tokens` from a character model
``seeds``                 several seeds as one compiled program (``jax.vmap``)
``sweep``                 hyperparameter sweeps as one compiled program (per-member
                          learning rate, clipping, weight decay, init; guards; checkpoints)
``classification``        one label per sequence, from the state after its last valid step
``config``, ``tasks``     the ``jrnn-train`` job: its configuration and tasks,
``loop``, ``report``      the training loop read top to bottom, metrics and plots,
``distributed``           multi-process (``jax.distributed``) set-up,
``sweep_run``             ``jrnn-train --sweep``: a task's whole grid, its table and plot,
``cli``                   and the command-line parsing
``flow``                  gradient flow while training (``--diagnose-every``)
``run_report``            ``jrnn-report``: a run's self-contained HTML report
``report_html``           what every jrnn-report page shares (style, figures as PNG bytes)
``sweep_report``          ``jrnn-report`` of a sweep: every member side by side
========================  ===================================================================

Every module above is reachable as ``jrnn.training.<module>`` after ``import jrnn``; ``seeds``,
``classification`` and the job's modules load on first access (module ``__getattr__``).
"""

import importlib as _importlib

from jrnn.training import checkpoint, sharding, sweep
from jrnn.training.checkpointed import checkpointed_loss
from jrnn.training.clipping import (
  ClippingState,
  clip_elementwise,
  clip_tree_by_global_norm,
  elementwise_clipping,
  global_norm,
  global_norm_clipping,
)
from jrnn.training.optimizers import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from jrnn.training.sample import sample_tokens
from jrnn.training.steps import (
  LOSSES,
  Batch,
  make_eval_step,
  make_stream_train_step,
  make_train_step,
  sequence_loss,
)
from jrnn.training.sweep import (
  SWEEP_AXES,
  SweepState,
  format_sweep,
  init_sweep,
  make_sweep_chunk,
  parse_sweep,
  sweep_grid,
  sweep_optimizer,
)
from jrnn.training.truncated import TruncatedResult, bptt_chunk, chunked_bptt, truncated_bptt

_LAZY = (
  "classification",
  "cli",
  "config",
  "distributed",
  "flow",
  "loop",
  "report",
  "report_html",
  "run_report",
  "sweep_report",
  "seeds",
  "sweep_run",
  "tasks",
)


def __getattr__(name):
  if name in _LAZY:
    return _importlib.import_module(f"jrnn.training.{name}")
  raise AttributeError(f"module 'jrnn.training' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_LAZY))


__all__ = (
  "Batch",
  "ClippingState",
  "LOSSES",
  "OPTIMIZERS",
  "SCHEDULES",
  "SWEEP_AXES",
  "SweepState",
  "TruncatedResult",
  "bptt_chunk",
  "checkpoint",
  "checkpointed_loss",
  "chunked_bptt",
  "clip_elementwise",
  "clip_tree_by_global_norm",
  "elementwise_clipping",
  "format_sweep",
  "global_norm",
  "global_norm_clipping",
  "init_sweep",
  "make_eval_step",
  "make_optimizer",
  "make_schedule",
  "make_stream_train_step",
  "make_sweep_chunk",
  "make_train_step",
  "parse_sweep",
  "sample_tokens",
  "sequence_loss",
  "sharding",
  "sweep",
  "sweep_grid",
  "sweep_optimizer",
  "truncated_bptt",
)
