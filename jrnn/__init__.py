"""jrnn: basic (Elman) recurrent neural networks as pure JAX functions.

.. math::

   h_t = σ(W_{hh} h_{t-1} + W_{xh} x_t + b_h), \\qquad y_t = W_{hy} h_t + b_y

The flat namespace holds the core: parameters, initialisation, the cell, the forward passes and
the losses. Everything else lives in a namespace reachable after ``import jrnn``:

* ``jrnn.diagnostics``: Jacobian norms, the seed's bound, Pascanu's conditions, Lyapunov
  exponents, weight spectra.
* ``jrnn.reference``: the seed's O(T²) formula, the hand O(T) recursion, Jacobian products.
* ``jrnn.training``: train steps, optimisers, clipping, truncated and checkpointed BPTT,
  checkpoints, sharding, sampling.
* ``jrnn.interop``: PyTorch conversions (and Flax / Equinox layers, imported on first use).
* ``jrnn.parallel``: parallel-in-time evaluation (DEER, quasi-DEER, ELK, quasi-ELK), the
  ``solver=`` choice.
* ``jrnn.online``: online gradients: exact RTRL, UORO, SnAp-1, online truncated BPTT.
* ``jrnn.kernels``: the kernels that run the sequential loops (XLA, Pallas).
* ``jrnn.engine``: the choices ``grad``, ``kernel``, ``solver`` every forward function takes.
* ``jrnn.data``: the embedded datasets and synthetic tasks.
"""

import importlib as _importlib
import warnings as _warnings

from jrnn import (
  data,
  diagnostics,
  engine,
  interop,
  kernels,
  online,
  parallel,
  reference,
  training,
)
from jrnn.activations import ACTIVATIONS, Activation, get_activation
from jrnn.cell import readout, step
from jrnn.engine import GRADS, SOLVERS
from jrnn.init import SCHEMES, init_layer, init_params, init_stacked, spectral_radius
from jrnn.inputs import initial_state
from jrnn.kernels import KERNELS
from jrnn.losses import REDUCTIONS, reduce_steps, softmax_cross_entropy, squared_error
from jrnn.params import LayerParams, RNNParams, StackedParams
from jrnn.recurrence import recurrence
from jrnn.unroll import RNNOutput, forward, layer_forward, stacked_forward

__version__ = "0.2.0"

# Names that left the flat namespace in 0.2: where they live now. Kept one release with a
# DeprecationWarning (optax's pattern); removed in 0.3.
_MOVED = {
  "HandGrads": "reference",
  "hand_loss_and_grads": "reference",
  "hand_stacked_loss_and_grads": "reference",
  "seed_formula_grads": "reference",
  "Trajectory": "reference",
  "jacobian_jvp": "reference",
  "jacobian_products": "reference",
  "jacobian_vjp": "reference",
  "step_jacobians": "reference",
  "trajectory": "reference",
  "LagProfile": "diagnostics",
  "NormEstimate": "diagnostics",
  "PascanuVerdict": "diagnostics",
  "RateFit": "diagnostics",
  "WeightSpectrum": "diagnostics",
  "end_lag_norm_estimates": "diagnostics",
  "fit_rate": "diagnostics",
  "jacobian_norm_estimate": "diagnostics",
  "jacobian_norms": "diagnostics",
  "lag_loss_contributions": "diagnostics",
  "lag_norm_estimates": "diagnostics",
  "lag_profile": "diagnostics",
  "lanczos_norm": "diagnostics",
  "loss_contributions": "diagnostics",
  "lyapunov_exponents": "diagnostics",
  "pascanu_conditions": "diagnostics",
  "seed_bound": "diagnostics",
  "spectral_norm": "diagnostics",
  "trajectory_gamma": "diagnostics",
  "weight_spectrum": "diagnostics",
  "checkpointed_loss": "training",
  "clip_elementwise": "training",
  "elementwise_clipping": "training",
  "global_norm": "training",
  "global_norm_clipping": "training",
  "Batch": "training",
  "make_eval_step": "training",
  "make_optimizer": "training",
  "make_schedule": "training",
  "make_stream_train_step": "training",
  "make_train_step": "training",
  "sequence_loss": "training",
  "sample_tokens": "training",
  "TruncatedResult": "training",
  "bptt_chunk": "training",
  "chunked_bptt": "training",
  "truncated_bptt": "training",
  "from_torch": "interop",
  "to_torch": "interop",
}
_RENAMED = {
  "clip_by_global_norm": ("training", "clip_tree_by_global_norm"),
  "ClipState": ("training", "ClippingState"),
}


def __getattr__(name):
  if name in _MOVED or name in _RENAMED:
    space, new = _RENAMED.get(name, (_MOVED.get(name), name))
    _warnings.warn(
      f"jrnn.{name} moved to jrnn.{space}.{new} in jrnn 0.2; the old name goes in 0.3",
      DeprecationWarning,
      stacklevel=2,
    )
    return getattr(_importlib.import_module(f"jrnn.{space}"), new)
  if name == "BPTT_MODES":
    _warnings.warn(
      "jrnn.BPTT_MODES (bptt=) is deprecated in jrnn 0.2: use jrnn.GRADS (grad=) "
      "and jrnn.KERNELS (kernel=)",
      DeprecationWarning,
      stacklevel=2,
    )
    return ("hand", "autodiff", "pallas", "auto")
  raise AttributeError(f"module 'jrnn' has no attribute {name!r}")


__all__ = (
  "ACTIVATIONS",
  "Activation",
  "GRADS",
  "KERNELS",
  "LayerParams",
  "REDUCTIONS",
  "RNNOutput",
  "RNNParams",
  "SCHEMES",
  "SOLVERS",
  "StackedParams",
  "data",
  "diagnostics",
  "engine",
  "forward",
  "get_activation",
  "init_layer",
  "init_params",
  "init_stacked",
  "initial_state",
  "interop",
  "kernels",
  "online",
  "parallel",
  "layer_forward",
  "readout",
  "recurrence",
  "reduce_steps",
  "reference",
  "softmax_cross_entropy",
  "spectral_radius",
  "squared_error",
  "stacked_forward",
  "step",
  "training",
)
