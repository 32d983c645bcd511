#!/usr/bin/env bash
# Row "before": organism-smol as shipped (no training, so no seeds: one evaluation per split).
source "$(dirname "$0")/../common.sh"
evaluate_model $MODEL "$RUNS/before"
