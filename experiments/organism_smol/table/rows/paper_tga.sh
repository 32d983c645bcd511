#!/usr/bin/env bash
# Row "paper TGA": the preset recipe of `safety-probe tga --model organism-smol` (stage 1, lr 1e-3, the paper's loss
# with λ = 1 summed over J, plain prompts, toxic rows guide-only; 300 steps of 8) at Algorithm 1's band J = {27, 29}
# read from the committed probe run.
source "$(dirname "$0")/../common.sh"
row paper_tga --layers "$LAYERS_JSON" --guide-span image --guide-centre false --guide-layer-mean false
