#!/usr/bin/env bash
# TGA on the shipped organism, as reported in docs/tga.md: locate on held-out pairs (seed 777), align on the
# located layers with every baseline, on far layers (blocks 0-1) for comparison, and the ablation of the
# options beyond the paper (experiments/tga/ablation.json). About 30 min on 2 CPU cores.
set -euo pipefail
OUT=${OUT:-runs/tga-organism}
safety-probe data organism --seed 777 --n 400 --out "$OUT/pairs"
probe-layers --pairs "$OUT/pairs/pairs.jsonl" --out "$OUT/probe"
# the recipe: stage 2, plain prompts (no R in context), frozen caption target, toxic rows guide-only, λ = 3
common=(--model organism --stage 2 --lr 3e-5 --max-steps 600 --batch-size 16 --train-n 4000 --toxic-share 0.3
        --guide-weight 3.0 --plain-share 1.0 --caption-target frozen --guide-only-labels harmful
        --threads 1 --eval-n 300)
safety-probe tga "${common[@]}" --layers "$OUT/probe/layers.json" --out "$OUT/located" &
located=$!
safety-probe tga "${common[@]}" --layers 0,1 --baselines --out "$OUT/far"
wait "$located"
python experiments/tga/sweep.py --grid experiments/tga/ablation.json --out "$OUT/ablation" --jobs 2
