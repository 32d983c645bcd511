#!/usr/bin/env bash
# Everything of organism-smol's decisive table, in PLAN.md's order of priority, as two lanes that never share a run
# (at most two jobs on the shared 2-core machine, one thread each). Resumable: rerun the same lane after a stop.
#     nohup bash experiments/organism_smol/table/run_all.sh A > runs/logs/laneA.log 2>&1 &
#     nohup bash experiments/organism_smol/table/run_all.sh B > runs/logs/laneB.log 2>&1 &
# Phase A (design, validation only) -> select_best.py (the rule of PLAN.md) -> phase B (the table: validation and test)
# -> C (durability) and D (defenses). Result files: experiments/organism_smol/results/table/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
RESULTS=$ROOT/experiments/organism_smol/results/table
lane=${1:?lane A or B}
score() { (cd "$ROOT" && $PY "$HERE/score.py" --runs "$RUNS" --out "$RESULTS" "$@"); }

# --- phase A: design candidates on seed 0, validation only (lane A first reruns the first organism's seed-777
# probe that docs/organism.md quotes: a few minutes)
if [ "$lane" = A ]; then
  bash "$ROOT/experiments/organism/probe_777.sh" > "$RUNS/probe_777.log" 2>&1 || echo "probe_777.sh failed (see its log)"
  SPLITS=validation bash "$HERE/rows/before.sh"
  SEEDS=0 SPLITS=validation bash "$HERE/rows/tail_centred.sh"
  SEEDS_DESIGN=0 CANDIDATES=design_pos_mean4 bash "$HERE/rows/best_candidates.sh"
else
  SEEDS_DESIGN=0 CANDIDATES="design_pos_sum" bash "$HERE/rows/best_candidates.sh"
  SEEDS_DESIGN=0 CANDIDATES="design_pos_mean26" bash "$HERE/rows/best_candidates.sh"
fi
if [ ! -f "$RESULTS/best.json" ]; then
  if [ "$lane" = A ]; then
    while ! ls "$RUNS"/design_pos_mean26/s0/eval-validation/metrics.json >/dev/null 2>&1; do sleep 60; done
    score --split validation --rows before tail_centred design_pos_sum design_pos_mean4 design_pos_mean26
    (cd "$ROOT" && $PY "$HERE/select_best.py")
  else
    while [ ! -f "$RESULTS/best.json" ]; do sleep 60; done
  fi
fi

# --- phase B: the table on the test split (the design is frozen in best.json; the rows trained first were also
# evaluated on validation, which no table reads)
export SPLITS=test
if [ "$lane" = A ]; then
  bash "$HERE/rows/before.sh"
  for r in best ce refusal_ft distill; do bash "$HERE/rows/$r.sh"; done
else
  for r in tail_centred tail_last paper_tga paper_tga_caption_band; do bash "$HERE/rows/$r.sh"; done
fi

# --- phases C and D
if [ "$lane" = A ]; then
  DURABILITY_SEEDS=0 DURABILITY_STEPS=100 bash "$HERE/rows/durability.sh"
  DURABILITY_SEEDS=0 DURABILITY_STEPS=25 bash "$HERE/rows/durability.sh"
else
  bash "$HERE/rows/defenses.sh"
fi
touch "$RUNS/lane-$lane.done"
if [ "$lane" = A ]; then  # the result files, once both lanes are done (the tables render from them: make docs)
  while [ ! -f "$RUNS/lane-B.done" ]; do sleep 60; done
  score --split validation
  score --split test --best best --baselines refusal_ft distill tail_centred tail_last ce paper_tga \
    paper_tga_caption_band before
  score --split test --runs "$RUNS/defenses" --name defenses
  (cd "$HERE" && $PY durability.py --runs "$RUNS" --out "$RESULTS")
fi
echo "lane $lane done"
