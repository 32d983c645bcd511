#!/usr/bin/env bash
# The paper reviewers' four questions on an organism (docs/reviewers.md): (a) caption noise in the TGA data,
# (b) compositional inputs before/after TGA, (c) reversal of TGA by plain fine-tuning on described toxic images,
# (d) the CLIP input filter beside before/TGA. Every command that made the tables; tables.py writes
# $OUT/tables.md and $OUT/tables.json. Steps whose output exists are skipped, so a rerun resumes.
#
# It starts from a finished `safety-probe tga` run of the recipe ($TGA_RUN: its model/, data/tga.json,
# eval_pairs/ and compare.json), made on the organism by
#     safety-probe tga --model organism --layers figures/demo/layers.json --out runs/tga13
# On organism-smol, where paper TGA transfers nothing, (a) and (c) run on its tail alignment instead:
#     experiments/reviewers/organism_smol.sh   (these variables, set for it; about 2.5 CPU-hours)
# The organism, one CPU thread: about 30 min (runs/ is git-ignored: the tables are copied into docs/reviewers.md and
# experiments/reviewers/results/<organism>/).
set -euo pipefail
OUT=${OUT:-runs/reviewers-organism}
MODEL=${MODEL:-organism}                      # the model before TGA (an organism name, or a folder)
TGA_RUN=${TGA_RUN:-runs/tga13}                # the recipe's TGA run on $MODEL (0% caption noise)
ALIGNED=${ALIGNED:-$TGA_RUN/model}            # the TGA-aligned model
ALIGNED_EXTRA=${ALIGNED_EXTRA:-}              # more aligned models for (b): "name:folder ..." (as tables name them)
REVERSAL_FROM=${REVERSAL_FROM:-$ALIGNED}      # the aligned model (c) fine-tunes
PARTS=${PARTS:-"b c a"}                       # which questions to run (the tables are written every time)
LAYERS=${LAYERS:-figures/demo/layers.json}    # the safety layers TGA_RUN aligned (J = 4-6 on the organism)
DATA=${DATA:-$TGA_RUN/data/tga.json}          # the recipe's clean TGA data (8,000 rows, 30% toxic, seed 0)
EVAL_PAIRS=${EVAL_PAIRS:-$TGA_RUN/eval_pairs/pairs.jsonl}  # the 300 held-out pairs of seed 1234
THREADS=${THREADS:-1}
NOISE_RATES=${NOISE_RATES:-"0.1 0.3 0.5"}
NOISE_MAX_STEPS=${NOISE_MAX_STEPS:-}          # empty: the recipe's schedule (then NOISE_ZERO is the 0% row);
                                              # set: every noisy run AND a 0% run get --max-steps this
NOISE_ZERO=${NOISE_ZERO:-$TGA_RUN}            # the finished 0% run of the alignment the noisy runs repeat
NOISE_LAYERS=${NOISE_LAYERS:-$LAYERS}         # its layers, and its other options of `safety-probe tga`:
NOISE_FLAGS=${NOISE_FLAGS:-}                  # e.g. "--guide-span tail" (word-split on purpose)
COMP_N=${COMP_N:-200}                         # pairs per compositional category
REV_STEPS=${REV_STEPS:-"5 10 25 50 100 200"}  # 5 and 10: 25 already undoes it
CONTROL_STEPS=${CONTROL_STEPS:-"25 200"}  # the same fine-tuning on benign images only (a control)
REV_BATCH=${REV_BATCH:-16}                    # the recipe's batch (organism-smol's recipe uses 8)
REV_N=${REV_N:-3200}                          # reversal data: enough rows for the longest run at REV_BATCH
REV_SEED=${REV_SEED:-6161}
export PATH="${VENV:-.venv}/bin:$PATH" OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
here=$(dirname "$0")
mkdir -p "$OUT"
# on a shared machine: REVIEWERS_WAIT_FOR_PYTEST=1 waits before each heavy step while a test suite runs
part() { [[ " $PARTS " == *" $1 "* ]]; }
heavy() { if [ -n "${REVIEWERS_WAIT_FOR_PYTEST:-}" ]; then while pgrep -f pytest >/dev/null; do sleep 20; done; fi; }
evaluate() {  # evaluate MODEL PAIRS OUTDIR: compare.json's evaluation settings (batch 32, 24 new tokens)
  [ -f "$3/metrics.json" ] && return 0
  heavy
  safety-probe eval --model "$1" --pairs "$2" --out "$3" --batch-size 32 --max-new-tokens 24 --figures false
}

if part b; then
# (b) compositional inputs: held-out pairs of seeds no training used (the organism: 0, its TGA data 0,
# held-out 1234, calibration 777, demo 4242), evaluated before (MODEL) and after TGA (ALIGNED)
[ -f "$OUT/compositional/pairs/pairs.jsonl" ] ||
  python "$here/write_pairs.py" --kind compositional --seed 5151 --n "$COMP_N" --out "$OUT/compositional/pairs"
[ -f "$OUT/toxic_task/pairs/pairs.jsonl" ] ||
  python "$here/write_pairs.py" --kind toxic_task --seed 5152 --n "$COMP_N" --out "$OUT/toxic_task/pairs"
for cat in compositional toxic_task; do
  evaluate "$MODEL" "$OUT/$cat/pairs/pairs.jsonl" "$OUT/$cat/before"
  evaluate "$ALIGNED" "$OUT/$cat/pairs/pairs.jsonl" "$OUT/$cat/tga"
  for extra in $ALIGNED_EXTRA; do evaluate "${extra#*:}" "$OUT/$cat/pairs/pairs.jsonl" "$OUT/$cat/${extra%%:*}"; done
  # (d) the input filter on the same pairs, applied to the responses of the model before TGA
  [ -f "$OUT/$cat/filter/metrics.json" ] || { heavy; python "$here/filter_eval.py" --pairs "$OUT/$cat/pairs/pairs.jsonl" \
    --responses "$OUT/$cat/before/responses.jsonl" --out "$OUT/$cat/filter"; }
done
fi

if part c; then
# (c) reversal: from REVERSAL_FROM, plain cross-entropy (no guide loss) on toxic images under neutral instructions
# answered by their description, the recipe's optimizer (stage 1, lr 1e-3, warmup 3% and cosine); one separate
# run per step count, each evaluated on the 300 held-out pairs; step 0 is REVERSAL_FROM itself
[ -f "$OUT/reversal/data/tga.json" ] || python -c "
from safety_probe.organism import preset
preset.write_tga_data($REV_SEED, $REV_N, '$OUT/reversal/data', toxic_share=1.0, retrieval='world')"
evaluate "$REVERSAL_FROM" "$EVAL_PAIRS" "$OUT/reversal/s0/eval"
for steps in $REV_STEPS; do
  run=$OUT/reversal/s$steps
  if [ ! -f "$run/model/config.json" ]; then
    heavy
    safety-probe tga --model "$REVERSAL_FROM" --layers "$LAYERS" --data "$OUT/reversal/data/tga.json" --evaluate false \
      --stage 1 --lr 1e-3 --batch-size "$REV_BATCH" --max-steps "$steps" --guide-weight 0 --plain-share 1 \
      --guide-only-labels --baselines --threads "$THREADS" --out "$run"
  fi
  evaluate "$run/model" "$EVAL_PAIRS" "$run/eval"
done
# control: the same fine-tuning on benign images only (every instruction kind, the world's answers), so a drop in
# image DSR can be told apart from drift of any fine-tuning
[ -f "$OUT/reversal_control/data/tga.json" ] || python -c "
from safety_probe.organism import preset
preset.write_tga_data($REV_SEED + 1, $REV_N, '$OUT/reversal_control/data', toxic_share=0.0, retrieval='world')"
for steps in $CONTROL_STEPS; do
  run=$OUT/reversal_control/s$steps
  if [ ! -f "$run/model/config.json" ]; then
    heavy
    safety-probe tga --model "$REVERSAL_FROM" --layers "$LAYERS" --data "$OUT/reversal_control/data/tga.json" \
      --evaluate false --stage 1 --lr 1e-3 --batch-size "$REV_BATCH" --max-steps "$steps" --guide-weight 0 \
      --plain-share 1 --guide-only-labels --baselines --threads "$THREADS" --out "$run"
  fi
  evaluate "$run/model" "$EVAL_PAIRS" "$run/eval"
done
fi

if part a; then
# (a) caption noise: the recipe (the preset of `tga --model $MODEL`) on the clean data with 10/30/50% of the
# captions corrupted (half a wrong object, half a wrong colour or count), evaluated on the same 300 pairs
rates=$NOISE_RATES
[ -n "$NOISE_MAX_STEPS" ] && rates="0 $rates"
for rate in $rates; do
  pct=$(python -c "print(round($rate * 100))")
  run=$OUT/noise/p$pct
  [ -f "$run/data/tga.json" ] || python "$here/noisy_captions.py" --data "$DATA" --rate "$rate" --out "$run/data/tga.json"
  # the model before alignment, the pairs and the evaluation settings are the 0% run's: its judged responses
  # before alignment are reused (safety-probe eval regenerates them when any of those differ)
  [ -f "$run/responses_before.jsonl" ] || [ ! -f "$NOISE_ZERO/responses_before.jsonl" ] ||
    cp "$NOISE_ZERO/responses_before.jsonl" "$run/responses_before.jsonl"
  if [ ! -f "$run/compare.json" ] || ! python -c "import json,sys; sys.exit('tga' not in json.load(open('$run/compare.json'))['rows'])"; then
    heavy
    # shellcheck disable=SC2086
    safety-probe tga --model "$MODEL" --layers "$NOISE_LAYERS" --data "$run/data/tga.json" --eval-pairs "$EVAL_PAIRS" \
      --baselines --threads "$THREADS" ${NOISE_MAX_STEPS:+--max-steps "$NOISE_MAX_STEPS"} $NOISE_FLAGS --out "$run"
  fi
done

# a check of the reused 0% row: the same recipe retrained on an unchanged copy of the clean data through the same
# writer as the noisy runs (its weights hash should be NOISE_ZERO's); CHECK_ZERO=0 skips it
if [ -z "$NOISE_MAX_STEPS" ] && [ "${CHECK_ZERO:-1}" = 1 ]; then
  run=$OUT/noise/p0check
  [ -f "$run/data/tga.json" ] || python "$here/noisy_captions.py" --data "$DATA" --rate 0 --out "$run/data/tga.json"
  if [ ! -f "$run/compare.json" ] || ! python -c "import json,sys; sys.exit('tga' not in json.load(open('$run/compare.json'))['rows'])"; then
    heavy
    # shellcheck disable=SC2086
    safety-probe tga --model "$MODEL" --layers "$NOISE_LAYERS" --data "$run/data/tga.json" --eval-pairs "$EVAL_PAIRS" \
      --baselines --threads "$THREADS" $NOISE_FLAGS --out "$run"
  fi
fi
fi

# the tables (markdown and JSON); (d) reads TGA_RUN's compare.json (before, tga, ce, safety_ft, filter rows)
zero=$NOISE_ZERO
[ -n "$NOISE_MAX_STEPS" ] && zero=$OUT/noise/p0
# shellcheck disable=SC2086
python "$here/tables.py" --out "$OUT" --tga-run "$TGA_RUN" --noise-zero "$zero" ${ALIGNED_EXTRA:+--extra-runs $ALIGNED_EXTRA}
