#!/usr/bin/env bash
# One call on a CUDA machine: correctness of the Pallas RNN kernels against the XLA path, timing
# against torch cuDNN and the XLA hand BPTT, compute-sanitizer once (scripts/gpu_check.py).
# Finishes in under 6 minutes; JSON lands in $OUT (or the folder given with --out).
#   scripts/gpu_check.sh                 # full check
#   scripts/gpu_check.sh --quick         # smallest anchor size only
#   RUN_TESTS=1 scripts/gpu_check.sh     # also the interpret-mode/lowering pytest file first
# PYTHON picks the interpreter (default: python3 on PATH; it needs a CUDA jaxlib and, for the
# cuDNN rows, a CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import jax, sys; print("jax", jax.__version__, jax.devices(), file=sys.stderr)'
if [[ "${RUN_TESTS:-0}" == 1 ]]; then
  timeout 120 "$PY" -m pytest -q -x tests/test_pallas_rnn.py || echo "pytest failed or timed out"
fi
exec timeout 330 "$PY" scripts/gpu_check.py "$@"
