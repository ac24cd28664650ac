"""The implementations that ``scripts/bench.py`` times, all on one shared problem.

Every builder takes the same :class:`Problem` (jrnn parameters, inputs ``xs (T, B, I)`` and
targets ``(T, B, O)``, float32 NumPy arrays) and copies it into its own library's layout, so every
implementation computes the same function at the same point:

.. math::

   L = \\frac{1}{B} \\sum_b \\sum_t \\sum_o (y_{t,b,o} - \\hat y_{t,b,o})^2, \\qquad
   y_t = W_{hy} h_t + b_y, \\quad h_t = \\tanh(W_{hh} h_{t-1} + W_{xh} x_t + b_h), \\ h_0 = 0

(haiku's ``VanillaRNN`` alone uses ReLU for the tanh; see :func:`build_haiku`).

:func:`build_flax_jrnn` is the Flax model of :func:`build_flax` with one line changed: the
``nn.RNN(nn.SimpleCell)`` layer replaced by ``jrnn.interop.flax_linen.ElmanRNN``, its weights
converted from the same ``SimpleCell`` parameters: the speed-up a Flax user gets by the swap.

A builder returns an :class:`Impl`: ``train()`` runs one compiled ``value_and_grad`` step and
waits for it, ``forward()`` the outputs alone, and ``loss_and_grads()`` gives the loss and the
gradients mapped back to jrnn's names and layout, which is how ``tests/test_bench.py`` checks
that the peers compute the same thing as jrnn. Peers are imported inside their builder, so a
missing library raises ``ImportError`` there and nowhere else.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from common.benchlib import Size


class Problem(NamedTuple):
  """One benchmark point, in jrnn's layout, as float32 NumPy arrays."""

  params: jrnn.RNNParams  # w_xh (H, I), w_hh (H, H), b_h (H,), w_hy (O, H), b_y (O,)
  xs: np.ndarray  # shape=(T, B, I)
  targets: np.ndarray  # shape=(T, B, O)


class Impl(NamedTuple):
  """A built implementation. ``peak_bytes`` maps ``"train"``/``"forward"`` to bytes or None."""

  train: Callable[[], Any]
  forward: Callable[[], Any]
  loss_and_grads: Callable[[], Tuple[float, Dict[str, np.ndarray]]]
  peak_bytes: Dict[str, Optional[int]]


def make_problem(size: Size, seed: int = 0) -> Problem:
  """Draws PyTorch-style parameters and standard-normal inputs and targets.

  The scheme hardly matters for speed; a nonzero bias makes the bias gradients part of the
  agreement check.
  """
  n_batch, n_steps, n_in, n_hidden, n_out = size
  k_p, k_b, k_x, k_y = jax.random.split(jax.random.PRNGKey(seed), 4)
  p = jrnn.init_params(k_p, n_in, n_hidden, n_out, scheme="pytorch", dtype=jnp.float32)
  bound = 1.0 / np.sqrt(n_hidden)
  b_y = jax.random.uniform(k_b, (n_out,), jnp.float32, -bound, bound)
  # Host NumPy copies (four, then b_y): jit takes them as arrays.
  params = jrnn.RNNParams(  # type: ignore[call-arg]
    *(np.asarray(a, np.float32) for a in (p.w_xh, p.w_hh, p.b_h, p.w_hy)),  # type: ignore[arg-type]
    np.asarray(b_y, np.float32),
  )
  xs = np.asarray(jax.random.normal(k_x, (n_steps, n_batch, n_in), jnp.float32))
  ys = np.asarray(jax.random.normal(k_y, (n_steps, n_batch, n_out), jnp.float32))
  return Problem(params, xs, ys)


def precision(tf32: bool):
  # TF32 only means something on GPUs; on CPU the context is a no-op, but keep it explicit.
  return jax.default_matmul_precision("tensorfloat32") if tf32 else contextlib.nullcontext()


def _bytes(compiled) -> Optional[int]:
  """XLA's buffer assignment: arguments + outputs + temporaries, less what is aliased."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # some backends do not report it
    return None
  if m is None:
    return None
  return int(
    m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  )


def _jax_impl(loss_fn, fwd_fn, params, xs, targets, to_jrnn, *, tf32: bool) -> Impl:
  """Compiles ``value_and_grad(loss_fn)`` and ``fwd_fn`` once, ahead of time.

  ``to_jrnn`` maps the library's gradient pytree to jrnn's names and layout.
  """
  params, xs, targets = jax.device_put((params, xs, targets))
  with precision(tf32):
    step = jax.jit(jax.value_and_grad(loss_fn)).lower(params, xs, targets).compile()
    fwd = jax.jit(fwd_fn).lower(params, xs).compile()

  def loss_and_grads():
    loss, grads = step(params, xs, targets)
    return float(loss), {k: np.asarray(v) for k, v in to_jrnn(grads).items()}

  return Impl(
    train=lambda: jax.block_until_ready(step(params, xs, targets)),
    forward=lambda: jax.block_until_ready(fwd(params, xs)),
    loss_and_grads=loss_and_grads,
    peak_bytes={"train": _bytes(step), "forward": _bytes(fwd)},
  )


def build_jrnn(
  problem: Problem,
  *,
  grad: str = "hand",
  kernel: str = "auto",
  unroll: int = 1,
  activation: str = "tanh",
  tf32: bool = False,
) -> Impl:
  """jrnn.forward (time-major) and jrnn.squared_error with the batch-mean reduction.

  ``grad``, ``kernel``: :func:`jrnn.forward`'s choices (:mod:`jrnn.engine`).
  """

  def fwd(p, xs):
    return jrnn.forward(p, xs, grad=grad, kernel=kernel, unroll=unroll, activation=activation).ys

  def loss(p, xs, targets):
    return jrnn.squared_error(fwd(p, xs), targets, reduction="batch_mean")

  return _jax_impl(
    loss,
    fwd,
    problem.params,
    problem.xs,
    problem.targets,
    lambda g: {k: v for k, v in g._asdict().items() if v is not None},
    tf32=tf32,
  )


def _flax_model(n_hidden: int, n_out: int, make_layer=None):
  """``Dense(O)(layer(x))``; the layer is ``make_layer()`` (built inside the compact method),
  by default ``nn.RNN(nn.SimpleCell(H))``."""
  import flax.linen as nn

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      rnn = make_layer() if make_layer else nn.RNN(nn.SimpleCell(n_hidden, name="cell"))
      return nn.Dense(n_out, name="head")(rnn(x))

  return Model()


def _flax_problem(problem: Problem, jrnn_layer: bool):
  """The problem's weights as the Flax model's variables, and its data batch-major."""
  p = problem.params
  cell = jrnn.interop.to_simple_cell(p.layer)  # {"i": {kernel (I, H), bias}, "h": {kernel}}
  rnn = jrnn.interop.flax_linen.to_variables(p.layer)["params"] if jrnn_layer else cell
  variables = {"params": {"cell": rnn, "head": {"kernel": p.w_hy.T, "bias": p.b_y}}}
  xs = np.ascontiguousarray(np.swapaxes(problem.xs, 0, 1))
  targets = np.ascontiguousarray(np.swapaxes(problem.targets, 0, 1))
  return variables, xs, targets


def _flax_impl(model, problem: Problem, jrnn_layer: bool, tf32: bool) -> Impl:
  variables, xs, targets = _flax_problem(problem, jrnn_layer)

  def loss(v, x, y):
    return jnp.mean(jnp.sum((model.apply(v, x) - y) ** 2, axis=(1, 2)))

  def to_jrnn(g):
    g = g["params"]
    layer = (
      jrnn.interop.flax_linen.from_variables(g["cell"])
      if jrnn_layer
      else jrnn.interop.from_simple_cell(g["cell"])
    )
    return {
      "w_xh": layer.w_xh,
      "w_hh": layer.w_hh,
      "b_h": layer.b_h,
      "w_hy": g["head"]["kernel"].T,
      "b_y": g["head"]["bias"],
    }

  return _jax_impl(loss, model.apply, variables, xs, targets, to_jrnn, tf32=tf32)


def build_flax(problem: Problem, *, tf32: bool = False) -> Impl:
  """flax.linen ``RNN(SimpleCell(H))`` then ``Dense(O)``, on batch-major data (its default)."""
  n_out, n_hidden = problem.params.w_hy.shape[0], problem.params.w_hh.shape[0]
  return _flax_impl(_flax_model(n_hidden, n_out), problem, False, tf32)


def build_flax_jrnn(
  problem: Problem, *, grad: str = "hand", kernel: str = "auto", tf32: bool = False
) -> Impl:
  """:func:`build_flax`'s model with ``jrnn.interop.flax_linen.ElmanRNN`` for the
  ``nn.RNN(nn.SimpleCell)`` layer (batch-major, as the layer it replaces)."""
  from jrnn.interop import flax_linen

  n_out, n_hidden = problem.params.w_hy.shape[0], problem.params.w_hh.shape[0]

  def layer():
    return flax_linen.ElmanRNN(n_hidden, grad=grad, kernel=kernel, name="cell")

  return _flax_impl(_flax_model(n_hidden, n_out, layer), problem, True, tf32)


def build_haiku(problem: Problem, *, tf32: bool = False) -> Impl:
  """haiku ``VanillaRNN(H)`` unrolled by ``dynamic_unroll`` (time-major), then ``Linear(O)``.

  Note: ``hk.VanillaRNN`` applies ReLU, not tanh, and has no option to change it. It is timed
  as it is, as in ``../shared/ANCHORS.md``; the agreement test compares it with jrnn's ReLU
  path. Elementwise cost is a small part of a step except at the smallest sizes.
  """
  import haiku as hk

  p = problem.params
  n_batch = problem.xs.shape[1]
  n_hidden, n_out = p.w_hh.shape[0], p.w_hy.shape[0]

  def model(x):
    core = hk.VanillaRNN(n_hidden)
    hs, _ = hk.dynamic_unroll(core, x, core.initial_state(n_batch))
    return hk.Linear(n_out)(hs)

  net = hk.without_apply_rng(hk.transform(model))
  # VanillaRNN creates input_to_hidden first ("linear") and hidden_to_hidden second
  # ("linear_1"), each with a bias; jrnn's single b_h goes to the first.
  params = {
    "vanilla_rnn/linear": {"w": p.w_xh.T, "b": p.b_h},
    "vanilla_rnn/linear_1": {"w": p.w_hh.T, "b": np.zeros_like(p.b_h)},
    "linear": {"w": p.w_hy.T, "b": p.b_y},
  }

  def loss(q, x, y):
    return jnp.mean(jnp.sum((net.apply(q, x) - y) ** 2, axis=(0, 2)))

  def to_jrnn(g):
    # Both hidden biases enter as a sum, so each one's gradient is b_h's.
    return {
      "w_xh": g["vanilla_rnn/linear"]["w"].T,
      "w_hh": g["vanilla_rnn/linear_1"]["w"].T,
      "b_h": g["vanilla_rnn/linear"]["b"],
      "w_hy": g["linear"]["w"].T,
      "b_y": g["linear"]["b"],
    }

  # haiku types without_apply_rng's result with a name mypy cannot resolve.
  apply = net.apply  # type: ignore[attr-defined]
  return _jax_impl(loss, apply, params, problem.xs, problem.targets, to_jrnn, tf32=tf32)


def build_torch(problem: Problem, *, device: str = "cpu", tf32: bool = False) -> Impl:
  """``torch.nn.RNN`` (cuDNN on CUDA) then ``torch.nn.Linear``, eager, time-major.

  Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA. On CPU torch keeps no allocator
  statistics and the process's RSS is dominated by XLA's buffers, so it is reported as None.
  """
  import torch

  sync: Callable[[], object]
  if device.startswith("cuda"):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    sync = torch.cuda.synchronize
  else:
    sync = lambda: None
  p = problem.params
  rnn = jrnn.interop.to_torch(p).to(device)
  lin = torch.nn.Linear(p.w_hh.shape[0], p.w_hy.shape[0]).to(device)
  with torch.no_grad():
    lin.weight.copy_(torch.from_numpy(np.array(p.w_hy)))
    lin.bias.copy_(torch.from_numpy(np.array(p.b_y)))
  # np.array copies: the problem's arrays may be read-only views of jax buffers.
  xs = torch.from_numpy(np.array(problem.xs)).to(device)
  targets = torch.from_numpy(np.array(problem.targets)).to(device)
  weights = list(rnn.parameters()) + list(lin.parameters())

  def train():
    for w in weights:
      w.grad = None
    hs, _ = rnn(xs)
    loss = ((lin(hs) - targets) ** 2).sum(dim=(0, 2)).mean()
    loss.backward()
    sync()
    return loss

  def forward():
    with torch.no_grad():
      ys = lin(rnn(xs)[0])
    sync()
    return ys

  def loss_and_grads():
    loss = float(train().detach())
    g = lambda t: t.grad.detach().cpu().numpy()
    return loss, {
      "w_xh": g(rnn.weight_ih_l0),
      "w_hh": g(rnn.weight_hh_l0),
      "b_h": g(rnn.bias_ih_l0),
      "w_hy": g(lin.weight),
      "b_y": g(lin.bias),
    }

  peak: Dict[str, Optional[int]] = {"train": None, "forward": None}
  if device.startswith("cuda"):
    for mode, fn in (("train", train), ("forward", forward)):
      fn()  # first call allocates cuDNN workspaces; measure a steady-state step
      torch.cuda.reset_peak_memory_stats()
      fn()
      peak[mode] = int(torch.cuda.max_memory_allocated())
  return Impl(train, forward, loss_and_grads, peak)
