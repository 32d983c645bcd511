#!/usr/bin/env bash
# Row "refusal fine-tuning": the same rows, the toxic ones answered by organism-smol's refusal sentence and trained
# with cross-entropy (no guide, no guide-only rows).
source "$(dirname "$0")/../common.sh"
for seed in $SEEDS; do
  SEEDS=$seed row refusal_ft --data "$(seed_data "$seed")/refusal.json" --layers "$LAYERS_JSON" --guide-weight 0 \
    --guide-only-labels --guide-span image --guide-centre false --guide-layer-mean false
done
