#!/usr/bin/env bash
# TGA on the shipped organism, as reported in docs/tga.md: locate on held-out pairs (seed 777), align on the
# located layers with every baseline, and align on far layers (blocks 0-1) for comparison. ~25 min on 2 CPU cores.
set -euo pipefail
OUT=${OUT:-runs/tga-organism}
safety-probe data organism --seed 777 --n 400 --out "$OUT/pairs"
probe-layers --pairs "$OUT/pairs/pairs.jsonl" --out "$OUT/probe"
common=(--model organism --stage 2 --lr 3e-5 --max-steps 600 --batch-size 16 --train-n 4000 --toxic-share 0.3
        --threads 1 --eval-n 300)
safety-probe tga "${common[@]}" --layers "$OUT/probe/layers.json" --out "$OUT/located"
safety-probe tga "${common[@]}" --layers 0,1 --baselines filter --out "$OUT/far"
safety-probe tga "${common[@]}" --layers 3,4 --baselines filter --out "$OUT/blocks3-4"
