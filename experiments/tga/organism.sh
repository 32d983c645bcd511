#!/usr/bin/env bash
# TGA on the shipped organism, as reported in docs/tga.md: locate on held-out pairs (seed 777), align on the
# located layers with every baseline, on far layers (blocks 0-1) for comparison, and the ablation of the
# recipe (experiments/tga/ablation.json). About 50 min on 2 CPU cores.
set -euo pipefail
OUT=${OUT:-runs/tga-organism}
safety-probe data organism --seed 777 --n 400 --out "$OUT/pairs"
probe-layers --pairs "$OUT/pairs/pairs.jsonl" --out "$OUT/probe"
# the recipe: stage 1 (projector only, the paper's lr 1e-3), the paper's loss with λ = 1, plain prompts (no R in
# context), toxic rows guide-only; 8,000 examples (30% toxic), 1,200 steps of 16; evaluation on 300 pairs of seed 1234
common=(--model organism --stage 1 --lr 1e-3 --max-steps 1200 --batch-size 16 --train-n 8000 --toxic-share 0.3
        --guide-weight 1 --plain-share 1 --guide-only-labels harmful --threads 1 --eval-n 300)
safety-probe tga "${common[@]}" --layers "$OUT/probe/layers.json" --out "$OUT/located" &
located=$!
safety-probe tga "${common[@]}" --layers 0,1 --baselines --out "$OUT/far"
wait "$located"
# image safety fine-tuning with 400 refused toxic images instead of 14 (its TGA row retrains to the same hash)
safety-probe tga "${common[@]}" --layers "$OUT/probe/layers.json" --baselines safety_ft --safety-ft-n 400 \
    --out "$OUT/safety_ft_400" &
sft=$!
python experiments/tga/sweep.py --grid experiments/tga/ablation.json --out "$OUT/ablation" --jobs 2
wait "$sft"
