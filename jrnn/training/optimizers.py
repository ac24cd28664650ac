"""Optimisers and learning-rate schedules by name, built from optax.

:func:`make_optimizer` names the optimisers (SGD, momentum, Adam, Adagrad, RMSProp) with an
optional schedule (:func:`make_schedule`), weight decay and global-norm clipping.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import jax
import numpy as np
import optax

OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad", "rmsprop")
SCHEDULES = ("constant", "cosine", "linear")


def check_positive(name: str, value, kind=float) -> None:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
  if kind is int:
    ok = ok and float(value).is_integer()
  if not ok or (isinstance(value, float) and not math.isfinite(value)):
    what = "a positive integer" if kind is int else "a positive finite number"
    raise ValueError(f"{name} must be {what}, got {value!r}")


def make_schedule(
  learning_rate: Union[float, jax.Array],
  *,
  schedule: str = "constant",
  total_steps: Optional[int] = None,
  warmup_steps: int = 0,
  final_fraction: float = 0.1,
) -> optax.Schedule:
  """A learning-rate schedule ``η(step)``.

  * ``"constant"``: ``η(s) = η₀``;
  * ``"cosine"``: ``η(s) = η₀ (f + (1 - f)(1 + cos(π s / S)) / 2)``, from ``η₀`` to ``f·η₀``;
  * ``"linear"``: from ``η₀`` to ``f·η₀`` in a straight line;

  with ``S = total_steps - warmup_steps`` and ``f = final_fraction``, each preceded by a linear
  warm-up from 0 over ``warmup_steps`` when that is positive.

  ``learning_rate`` may also be a scalar array, traced or not (one member's rate inside a
  compiled sweep, :mod:`jrnn.training.sweep`); a traced one cannot be range-checked.
  """
  if isinstance(learning_rate, (jax.Array, np.ndarray, np.generic)):
    if np.ndim(learning_rate) != 0:
      raise ValueError(f"learning_rate must be a scalar, got shape {np.shape(learning_rate)}")
    if not isinstance(learning_rate, jax.core.Tracer):
      check_positive("learning_rate", float(learning_rate))
  else:
    check_positive("learning_rate", learning_rate)
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
  if not isinstance(warmup_steps, int) or warmup_steps < 0:
    raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
  if not 0.0 <= final_fraction <= 1.0:
    raise ValueError(f"final_fraction must lie in [0, 1], got {final_fraction}")
  if schedule == "constant":
    main = optax.constant_schedule(learning_rate)
  else:
    if total_steps is None or total_steps <= warmup_steps:
      raise ValueError(
        f"schedule={schedule!r} needs total_steps > warmup_steps="
        f"{warmup_steps}, got total_steps={total_steps!r}"
      )
    n = total_steps - warmup_steps
    if schedule == "cosine":
      main = optax.cosine_decay_schedule(learning_rate, n, alpha=final_fraction)
    else:
      main = optax.linear_schedule(learning_rate, learning_rate * final_fraction, n)
  if warmup_steps == 0:
    return main
  warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(
  name: str = "adam",
  learning_rate: float = 1e-3,
  *,
  clip_norm: Optional[float] = None,
  momentum: float = 0.9,
  schedule: str = "constant",
  total_steps: Optional[int] = None,
  warmup_steps: int = 0,
  final_fraction: float = 0.1,
  weight_decay: float = 0.0,
) -> optax.GradientTransformation:
  """An optax optimiser by name, with an optional schedule, weight decay and clipping.

  Args:
    name: ``"sgd"`` (``θ -= η g``), ``"momentum"`` (heavy ball, ``v = μ v + g``, ``θ -= η v``),
      ``"adam"``, ``"adagrad"`` or ``"rmsprop"``.
    learning_rate: ``η₀ > 0``.
    clip_norm: ``c > 0`` rescales the gradient to global norm at most ``c`` before the update;
      ``None`` does not clip.
    momentum: ``μ`` for ``"momentum"``.
    schedule, total_steps, warmup_steps, final_fraction: see :func:`make_schedule`.
    weight_decay: ``λ >= 0``. For Adam it is decoupled (AdamW: ``θ -= η(t) λ θ`` beside the Adam
      step); for the others it adds ``λ θ`` to the gradient (L2 regularisation).

  Returns:
    An ``optax.GradientTransformation``.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
  lr = make_schedule(
    learning_rate,
    schedule=schedule,
    total_steps=total_steps,
    warmup_steps=warmup_steps,
    final_fraction=final_fraction,
  )
  if name == "sgd":
    opt = optax.sgd(lr)
  elif name == "momentum":
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    opt = optax.sgd(lr, momentum=momentum)
  elif name == "adam":
    opt = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
  elif name == "adagrad":
    opt = optax.adagrad(lr)
  else:
    opt = optax.rmsprop(lr)
  if not (math.isfinite(weight_decay) and weight_decay >= 0):
    raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
  if weight_decay and name != "adam":
    opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
  if clip_norm is None:
    return opt
  check_positive("clip_norm", clip_norm)
  return optax.chain(optax.clip_by_global_norm(clip_norm), opt)
