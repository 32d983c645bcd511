#!/usr/bin/env bash
# Row "centred tail" (docs/organism-smol.md's second round): every prompt position after the image, centred on the
# batch mean, blocks 16-28, λ = 1 summed over the 13 blocks.
source "$(dirname "$0")/../common.sh"
row tail_centred --layers "$TAIL_LAYERS" --guide-span tail --guide-centre true --guide-centre-by batch --guide-layer-mean false
