#!/usr/bin/env bash
# Row "last-position tail": the centred tail guide at the last prompt position only (the token the answer starts
# from) at the tail blocks 16-28: aligning the text run's refusal decision itself.
source "$(dirname "$0")/../common.sh"
row tail_last --layers "$TAIL_LAYERS" --guide-span last --guide-centre true --guide-centre-by batch --guide-layer-mean false
