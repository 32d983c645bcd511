#!/usr/bin/env bash
# Defenses beside the table: `safety-probe defend` on organism-smol before alignment, each calibrated on the
# VALIDATION split (280 pairs) at Algorithm 1's band J = {27, 29} (the committed probe run), evaluated on the test
# split. One run each (no training, no seeds). score.py --runs RUNS/defenses --name defenses scores them.
source "$(dirname "$0")/../common.sh"
cal=$(split_pairs validation)
test=$(split_pairs test)
for method in ${DEFENSES:-refusal_steering:add shift_correction:cmrm hidden_detect:logprob self_check}; do
  out=$RUNS/defenses/${method/:/-}
  if [ ! -f "$out/metrics.json" ]; then
    mkdir -p "$out"
    $SP defend --model $MODEL --method "$method" --calibrate "$cal" --pairs "$test" --layers "$LAYERS_JSON" \
      --repeats 1 --batch-size 32 --max-new-tokens 24 --out "$out" > "$out.log" 2>&1 || { tail "$out.log" >&2; exit 1; }
  fi
  mkdir -p "$out/eval-test"
  ln -sf ../responses.jsonl "$out/eval-test/responses.jsonl"
done
