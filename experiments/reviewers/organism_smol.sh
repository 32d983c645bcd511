#!/usr/bin/env bash
# The reviewers' four questions on organism-smol (docs/reviewers.md): organism.sh with organism-smol's runs of
# experiments/organism_smol/measure.sh. Paper TGA transfers nothing on this model (image DSR 0.127 before and
# after), so (a) caption noise and (c) reversal run on the alignment that does transfer, the tail alignment
# (--guide-span tail, blocks 16-28); (b) evaluates both; (d) reads paper TGA's run (its ce and filter rows).
# Resumable; about 2.5 CPU-hours. PARTS, NOISE_RATES, REV_STEPS and CONTROL_STEPS split it over cores: e.g.
#     PARTS=a NOISE_RATES="0.1 0.3" bash experiments/reviewers/organism_smol.sh &
#     PARTS="c a" NOISE_RATES=0.5 bash experiments/reviewers/organism_smol.sh
set -euo pipefail
SMOL=${SMOL:-runs/organism-smol}
here=$(dirname "$0")
tail_layers=$(${VENV:-.venv}/bin/python experiments/organism_smol/patching_layers.py "$SMOL/probe/layers.json")
export MODEL=organism-smol OUT=${OUT:-runs/reviewers-smol} THREADS=${THREADS:-1}
export TGA_RUN=$SMOL/tga LAYERS=$SMOL/probe/layers.json ALIGNED=$SMOL/tga/model
export ALIGNED_EXTRA="tga_tail:$SMOL/tga_tail/model" REVERSAL_FROM=$SMOL/tga_tail/model
export NOISE_ZERO=$SMOL/tga_tail NOISE_LAYERS=$tail_layers NOISE_FLAGS="--guide-span tail --guide-centre false" DATA=$SMOL/tga_tail/data/tga.json
export EVAL_PAIRS=$SMOL/tga_tail/eval_pairs/pairs.jsonl REV_BATCH=8 REV_N=${REV_N:-1600}
export REV_STEPS=${REV_STEPS:-"10 25 50 100"} CONTROL_STEPS=${CONTROL_STEPS:-100} CHECK_ZERO=${CHECK_ZERO:-0}
exec bash "$here/organism.sh"
