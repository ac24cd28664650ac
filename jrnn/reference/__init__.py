"""``jrnn.reference``: the derivation to read and check, not the fast path.

* :func:`seed_formula_grads`: the seed's double sum ``Σ_t Σ_{k≤t} ∂L_t/∂h_t · ∂h_t/∂h_k ·
  ∂h_k/∂W_hh`` with explicit Jacobian products (O(T²), for teaching).
* :func:`hand_loss_and_grads`, :func:`hand_stacked_loss_and_grads`: the O(T) reverse recursion,
  the loss derivative included, without ``jax.grad``.
* :func:`step_jacobians`, :func:`jacobian_products`, :func:`jacobian_jvp`,
  :func:`jacobian_vjp`, :func:`trajectory`: ``J_t = ∂h_t/∂h_{t-1}`` and ``∂h_t/∂h_k``.

Nothing in jrnn's fast path or training code imports this namespace.
"""

from jrnn.reference.bptt import (
  HandGrads,
  hand_loss_and_grads,
  hand_stacked_loss_and_grads,
  loss_output_grad,
  seed_formula_grads,
)
from jrnn.reference.jacobians import (
  Trajectory,
  check_trajectory,
  jacobian_jvp,
  jacobian_products,
  jacobian_vjp,
  step_jacobians,
  trajectory,
)

__all__ = (
  "HandGrads",
  "Trajectory",
  "check_trajectory",
  "hand_loss_and_grads",
  "hand_stacked_loss_and_grads",
  "jacobian_jvp",
  "jacobian_products",
  "jacobian_vjp",
  "loss_output_grad",
  "seed_formula_grads",
  "step_jacobians",
  "trajectory",
)
