#!/usr/bin/env bash
# One call on a CUDA machine: correctness of the Pallas RNN kernels against the XLA path, timing
# against torch cuDNN and the XLA hand BPTT, the Flax model with nn.RNN(SimpleCell) vs the jrnn
# layer, compute-sanitizer once (scripts/gpu/gpu_check.py), then the lines added below it. The whole
# finishes in under 5 minutes on an H100: gpu_check.py cuts its sections at GPU_CHECK_BUDGET_S
# (default 180 s; a hard timeout 15 s later), which leaves about 100 s for the lines below
# (gpu_parallel.py: 90 s at most). A line added here must fit that sum, or lower the budget.
# JSON lands in $OUT (or the folder given with --out).
#   scripts/gpu_check.sh                 # full check
#   scripts/gpu_check.sh --quick         # smallest anchor size only
#   RUN_TESTS=1 scripts/gpu_check.sh     # also the interpret-mode/lowering pytest file first
#                                        # (its 120 s come out of the 5 minutes)
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
BUDGET="${GPU_CHECK_BUDGET_S:-180}"
status=0
# The script's exit status is gpu_check.py's, unless a line below fails (then that line's).
trap 'rc=$?; exit $(( rc ? rc : status ))' EXIT
timeout $((BUDGET + 15)) "$PY" scripts/gpu/gpu_check.py --budget-s "$BUDGET" "$@" || status=$?
timeout 90 "$PY" scripts/gpu/gpu_parallel.py || echo "gpu_parallel.py failed or timed out"
