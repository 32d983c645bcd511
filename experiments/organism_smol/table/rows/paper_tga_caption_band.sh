#!/usr/bin/env bash
# Row "paper TGA at the caption-patching band": the same loss at blocks 2-14, where caption-mean patching restores at
# least half its largest gain (experiments/organism_smol/patching_layers.py ... caption).
source "$(dirname "$0")/../common.sh"
row paper_tga_caption_band --layers "$CAPTION_LAYERS" --guide-span image --guide-centre false --guide-layer-mean false
