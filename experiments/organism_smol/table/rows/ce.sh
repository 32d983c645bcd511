#!/usr/bin/env bash
# Row "ce": the same training without the guide (λ = 0): toxic rows guide-only therefore train nothing.
source "$(dirname "$0")/../common.sh"
row ce --layers "$LAYERS_JSON" --guide-weight 0 --guide-span image --guide-centre false --guide-layer-mean false
