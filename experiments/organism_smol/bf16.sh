#!/usr/bin/env bash
# TGA in bf16 autocast against float32 on organism-smol (docs/speed.md): the centred tail alignment of
# docs/organism-smol.md (blocks 16-28; the preset's recipe: stage 1, 300 steps of 8 on 2,400 examples, evaluated on
# the 300 held-out pairs of seed 1234) trained twice, the only difference --mixed-precision bf16, then compared:
# the evaluation's metrics, paired on the same pairs, the final guide loss and the projector's relative difference
# (the step time of each precision is the speed harness's, docs/speed.md). About 50 minutes of one core; the two
# runs go one after the other.
set -euo pipefail
OUT=${OUT:-runs/organism-smol-bf16}
export OMP_NUM_THREADS=1
for precision in no bf16; do
  safety-probe tga --model organism-smol --guide-span tail --guide-centre true --guide-centre-by batch --layers 16-28 --baselines "" \
    --mixed-precision "$precision" --out "$OUT/$precision"
done
python experiments/organism_smol/bf16_compare.py "$OUT/no" "$OUT/bf16" --out experiments/organism_smol/results/bf16.json
