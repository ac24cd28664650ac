"""jrnn: basic (Elman) recurrent neural networks as pure JAX functions.

.. math::

   h_t = σ(W_{hh} h_{t-1} + W_{xh} x_t + b_h), \\qquad y_t = W_{hy} h_t + b_y
"""
from jrnn.activations import ACTIVATIONS, Activation, get_activation
from jrnn.bptt_reference import (
    HandGrads, hand_loss_and_grads, hand_stacked_loss_and_grads, seed_formula_grads,
)
from jrnn.cell import readout, step
from jrnn.checkpointed import checkpointed_loss
from jrnn.clipping import (
    ClipState, clip_by_global_norm, clip_elementwise, elementwise_clipping, global_norm,
    global_norm_clipping,
)
from jrnn.diagnostics import (
    LagProfile, NormEstimate, PascanuVerdict, RateFit, WeightSpectrum, fit_rate,
    jacobian_norm_estimate, jacobian_norms, lag_norm_estimates, lag_profile, lanczos_norm,
    loss_contributions, lyapunov_exponents, pascanu_conditions, seed_bound, spectral_norm,
    trajectory_gamma, weight_spectrum,
)
from jrnn.init import SCHEMES, init_layer, init_params, init_stacked, spectral_radius
from jrnn.jacobians import (
    Trajectory, jacobian_jvp, jacobian_products, jacobian_vjp, step_jacobians, trajectory,
)
from jrnn.losses import REDUCTIONS, reduce_steps, softmax_cross_entropy, squared_error
from jrnn.params import LayerParams, RNNParams, StackedParams
from jrnn.recurrence import BPTT_MODES, recurrence
from jrnn.sample import sample_tokens
from jrnn.torch_interop import from_torch, to_torch
from jrnn.train import (
    Batch, make_eval_step, make_optimizer, make_schedule, make_stream_train_step,
    make_train_step, sequence_loss,
)
from jrnn.truncated import TruncatedResult, bptt_chunk, chunked_bptt, truncated_bptt
from jrnn.unroll import RNNOutput, forward, layer_forward, stacked_forward

__version__ = "0.1.0"

__all__ = (
    "ACTIVATIONS",
    "Activation",
    "BPTT_MODES",
    "Batch",
    "ClipState",
    "HandGrads",
    "LagProfile",
    "LayerParams",
    "NormEstimate",
    "PascanuVerdict",
    "REDUCTIONS",
    "RNNOutput",
    "RNNParams",
    "RateFit",
    "SCHEMES",
    "StackedParams",
    "Trajectory",
    "TruncatedResult",
    "WeightSpectrum",
    "bptt_chunk",
    "checkpointed_loss",
    "chunked_bptt",
    "clip_by_global_norm",
    "clip_elementwise",
    "elementwise_clipping",
    "fit_rate",
    "forward",
    "from_torch",
    "get_activation",
    "global_norm",
    "global_norm_clipping",
    "hand_loss_and_grads",
    "hand_stacked_loss_and_grads",
    "init_layer",
    "init_params",
    "init_stacked",
    "jacobian_jvp",
    "jacobian_norm_estimate",
    "jacobian_norms",
    "jacobian_products",
    "jacobian_vjp",
    "lag_norm_estimates",
    "lag_profile",
    "lanczos_norm",
    "layer_forward",
    "loss_contributions",
    "lyapunov_exponents",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_stream_train_step",
    "make_train_step",
    "pascanu_conditions",
    "readout",
    "recurrence",
    "reduce_steps",
    "sample_tokens",
    "seed_bound",
    "seed_formula_grads",
    "sequence_loss",
    "softmax_cross_entropy",
    "spectral_norm",
    "spectral_radius",
    "squared_error",
    "stacked_forward",
    "step",
    "step_jacobians",
    "to_torch",
    "trajectory",
    "trajectory_gamma",
    "truncated_bptt",
    "weight_spectrum",
)
