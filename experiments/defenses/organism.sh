#!/usr/bin/env bash
# The inference-time defenses on the shipped organism, as reported in docs/defenses.md: calibrated on 400 held-out
# pairs of seed 777, evaluated on the 300 pairs of seed 1234 that `safety-probe tga --model organism` evaluates,
# at the located safety layers (figures/demo/layers.json: blocks 4-6). Knobs: the stated defaults (strength auto,
# chosen on the calibration split; hidden_detect's max FPR 0.05 on the calibration split's benign pairs). About
# 10 min on 2 CPU cores. Then `python experiments/defenses/summary.py "$OUT"` prints the table.
set -euo pipefail
OUT=${OUT:-runs/defenses-organism}
PYTHON=${PYTHON:-python}
sp() { "$PYTHON" -m safety_probe "$@"; }
LAYERS=${LAYERS:-figures/demo/layers.json}
sp data organism --seed 777 --n 400 --out "$OUT/calibration"
sp data organism --seed 1234 --n 300 --out "$OUT/test"
common=(--model organism --calibrate "$OUT/calibration/pairs.jsonl" --pairs "$OUT/test/pairs.jsonl"
        --layers "$LAYERS" --batch-size 32 --max-new-tokens 24 --repeats 3)
for method in refusal_steering:add refusal_steering:ablate shift_correction:cmrm shift_correction:shiftdc \
              hidden_detect:cosine hidden_detect:logprob self_check; do
    sp defend "${common[@]}" --method "$method" --out "$OUT/${method/:/-}"
done
# CMRM's other reading: the last-token shift added at every position from the image on, generated tokens included
sp defend "${common[@]}" --method shift_correction:cmrm --positions after --out "$OUT/shift_correction-cmrm-after"
