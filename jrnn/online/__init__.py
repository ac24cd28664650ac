"""Online gradients beside BPTT: exact RTRL, UORO, SnAp-1 and truncated BPTT as online methods.

BPTT needs a sequence's whole history before it yields a gradient. The methods here carry what
the gradient needs forward in time instead, so a learner can update at every step of an endless
stream. All work on :class:`jrnn.RNNParams` (one layer with a linear readout), on one stream
(``jax.vmap`` over streams), and share one interface:

* ``*_init(params, h=None, ...) -> state``, a NamedTuple ``(h, influence…)``;
* ``*_step(params, state, x, target, *, loss, activation, mask, loss_mask) -> (state, grads,
  L_t)`` with ``grads = ∂L_t/∂θ`` shaped as ``params``;
* ``*_sequence(params, xs, targets, ...) -> OnlineResult(loss, grads, state)``, ``Σ_t`` of them.

==========  ====================================  ==================  ==================
method      influence ``M_t = ∂h_t/∂θ``            memory per step     time per step
==========  ====================================  ==================  ==================
``rtrl``    exact, ``H × P``                      ``O(H·P)``          ``O(H²·P)``
``uoro``    unbiased rank-one ``h̃ θ̃ᵀ``            ``O(H + P)``        ``O(H² + H·I)``
``snap1``   exact on one step's pattern           ``O(P)``            ``O(H² + H·I)``
``tbptt``   none; replays the last ``τ`` steps    ``O(τ(H + I))``     ``O(τ(H² + H·I))``
==========  ====================================  ==================  ==================

(``P = H² + H·I + H`` recurrent parameters.) Training: :func:`online_method` configures one of
them, :func:`make_online_train_step` updates the parameters every ``k`` steps of ``B`` streams
with any optax optimiser. See ``docs/online.md``.
"""

from jrnn.online.core import LOSSES, OnlineResult, num_recurrent_params
from jrnn.online.rtrl import (
  DEFAULT_MAX_INFLUENCE_BYTES,
  RTRLState,
  rtrl_influence_bytes,
  rtrl_init,
  rtrl_sequence,
  rtrl_step,
)
from jrnn.online.snap import (
  SnApState,
  dense_to_snap1,
  snap1_init,
  snap1_sequence,
  snap1_step,
  snap1_to_dense,
)
from jrnn.online.tbptt import TBPTTState, tbptt_init, tbptt_sequence, tbptt_step
from jrnn.online.train import (
  METHODS,
  OnlineBatch,
  OnlineMethod,
  init_streams,
  make_online_train_step,
  online_method,
)
from jrnn.online.uoro import UOROState, uoro_init, uoro_sequence, uoro_step

__all__ = (
  "DEFAULT_MAX_INFLUENCE_BYTES",
  "LOSSES",
  "METHODS",
  "OnlineBatch",
  "OnlineMethod",
  "OnlineResult",
  "RTRLState",
  "SnApState",
  "TBPTTState",
  "UOROState",
  "dense_to_snap1",
  "init_streams",
  "make_online_train_step",
  "num_recurrent_params",
  "online_method",
  "rtrl_influence_bytes",
  "rtrl_init",
  "rtrl_sequence",
  "rtrl_step",
  "snap1_init",
  "snap1_sequence",
  "snap1_step",
  "snap1_to_dense",
  "tbptt_init",
  "tbptt_sequence",
  "tbptt_step",
  "uoro_init",
  "uoro_sequence",
  "uoro_step",
)
