"""jrnn: basic (Elman) recurrent neural networks as pure JAX functions.

.. math::

   h_t = σ(W_{hh} h_{t-1} + W_{xh} x_t + b_h), \\qquad y_t = W_{hy} h_t + b_y
"""
from jrnn.activations import ACTIVATIONS, Activation, get_activation
from jrnn.cell import readout, step
from jrnn.init import SCHEMES, init_layer, init_params, init_stacked, spectral_radius
from jrnn.losses import REDUCTIONS, reduce_steps, softmax_cross_entropy, squared_error
from jrnn.params import LayerParams, RNNParams, StackedParams
from jrnn.recurrence import BPTT_MODES, recurrence
from jrnn.torch_interop import from_torch, to_torch
from jrnn.unroll import RNNOutput, forward, layer_forward, stacked_forward

__version__ = "0.1.0"

__all__ = (
    "ACTIVATIONS",
    "Activation",
    "BPTT_MODES",
    "LayerParams",
    "REDUCTIONS",
    "RNNOutput",
    "RNNParams",
    "SCHEMES",
    "StackedParams",
    "forward",
    "from_torch",
    "get_activation",
    "init_layer",
    "init_params",
    "init_stacked",
    "layer_forward",
    "readout",
    "recurrence",
    "reduce_steps",
    "softmax_cross_entropy",
    "spectral_radius",
    "squared_error",
    "stacked_forward",
    "step",
    "to_torch",
)
