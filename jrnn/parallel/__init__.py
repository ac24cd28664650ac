"""Parallel-in-time evaluation and training of the Elman RNN: DEER, quasi-DEER, ELK, quasi-ELK.

A sequential scan takes ``T`` dependent steps however wide the hardware. Newton's method on the
whole trajectory turns the nonlinear recurrence into a few *linear* recurrences, each solved by
an associative scan in ``O(log T)`` depth; for a contracting RNN (largest Lyapunov exponent
``< 0``) a few iterations suffice (Gonzalez et al. 2025). The gradient differentiates through
the fixed point: BPTT's reverse recursion at the solver's trajectory, run sequentially or as a
reverse associative scan. See ``docs/parallel.md``.

Through the engine, every forward function takes ``solver=`` (``"deer"``, ``"quasi_deer"``,
``"elk"``, ``"quasi_elk"`` or a :class:`Solver`); :func:`solve` and :func:`parallel_forward`
also return the :class:`SolveInfo` (iterations, residual, converged, diverged).

Modules (lowest first): :mod:`~jrnn.parallel.linear_scan` (associative scans of
``x_t = A_t x_{t∓1} + b_t``), :mod:`~jrnn.parallel.config` (:class:`Solver`,
:class:`SolveInfo`), :mod:`~jrnn.parallel.newton` (DEER, quasi-DEER and the iteration),
:mod:`~jrnn.parallel.elk` (ELK, quasi-ELK as parallel Kalman smoothers),
:mod:`~jrnn.parallel.adjoint` (the parallel reverse recursion), :mod:`~jrnn.parallel.layer`
(the ``custom_vjp`` and the entry points). This package imports only from
:mod:`jrnn.activations`, :mod:`jrnn.loops`, :mod:`jrnn.validation` and :mod:`jrnn.params`.
"""

from jrnn.parallel import adjoint, config, elk, layer, linear_scan, newton
from jrnn.parallel.config import (
  ADJOINTS,
  DEFAULT_MEMORY_LIMIT,
  DEFAULT_TOL,
  METHODS,
  ON_FAILURE,
  SolveInfo,
  Solver,
  SolverLike,
  as_solver,
)
from jrnn.parallel.layer import (
  ParallelOutput,
  SolverError,
  parallel_forward,
  parallel_recurrence,
  solve,
)

__all__ = (
  "ADJOINTS",
  "DEFAULT_MEMORY_LIMIT",
  "DEFAULT_TOL",
  "METHODS",
  "ON_FAILURE",
  "ParallelOutput",
  "SolveInfo",
  "Solver",
  "SolverError",
  "SolverLike",
  "adjoint",
  "as_solver",
  "config",
  "elk",
  "layer",
  "linear_scan",
  "newton",
  "parallel_forward",
  "parallel_recurrence",
  "solve",
)
