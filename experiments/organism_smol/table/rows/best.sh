#!/usr/bin/env bash
# Row "best": the design candidate select_best.py chose on the validation split (results/table/best.json), for every
# seed; its seed-0 run is the candidate's own design run (the same options, data and seed), reused.
source "$(dirname "$0")/../common.sh"
BEST_JSON=$ROOT/experiments/organism_smol/results/table/best.json
[ -f "$BEST_JSON" ] || { echo "no $BEST_JSON: run rows/best_candidates.sh, score.py --split validation, select_best.py" >&2; exit 1; }
chosen=$($PY -c "import json; print(json.load(open('$BEST_JSON'))['chosen'])")
if [ "$chosen" = tail_centred ]; then  # the existing row itself: its runs are rows/tail_centred.sh's
  mkdir -p "$RUNS/best"
  for seed in $SEEDS; do [ -e "$RUNS/best/s$seed" ] || ln -s "../tail_centred/s$seed" "$RUNS/best/s$seed"; done
  exit 0
fi
for seed in $SEEDS; do
  if [ ! -e "$RUNS/best/s$seed" ] && [ -f "$RUNS/$chosen/s$seed/model/config.json" ]; then
    mkdir -p "$RUNS/best" && ln -s "../$chosen/s$seed" "$RUNS/best/s$seed"
  fi
  # shellcheck disable=SC2046
  SEEDS=$seed row best $(candidate_flags "$chosen")
done
