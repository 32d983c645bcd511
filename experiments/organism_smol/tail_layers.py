"""The blocks the tail alignment aligns, from a probe-layers layers.json: ``python tail_layers.py layers.json``.

Rule (fixed before any TGA run): the blocks below the readout block where patching the text run's prompt tail into
the image run restores at least half of the largest tail-patching gain (``scores.tail_patching_gain``, measured on
the probe's own held-out pairs, never on the TGA evaluation pairs). The readout block is left out: its output at
the last position is the answer itself, so aligning it would distil the text run's answer rather than align states.
Prints the blocks as a list ("12,13,...") for ``safety-probe tga --layers``.
"""

from __future__ import annotations

import json
import sys


def tail_layers(layers_json: dict) -> list[int]:
    gain = {int(k): v for k, v in layers_json["scores"]["tail_patching_gain"]["per_layer"].items()}
    readout = layers_json["n_layers"] - 1
    best = max(v for k, v in gain.items() if k < readout)
    if best <= 0:
        raise SystemExit("tail patching restores no refusal below the readout block: nothing to align")
    return [k for k in sorted(gain) if k < readout and gain[k] >= 0.5 * best]


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(",".join(map(str, tail_layers(json.load(f)))))
