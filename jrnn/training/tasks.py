"""The tasks ``jrnn-train`` knows: each gives the model sizes, the loss, the batches and the
validation metric.

Splits. Every task with a held-out score keeps training, validation and test data apart: the
logged ``val_*`` metric (what a user chooses settings and steps by) is measured on the
validation split only, and :attr:`Task.test`, where a task has a test split, is read once, at
the end of a finished run (``test_*`` in ``test.json``). The synthetic tasks (copy, sine,
adding) draw training batches from ``fold_in(train_key, step)``, the validation set from
``val_key`` and the test set from ``fold_in(key, 3)``: three independent streams of continuous
(or, for copy, long random) sequences. MNIST-1D validates on 500 sequences carved from its
4,000 training ones (:func:`jrnn.data.mnist1d.split`) and tests on its 1,000 test sequences.
The char-LM has two splits: its held-out text (the last 10% of the corpus) is the validation
set, and it has no test split.

A task is a :class:`Task` built by a function ``builder(cfg, key) -> Task``; :data:`BUILDERS`
maps each ``--task`` name to its builder, so adding a task is one function and one entry.

``Task.batch(step)`` returns the *global* batch of that step (``cfg.batch_size`` sequences),
the same whatever the number of processes: the training loop keeps each process's columns of
it (:func:`jrnn.training.distributed.local_columns`). That is what lets a run resume with
another number of processes. Building the global batch is cheap for every task here (charlm
windows are slices of the corpus in memory; the synthetic tasks draw from the step's key).

The compiled pieces (batch makers, evaluations, the loss) are module-level functions with the
sizes as static arguments, so a process that builds the same task twice (a resumed run, the
tests) compiles them once.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn.data import adding as adding_data
from jrnn.data import charlm as charlm_data
from jrnn.data import copy_task as copy_data
from jrnn.data import mnist1d as mnist1d_data  # imports the optional mnist1d package on load()
from jrnn.data import sine as sine_data
from jrnn.params import StackedParams
from jrnn.training import steps as jtrain
from jrnn.unroll import forward, stacked_forward


class Task(NamedTuple):
  """What the training loop needs to know about a task. ``loss`` and ``stateful`` must depend
  on the config alone (the loop reuses its compiled step across runs of one config)."""

  n_in: int
  n_out: int
  loss: Callable[..., Any]  # sequence_loss(...): (params, Batch, h0) -> (loss, h_last)
  stateful: bool  # carries the hidden state across batches (truncated BPTT over a stream)
  tokens_per_step: int
  batch: Callable[[int], Any]  # step -> the global Batch of that step (host or device arrays)
  position: Callable[[int], Dict[str, int]]  # step -> where in the data that batch came from
  evaluate: Callable[[Any], Dict[str, float]]  # params -> validation metrics
  metric: str  # the key of evaluate's main metric
  vocab: Optional[str] = None
  eval_positions: int = 0  # (time step, sequence) pairs one evaluation runs: sizes its memory
  # For --online (streaming tasks): the loss jrnn.online scores ("cross_entropy" with integer
  # targets, or "squared_error"), and the vocabulary size when batch.xs holds integer tokens
  # (the loop one-hot encodes them). None: --online cannot train this task.
  online_loss: Optional[str] = None
  one_hot: Optional[int] = None
  # params -> test metrics ("test_*"), read once at the end of a finished run; None: no test split.
  test: Optional[Callable[[Any], Dict[str, float]]] = None
  # (task key, step) -> the global Batch of that step, traceable in both (jit, vmap, scan), with
  # batch(step) == draw(key, step) for the key the task was built with; it depends on the config
  # alone, so one compiled sweep (jrnn.training.sweep_run) draws every member's batches from its
  # own task key. None: the task cannot be swept (charlm, whose batches carry state).
  draw: Optional[Callable[[jax.Array, Any], Any]] = None
  # The loss's kind (jrnn.training.LOSSES), for the gradient-flow probe (jrnn.training.flow);
  # None: --diagnose-every records no loss gradients for this task.
  loss_kind: Optional[str] = None


def _renamed(metrics: Dict[str, Any], prefix: str) -> Dict[str, float]:
  """``{"val_x": v}`` -> ``{prefix + "x": float(v)}``."""
  return {prefix + k[len("val_") :]: float(v) for k, v in metrics.items()}


@functools.lru_cache(maxsize=32)
def _cached_loss(kind, one_hot, unroll, dropout, grad, kernel, solver):
  return jtrain.sequence_loss(
    kind, one_hot=one_hot, unroll=unroll, dropout=dropout, grad=grad, kernel=kernel, solver=solver
  )


def _loss(cfg, kind: str, one_hot: Optional[int] = None):
  return _cached_loss(kind, one_hot, cfg.unroll, cfg.dropout, cfg.grad, cfg.kernel, cfg.solver)


def _forward(params, xs, unroll):
  run = stacked_forward if isinstance(params, StackedParams) else forward
  return run(params, xs, unroll=unroll)


@functools.partial(jax.jit, static_argnums=0)
def _mean_loss(loss, params, xs, targets):
  return loss(params, jtrain.Batch(xs, targets))[0]


def charlm(cfg, key) -> Task:
  """Next-character prediction on ``pydoc_data.topics`` (:mod:`jrnn.data.charlm`), read as
  ``batch_size`` parallel streams in windows of ``seq_len`` with the state carried over."""
  data = charlm_data.load()
  v = data.vocab.size
  rows = charlm_data.streams(data.train, cfg.batch_size)
  n_win = charlm_data.num_windows(rows, cfg.seq_len)
  # Validation: 8 contiguous streams over the held-out text, each read from its start with
  # the state carried through it, in one compiled forward pass.
  val_rows = charlm_data.streams(data.val, 8)
  val_x = jnp.asarray(val_rows[:, :-1].T)
  val_y = jnp.asarray(val_rows[:, 1:].T)
  loss = _loss(cfg, "cross_entropy", one_hot=v)

  def batch(step):  # the stream is read in order; only dropout is random
    x, y = charlm_data.window(rows, step % n_win, cfg.seq_len)
    # x, y are host NumPy windows; jit takes them as arrays.
    return jtrain.Batch(x, y, key=jax.random.fold_in(key, step) if cfg.dropout else None)  # type: ignore[arg-type]

  return Task(
    n_in=v,
    n_out=v,
    loss=loss,
    stateful=True,
    tokens_per_step=cfg.seq_len * cfg.batch_size,
    batch=batch,
    position=lambda s: {"epoch": s // n_win, "window": s % n_win},
    evaluate=lambda p: {"val_bpc": charlm_data.bits_per_char(_mean_loss(loss, p, val_x, val_y))},
    metric="val_bpc",
    vocab=data.vocab.chars,
    eval_positions=val_x.size,
    online_loss="cross_entropy",
    one_hot=v,
    loss_kind="cross_entropy",
  )


def _cast(cfg, arrays):
  """``arrays`` (a tuple or NamedTuple) with the floating ones in ``cfg.dtype`` (the data are
  drawn in float32)."""
  dtype = jnp.dtype(cfg.dtype)
  return jax.tree_util.tree_map(
    lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, arrays
  )


def _synthetic(cfg, key, make_f32, n_in, n_out, kind, evaluate) -> Task:
  """``make_f32(key, batch_size, jit=False)`` draws a batch, eagerly or compiled;
  ``evaluate(params, val, unroll)`` is compiled."""

  def make(k, b, jit=False):
    return _cast(cfg, make_f32(k, b, jit=jit))

  val_key = copy_data.split_keys(key)[1]
  val = make(val_key, cfg.val_batch)
  test_key = jax.random.fold_in(key, 3)

  def draw(task_key, step):
    k = jax.random.fold_in(copy_data.split_keys(task_key)[0], step)
    return jtrain.Batch(  # type: ignore[misc]  # make returns (xs, targets[, mask])
      *make(k, cfg.batch_size, jit=True),
      key=jax.random.fold_in(jax.random.fold_in(task_key, 1), step) if cfg.dropout else None,
    )

  n_steps = make(val_key, 1)[0].shape[0]
  return Task(
    n_in=n_in,
    n_out=n_out,
    loss=_loss(cfg, kind),
    stateful=False,
    tokens_per_step=n_steps * cfg.batch_size,
    batch=lambda step: draw(key, step),
    position=lambda s: {"batch": s},
    evaluate=lambda p: {k: float(v) for k, v in evaluate(p, val, cfg.unroll).items()},
    metric="val_accuracy" if kind == "cross_entropy" else "val_mse",
    eval_positions=n_steps * cfg.val_batch,
    test=lambda p: _renamed(evaluate(p, make(test_key, cfg.val_batch), cfg.unroll), "test_"),
    draw=draw,
    loss_kind=kind,
  )


_copy_batch = jax.jit(
  copy_data.batch, static_argnums=1, static_argnames=("n_symbols", "length", "delay")
)


@functools.partial(jax.jit, static_argnums=2)
def _copy_accuracy(params, val, unroll):
  ys = _forward(params, val.xs, unroll).ys
  hit = (jnp.argmax(ys, -1) == val.targets) & val.mask
  return {"val_accuracy": jnp.sum(hit) / jnp.sum(val.mask)}


def copy(cfg, key) -> Task:
  """Recall ``copy_len`` symbols after ``delay`` blank steps (:mod:`jrnn.data.copy_task`)."""

  def make(k, b, jit=False):
    return (_copy_batch if jit else copy_data.batch)(
      k, b, n_symbols=cfg.n_symbols, length=cfg.copy_len, delay=cfg.delay
    )

  return _synthetic(
    cfg, key, make, cfg.n_symbols + 2, cfg.n_symbols, "cross_entropy", _copy_accuracy
  )


_sine_batch = jax.jit(sine_data.batch, static_argnums=(1, 2))


@functools.partial(jax.jit, static_argnums=2)
def _sine_mse(params, val, unroll):
  ys = _forward(params, val.xs, unroll).ys
  return {"val_mse": jnp.mean((ys - val.targets) ** 2)}


def sine(cfg, key) -> Task:
  """Predict the next value of a sine wave of random phase (:mod:`jrnn.data.sine`)."""

  def make(k, b, jit=False):
    return (_sine_batch if jit else sine_data.batch)(k, b, cfg.seq_len)

  return _synthetic(cfg, key, make, 1, 1, "squared_error", _sine_mse)


def _adding_arrays(k, b, seq_len):
  xs, target = adding_data.batch(k, b, seq_len)[:2]
  # The answer is read at the last step only: target and mask are zero elsewhere.
  targets = jnp.zeros(xs.shape[:2] + (1,), xs.dtype).at[-1].set(target.reshape(b, 1))
  mask = jnp.zeros(xs.shape[:2], bool).at[-1].set(True)
  return xs, targets, mask


_adding_batch = jax.jit(_adding_arrays, static_argnums=(1, 2))


@functools.partial(jax.jit, static_argnums=2)
def _adding_mse(params, val, unroll):
  ys = _forward(params, val[0], unroll).ys
  return {"val_mse": jnp.mean((ys[-1] - val[1][-1]) ** 2)}


def adding(cfg, key) -> Task:
  """The adding problem: the sum of the two marked numbers, read at the last step
  (:mod:`jrnn.data.adding`)."""

  def make(k, b, jit=False):
    return (_adding_batch if jit else _adding_arrays)(k, b, cfg.seq_len)

  return _synthetic(cfg, key, make, 2, 1, "squared_error", _adding_mse)


def _mnist1d_arrays(k, step, x, y, b):
  xs, labels = mnist1d_data.train_batch(k, step, x, y, b)
  # One label per sequence, read at the last step: targets repeat it, the mask scores step T only.
  targets = jnp.broadcast_to(labels[None], xs.shape[:2])
  mask = jnp.zeros(xs.shape[:2], bool).at[-1].set(True)
  return xs, targets, mask


_mnist1d_batch = jax.jit(_mnist1d_arrays, static_argnums=4)


@functools.partial(jax.jit, static_argnums=2)
def _mnist1d_accuracy(params, val, unroll):
  logits = _forward(params, val[0], unroll).ys[-1]
  return {"val_accuracy": jnp.mean(jnp.argmax(logits, -1) == val[1])}


def mnist1d(cfg, key) -> Task:
  """MNIST-1D (Greydanus 2020; :mod:`jrnn.data.mnist1d`, needs ``pip install jrnn[mnist1d]``):
  the digit of each 40-step sequence, read at its last step; epochs over 3,500 training
  sequences; ``val_accuracy`` on the 500 validation sequences carved from the 4,000 training
  ones (:func:`jrnn.data.mnist1d.split`), ``test_accuracy`` on the 1,000 test sequences once, at
  the end."""
  data = mnist1d_data.split(mnist1d_data.load())
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  val = _cast(cfg, (mnist1d_data.sequences(data.x_val), jnp.asarray(data.y_val)))
  test = _cast(cfg, (mnist1d_data.sequences(data.x_test), jnp.asarray(data.y_test)))
  per_epoch = len(data.y_train) // cfg.batch_size

  def draw(task_key, step):
    return jtrain.Batch(  # type: ignore[misc]  # (xs, targets)
      *_cast(cfg, _mnist1d_batch(jax.random.fold_in(task_key, 2), step, x, y, cfg.batch_size)),
      key=jax.random.fold_in(jax.random.fold_in(task_key, 1), step) if cfg.dropout else None,
    )

  return Task(
    n_in=1,
    n_out=mnist1d_data.N_CLASSES,
    loss=_loss(cfg, "cross_entropy"),
    stateful=False,
    tokens_per_step=mnist1d_data.SEQ_LEN * cfg.batch_size,
    batch=lambda step: draw(key, step),
    position=lambda s: {"epoch": s // per_epoch, "batch": s % per_epoch},
    evaluate=lambda p: {k: float(v) for k, v in _mnist1d_accuracy(p, val, cfg.unroll).items()},
    metric="val_accuracy",
    eval_positions=int(test[0].shape[0] * test[0].shape[1]),
    test=lambda p: _renamed(_mnist1d_accuracy(p, test, cfg.unroll), "test_"),
    draw=draw,
    loss_kind="cross_entropy",
  )


BUILDERS: Dict[str, Callable[..., Task]] = {
  "charlm": charlm,
  "copy": copy,
  "sine": sine,
  "adding": adding,
  "mnist1d": mnist1d,
}
TASKS = tuple(BUILDERS)


def make_task(cfg, key) -> Task:
  """The :class:`Task` named by ``cfg.task``; ``key`` seeds its data and dropout."""
  return BUILDERS[cfg.task](cfg, key)
