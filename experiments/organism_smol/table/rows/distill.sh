#!/usr/bin/env bash
# Row "text-run response distillation": the same rows, the toxic ones answered by organism-smol's own text-run greedy
# response to the same request in words (distill_data.py), trained with cross-entropy (no guide).
source "$(dirname "$0")/../common.sh"
for seed in $SEEDS; do
  SEEDS=$seed row distill --data "$(distill_data "$seed")" --layers "$LAYERS_JSON" --guide-weight 0 \
    --guide-only-labels --guide-span image --guide-centre false --guide-layer-mean false
done
