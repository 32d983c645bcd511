#!/usr/bin/env bash
# Durability of the best method (rows/best.sh's models): plain fine-tuning of the aligned model for 25 and 100 steps
# of 8 (stage 1, lr 1e-3, the recipe's optimiser, no guide) on (a) toxic images described under a neutral instruction
# and (b) benign images only (every kind, the world's answers) — the reversal of docs/reviewers.md (c); and the same
# fine-tuning with the best method's guide kept on as a regulariser (every row supervised and guided). Fine-tuning data
# of world seed 6161 / 6162 (as the reviewers' reversal), the held-out scenes left out. Scored on the test split by
# score.py --runs RUNS/durability --name durability-raw; durability.py tabulates them.
source "$(dirname "$0")/../common.sh"
BEST_JSON=$ROOT/experiments/organism_smol/results/table/best.json
chosen=$($PY -c "import json; print(json.load(open('$BEST_JSON'))['chosen'])")
D=$RUNS/durability
for kind in toxic benign; do
  data=$D/data-$kind/tga.json
  share=$([ $kind = toxic ] && echo 1.0 || echo 0.0)
  seed=$([ $kind = toxic ] && echo 6161 || echo 6162)
  [ -f "$data" ] || $PY -c "
from safety_probe.organism import preset, splits
preset.write_tga_data($seed, 800, '$D/data-$kind', toxic_share=$share, retrieval='world', scenes=splits.alignment_scenes())"
done
for seed in ${DURABILITY_SEEDS:-$SEEDS}; do
  aligned=$RUNS/best/s$seed/model
  [ -f "$aligned/config.json" ] || { echo "no $aligned: run rows/best.sh first" >&2; exit 1; }
  for kind in toxic benign; do
    for steps in ${DURABILITY_STEPS:-25 100}; do
      for variant in plain guided; do
        out=$D/${kind}_${variant}_$steps/s$seed
        if [ ! -f "$out/model/config.json" ]; then
          mkdir -p "$out"
          if [ $variant = plain ]; then flags=(--guide-weight 0 --layers "$TAIL_LAYERS")
          else read -ra flags <<< "$(candidate_flags "$chosen")"; fi
          $SP tga --model "$aligned" --data "$D/data-$kind/tga.json" --evaluate false --stage 1 --lr 1e-3 \
            --batch-size 8 --max-steps "$steps" --plain-share 1 --guide-only-labels --baselines "" --seed "$seed" \
            --threads 1 "${flags[@]}" --out "$out" >> "$out/train.log" 2>&1
        fi
        SPLITS=test evaluate_model "$out/model" "$out"
      done
    done
  done
done
