#!/usr/bin/env bash
# The speed harness on one GPU, as one prepared script: recording every block of a 7B-shaped random-weight LLaVA
# (hidden 4096, 32 blocks, 576 image tokens) in bf16 against the bare forward, then its tables. The model is built
# once in float32 on the CPU (about 28 GB of host RAM, a few minutes) into $CACHE and reused on later runs.
#
#   bash speed/gpu.sh                        # writes speed/results_gpu.json (its `recording` record)
#   SHAPE=1b CACHE=/tmp/llava-1b bash speed/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHAPE=${SHAPE:-7b}
CACHE=${CACHE:-${TMPDIR:-/tmp}/safety-probe-speed-$SHAPE}
OUT=${OUT:-speed/results_gpu.json}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no GPU: this script times the CUDA path')"
"$PY" -m speed.run --device cuda --dtype bfloat16 --shape "$SHAPE" --models large --no-bridge --threads 0 \
  --model-cache "$CACHE" --out "$OUT"
"$PY" -m speed.report "$OUT"
