#!/usr/bin/env bash
# README's TGA table: the command README shows, run after `make demo` on the layers it located (figures/demo), its
# compare.json committed to experiments/demo/results/tga/ and rendered into README by experiments/render_tables.py.
# The organism's preset carries the recipe of docs/tga.md (alignment data, 300 held-out pairs, the baselines).
# About 30 minutes of 2 CPU cores; the run resumes.
set -euo pipefail
export TOKENIZERS_PARALLELISM=false
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/tga}
$PY -m safety_probe tga --model organism --layers figures/demo/layers.json --out "$OUT"
mkdir -p experiments/demo/results/tga
cp "$OUT/compare.json" experiments/demo/results/tga/compare.json
$PY experiments/render_tables.py README.md
