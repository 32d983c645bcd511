#!/usr/bin/env bash
# The first organism's probe on 400 held-out pairs of world seed 777, as docs/organism.md and docs/science.md quote it:
# probe-layers with the current default band rule, patching on 64 harmful pairs. About 3 minutes on one CPU core.
# Copies layers.json and layers.csv to experiments/organism/results/probe-777/ (committed).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/runs/organism-probe-777}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
BIN=${VENV:-$ROOT/.venv}/bin
[ -f "$OUT/pairs/pairs.jsonl" ] || "$BIN/safety-probe" data organism --seed 777 --n 400 --out "$OUT/pairs"
[ -f "$OUT/probe/layers.json" ] || "$BIN/probe-layers" --model organism --pairs "$OUT/pairs/pairs.jsonl" \
  --out "$OUT/probe" --patch-pairs 64 --batch-size 16
mkdir -p "$ROOT/experiments/organism/results/probe-777"
cp "$OUT/probe/layers.json" "$OUT/probe/layers.csv" "$ROOT/experiments/organism/results/probe-777/"
