"""Gradient flow while a model trains: what ``jrnn-train --diagnose-every N`` records.

Every ``N`` steps the loop runs :func:`measure` on a fixed *probe batch* (:func:`probe_batch`:
the first :data:`PROBE_SEQUENCES` sequences of the task's batch 0, each started from
``h_0 = 0``) and, at its next log or checkpoint step, appends one JSON row per record to
``diagnostics.jsonl`` (:func:`to_row`). For every recurrent layer ``l`` (``W_hh`` of each layer
of a stack; layer 0 reads the input):

* ``spectral_norm``, ``spectral_radius``: ``‖W_hh‖₂`` and ``max|λ(W_hh)|``
  (:func:`jrnn.diagnostics.weight_spectrum`);
* ``lyapunov``: the largest Lyapunov exponent ``λ₁`` of the layer's dynamics along each probe
  sequence, averaged over them (:func:`jrnn.diagnostics.lyapunov_exponents`); ``λ₁ > 0``: nearby
  states separate, gradients grow;
* ``jacobian_norm[i]``: ``‖∂h_T/∂h_{T-k}‖₂`` at lag ``k = lags[i]`` (log-spaced up to ``T``),
  the geometric mean over the probe sequences, by Lanczos on the window of the last ``k``
  steps, all sequences and lags at once (:func:`jrnn.diagnostics.end_lag_norm_estimates`; exact
  when ``H ≤ num_iters``);
* ``seed_bound[i]``: the seed's bound ``(‖W_hh‖₂ γ)^k`` with ``γ = sup|σ'|`` (1 for tanh)
  (:func:`jrnn.diagnostics.seed_bound`);
* ``loss_grad[i]``: ``Σ_b Σ_t ‖∂L_t/∂h_{t-k}‖₂``, the gradient of the probe loss that reaches
  back ``k`` steps through this layer's recurrence
  (:func:`jrnn.diagnostics.lag_loss_contributions`: the diagonals of
  :func:`jrnn.diagnostics.loss_contributions`), with ``∂L_t/∂h_t`` the direct derivative:
  through the readout and the layers above, not through this layer's later states. Since
  ``∂L/∂W_hh = Σ_t Σ_k (∂L_t/∂h_k) diag(σ'(a_k)) h_{k-1}ᵀ``, this is how much
  of ``∂L/∂W_hh`` comes from dependencies ``k`` steps back.

and for the model: ``grad_norm`` (the probe loss's gradient norm per parameter array) and
``probe_loss``; the loop adds ``clip_fraction``, the share of the training steps since the last
record whose gradient norm exceeded ``--clip`` (clipping fired), over ``clip_steps`` steps.

:func:`measure` is one compiled program over the parameters already on the device; the loop
dispatches it and goes on training, and reads its result only when it next syncs (a log or
checkpoint step). The loop leaves the eigenvalues out of that program and computes the spectral
radius with the same LAPACK routine on a host thread while the next training steps run
(:func:`spectral_radius_in_background`): they were a third of a record's time, serial work that
the training steps would otherwise wait for. Everything is in the parameters' dtype (float32 in
``jrnn-train``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import diagnostics
from jrnn.activations import get_activation
from jrnn.cell import readout
from jrnn.losses import softmax_cross_entropy, squared_error
from jrnn.params import LayerParams, RNNParams, StackedParams
from jrnn.reference.jacobians import Trajectory, trajectory
from jrnn.training.steps import Batch

PROBE_SEQUENCES = 4  # sequences of the probe batch (fewer if the batch is smaller)
NUM_ITERS = 10  # Lanczos iterations per norm: exact when H <= NUM_ITERS, else from below
DIAGNOSTICS_NAME = "diagnostics.jsonl"
FLOW_KEY = 5  # fold_in(run key, FLOW_KEY): the Lanczos start vectors


def log_lags(n_steps: int) -> Tuple[int, ...]:
  """Lags ``1, 2, 4, …`` up to ``n_steps``, and ``n_steps`` itself.

  Raises:
    ValueError: for ``n_steps < 1``.
  """
  if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
    raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
  lags = [2**i for i in range(int(math.log2(n_steps)) + 1)]
  return tuple(sorted(set(lags) | {int(n_steps)}))


def probe_batch(batch: Batch, size: int = PROBE_SEQUENCES, one_hot: Optional[int] = None) -> Batch:
  """The first ``size`` sequences of a time-major ``batch``, inputs one-hot encoded (to
  ``(T, P, one_hot)``) where they are integer tokens; no dropout key.

  Raises:
    ValueError: for integer tokens without ``one_hot``.
  """
  xs = jnp.asarray(batch.xs)[:, :size]
  if jnp.issubdtype(xs.dtype, jnp.integer):
    if one_hot is None:
      raise ValueError(f"batch.xs holds integer tokens (dtype {xs.dtype}); pass one_hot=")
    xs = jax.nn.one_hot(xs, one_hot, dtype=jnp.float32)
  mask = None if batch.mask is None else jnp.asarray(batch.mask)[:, :size]
  return Batch(xs, jnp.asarray(batch.targets)[:, :size], mask)


def recurrent_layers(params: Union[RNNParams, StackedParams]) -> List[LayerParams]:
  """The recurrent layers whose ``W_hh`` :func:`measure` follows, input layer first.

  Raises:
    TypeError: for parameters that are neither.
    ValueError: for a bidirectional stack (its reverse direction has no ``∂h_T/∂h_{T-k}``).
  """
  if isinstance(params, RNNParams):
    return [params.layer]
  if isinstance(params, StackedParams):
    if params.num_directions != 1:
      raise ValueError(
        f"params must be a unidirectional stack, got {params.num_directions} directions"
      )
    if params.w_hy is None or params.b_y is None:
      raise ValueError("params must have a readout (w_hy, b_y) to score the probe loss")
    return [layer[0] for layer in params.layers]
  raise TypeError(f"params must be RNNParams or StackedParams, got {type(params).__name__}")


def parameter_names(params: Any) -> List[str]:
  """Dotted names of the arrays of ``params`` in leaf order (``w_hh``, ``layers.0.0.w_hh``)."""

  def name(path):
    return ".".join(str(getattr(p, "name", getattr(p, "idx", getattr(p, "key", p)))) for p in path)

  return [name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _probe_loss(ys, batch: Batch, loss_kind: str):
  if loss_kind == "cross_entropy":
    return softmax_cross_entropy(ys, batch.targets, batch.mask, reduction="mean")
  return squared_error(ys, batch.targets, batch.mask, reduction="mean")


def _run_layers(
  layers, w_hy, b_y, inputs, activation, taps: Optional[Sequence[jax.Array]] = None
) -> Tuple[List[Trajectory], jax.Array]:
  """Trajectories of ``layers`` over ``inputs (P, T, I)`` (per sequence, from zero; states
  ``(P, T+1, H)``, each layer's ``W_hh`` once) and the readout's outputs ``(T, P, O)``.

  ``taps[l] (P, T, H)`` is added to layer ``l``'s states where the layer above (or the readout)
  reads them, not where the layer's own recurrence does: the gradient with respect to a tap at
  zero is ``∂L/∂h_t`` through the readout and the layers above only (the *direct* derivative).
  """
  trajs = []
  for l, layer in enumerate(layers):
    tr = jax.vmap(lambda x, lp=layer: trajectory(lp, x, activation=activation))(inputs)
    trajs.append(Trajectory(layer.w_hh, tr.hs, tr.gains, tr.mask))
    inputs = tr.hs[:, 1:] if taps is None else tr.hs[:, 1:] + taps[l]
  return trajs, jnp.swapaxes(readout(w_hy, b_y, inputs), 0, 1)


@functools.partial(
  jax.jit, static_argnames=("lags", "loss_kind", "activation", "num_iters", "spectral_radius")
)
def measure(
  params: Union[RNNParams, StackedParams],
  probe: Batch,
  key: jax.Array,
  *,
  lags: Tuple[int, ...],
  loss_kind: Optional[str],
  activation: str = "tanh",
  num_iters: int = NUM_ITERS,
  spectral_radius: bool = True,
) -> Dict[str, Any]:
  """Gradient-flow measurements of ``params`` on ``probe`` (see the module docstring).

  Args:
    params: :class:`jrnn.RNNParams` or a unidirectional :class:`jrnn.StackedParams` with a readout.
    probe: a time-major :class:`jrnn.training.Batch` of float inputs ``(T, P, I)``, targets
      ``(T, P)`` integer labels or ``(T, P, O)`` floats, ``mask (T, P)`` or ``None``
      (:func:`probe_batch`).
    key: PRNG key for the Lanczos start vectors (fixed for a run, so records are reproducible).
    lags: static lags ``k`` in ``[1, T]`` (:func:`log_lags`).
    loss_kind: ``"cross_entropy"``, ``"squared_error"``, or ``None`` to skip ``loss_grad``,
      ``grad_norm`` and ``probe_loss``.
    activation: the recurrence's ``σ`` (a name with a known ``sup|σ'|``).
    num_iters: Lanczos iterations per norm.
    spectral_radius: ``False`` leaves the eigenvalues out of the program: the result has
      ``w_hh``, a tuple of copies of the layers' ``W_hh``, instead of ``spectral_radius``, for
      :func:`spectral_radius_in_background` (what the training loop does).

  Returns:
    A dict of device arrays, ``L`` layers and ``K = len(lags)``: ``spectral_norm``,
    ``spectral_radius``, ``lyapunov`` ``(L,)``; ``jacobian_norm``, ``seed_bound``,
    ``loss_grad`` ``(L, K)``; ``grad_norm`` ``(n_arrays,)`` in :func:`parameter_names` order
    and ``probe_loss`` ``()``, the last three absent when ``loss_kind`` is ``None``.

  Raises:
    ValueError: for lags outside ``[1, T]``, a bad ``loss_kind``, or ``probe`` of the wrong rank.
  """
  layers = recurrent_layers(params)
  xs = jnp.asarray(probe.xs)
  if xs.ndim != 3:
    raise ValueError(f"probe.xs must have shape (T, P, I), got {xs.shape}")
  n_steps = xs.shape[0]
  if not lags or any(not 1 <= k <= n_steps for k in lags):
    raise ValueError(f"lags must lie in [1, T={n_steps}], got {lags}")
  if loss_kind not in (None, "cross_entropy", "squared_error"):
    raise ValueError(
      f"loss_kind must be 'cross_entropy', 'squared_error' or None, got {loss_kind!r}"
    )
  gamma = get_activation(activation).gamma
  if gamma is None:
    raise ValueError(f"activation {activation!r} has no known sup|σ'|")
  dtype = layers[0].w_hh.dtype
  inputs = jnp.swapaxes(xs.astype(dtype), 0, 1)  # (P, T, I)
  w_hy = params.w_hy
  b_y = params.b_y
  result: Dict[str, Any] = {}
  if loss_kind is None:
    trajs, _ = _run_layers(layers, w_hy, b_y, inputs, activation)
  else:
    # One forward and backward pass: the loss, its gradient, each layer's direct ∂L/∂h_t (the
    # taps') and the trajectories.
    def full_loss(p, taps):
      trajs, ys = _run_layers(recurrent_layers(p), p.w_hy, p.b_y, inputs, activation, taps)
      return _probe_loss(ys, probe, loss_kind), trajs

    zeros = [jnp.zeros(inputs.shape[:2] + layer.w_hh.shape[:1], dtype) for layer in layers]
    (loss, trajs), (grads, direct) = jax.value_and_grad(full_loss, (0, 1), has_aux=True)(
      params, zeros
    )
    result["grad_norm"] = jnp.stack(
      [jnp.linalg.norm(g.reshape(-1)) for g in jax.tree_util.tree_leaves(grads)]
    )
    result["probe_loss"] = loss
  per_layer: Dict[str, List[jax.Array]] = {
    k: [] for k in ("spectral_norm", "spectral_radius", "lyapunov", "jacobian_norm", "seed_bound")
  }
  per_layer["loss_grad"] = []
  lag_idx = np.asarray(lags)
  for l, batch in enumerate(trajs):  # one W_hh for the batch: its products serve every sequence
    if spectral_radius:
      spec = diagnostics.weight_spectrum(batch.w_hh)
      per_layer["spectral_norm"].append(spec.spectral_norm)
      per_layer["spectral_radius"].append(spec.spectral_radius)
    else:
      per_layer["spectral_norm"].append(diagnostics.spectral_norm(batch.w_hh))
    lyap = jax.vmap(
      lambda tr: diagnostics.lyapunov_exponents(tr, num_exponents=1)[0],
      in_axes=(Trajectory(None, 0, 0, 0),),  # type: ignore[arg-type]
    )(batch)
    per_layer["lyapunov"].append(jnp.mean(lyap))
    est = diagnostics.end_lag_norm_estimates(
      batch, lags, key=jax.random.fold_in(key, l), num_iters=num_iters
    ).norm  # (P, K)
    per_layer["jacobian_norm"].append(jnp.exp(jnp.mean(jnp.log(est), axis=0)))
    first = Trajectory(batch.w_hh, batch.hs[0], batch.gains[0], batch.mask[0])
    bound = diagnostics.seed_bound(first, gamma=gamma)
    per_layer["seed_bound"].append(bound[n_steps, n_steps - lag_idx])
    if loss_kind is not None:
      per_seq = diagnostics.lag_loss_contributions(batch, direct[l], lags)  # (P, K)
      per_layer["loss_grad"].append(jnp.sum(per_seq, axis=0))
  for name, values in per_layer.items():
    if values:
      result[name] = jnp.stack(values)
  if not spectral_radius:
    result["w_hh"] = tuple(jnp.copy(layer.w_hh) for layer in layers)  # not the donated buffers
  return result


def spectral_radius_in_background(w_hhs: Sequence[jax.Array]) -> concurrent.futures.Future[Any]:
  """``max|λ(W_hh)|`` of each of ``w_hhs`` (replicated device arrays ``(H, H)``), computed on a
  thread of its own by LAPACK's ``geev`` through NumPy, in their dtype: a future of an array
  ``(L,)``, what :func:`measure`'s ``spectral_radius`` holds (the same LAPACK routine).

  The eigenvalues of a general matrix are the costliest part of a record (``O(H³)`` of serial
  LAPACK work, 30 ms at ``H = 256`` on a 2-core CPU, CPU-only in XLA) and nothing else in the
  record needs them, so the training loop takes them out of the device program and overlaps
  them with its next steps; the thread waits for the copies, not for the training steps.
  """

  def radii() -> np.ndarray:
    return np.stack([np.max(np.abs(np.linalg.eigvals(np.asarray(w)))) for w in w_hhs])

  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jrnn-flow-eig")
  future = pool.submit(radii)
  pool.shutdown(wait=False)
  return future


def compile_in_background(
  params: Union[RNNParams, StackedParams], probe: Batch, key: jax.Array, **static: Any
) -> concurrent.futures.Future[Any]:
  """:func:`measure`'s program for these arguments (and the static ``lags``, ``loss_kind``, …),
  compiled on a thread of its own: a future whose result is called as ``(params, probe, key)``.

  XLA compiles on the calling thread; a training loop that starts this before its first step
  overlaps the compilation (seconds at the main job's size) with its own, instead of stalling at
  the first record. The compiled program is the one ``measure(...)`` would run: the same numbers.
  The future re-raises any error of the compilation from ``result()``.
  """
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jrnn-flow-compile")
  future = pool.submit(lambda: measure.lower(params, probe, key, **static).compile())
  pool.shutdown(wait=False)  # the thread ends when the compilation does
  return future


def to_row(
  step: int,
  measured: Dict[str, Any],
  lags: Sequence[int],
  names: Sequence[str],
  *,
  clip_fraction: Optional[float],
  clip_steps: int,
) -> Dict[str, Any]:
  """One ``diagnostics.jsonl`` row from :func:`measure`'s result (host arrays): plain numbers
  and lists, per-layer lists indexed by layer; ``clip_fraction`` is ``None`` without clipping.
  Non-finite values are kept (JSON ``Infinity``/``NaN``): an overflowing norm is a finding."""
  row: Dict[str, Any] = {"step": int(step), "lags": [int(k) for k in lags]}
  for k in ("spectral_norm", "spectral_radius", "lyapunov", "jacobian_norm", "seed_bound"):
    row[k] = np.asarray(measured[k], np.float64).tolist()
  if "loss_grad" in measured:
    row["loss_grad"] = np.asarray(measured["loss_grad"], np.float64).tolist()
    row["grad_norm"] = dict(
      zip(names, np.asarray(measured["grad_norm"], np.float64).tolist(), strict=True)
    )
    row["probe_loss"] = float(measured["probe_loss"])
  row["clip_fraction"] = clip_fraction
  row["clip_steps"] = int(clip_steps)
  return row


__all__ = (
  "DIAGNOSTICS_NAME",
  "NUM_ITERS",
  "PROBE_SEQUENCES",
  "compile_in_background",
  "log_lags",
  "measure",
  "parameter_names",
  "probe_batch",
  "recurrent_layers",
  "spectral_radius_in_background",
  "to_row",
)
