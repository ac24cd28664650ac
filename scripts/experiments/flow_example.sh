#!/usr/bin/env bash
# The worked example of docs/flow.md: the adding problem at T = 100 trained from three
# initialisations (the seed's N(0, 0.01²), orthogonal, identity = IRNN), with and without
# gradient clipping, recording gradient flow every 50 steps; then one report per run
# (`python -m jrnn.training.cli` is `jrnn-train`, `python -m jrnn.training.run_report` is
# `jrnn-report`).
#   bash scripts/experiments/flow_example.sh [OUT_ROOT]   (default docs/flow/runs; about 1 CPU minute a run)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="${1:-docs/flow/runs}"
mkdir -p "$root"
for init in seed orthogonal identity; do
  for clip in 1 0; do
    out="$root/$init-clip$clip"
    python -m jrnn.training.cli --task adding --seq-len 100 --hidden 32 --layers 1 --batch-size 32 \
      --optimizer adam --lr 3e-3 --schedule constant --ema 0 --steps 2000 \
      --log-every 100 --ckpt-every 2000 --diagnose-every 50 --val-batch 256 \
      --init "$init" --clip "$clip" --seed 0 --no-progress --out "$out" || true  # a diverged run still reports
    python -m jrnn.training.run_report "$out" --overwrite
  done
done
