#!/usr/bin/env bash
# The design candidates of the best method (PLAN.md; their options: candidate_flags in common.sh), trained on seed 0
# and scored on the VALIDATION split only. The centred tail (rows/tail_centred.sh) is the fourth candidate.
# select_best.py applies the rule fixed in PLAN.md to their validation scores; rows/best.sh trains the chosen one.
source "$(dirname "$0")/../common.sh"
SEEDS=${SEEDS_DESIGN:-0}
SPLITS=validation
for c in ${CANDIDATES:-design_pos_sum design_pos_mean4 design_pos_mean26}; do
  # shellcheck disable=SC2046
  row "$c" $(candidate_flags "$c")
done
