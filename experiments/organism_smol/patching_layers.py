"""The blocks an alignment aligns, read off a probe-layers layers.json's patching curve:

    python patching_layers.py layers.json          # tail patching: the blocks of --guide-span tail
    python patching_layers.py layers.json caption  # caption-mean patching: the blocks of paper TGA's loss

Rule (fixed before any TGA run, the same for both curves): the blocks below the readout block where the patching
restores at least half of its largest gain there (``scores.tail_patching_gain`` or ``scores.patching_gain``,
measured on the probe's own held-out pairs, never on the TGA evaluation pairs). The readout block is left out: its
output at the last position is the answer itself, so aligning it would distil the text run's answer rather than
align states. Prints the blocks as a list ("12,13,...") for ``safety-probe tga --layers``.
"""

from __future__ import annotations

import json
import sys

SCORES = {"tail": "tail_patching_gain", "caption": "patching_gain"}


def patching_layers(layers_json: dict, curve: str = "tail") -> list[int]:
    gain = {int(k): v for k, v in layers_json["scores"][SCORES[curve]]["per_layer"].items()}
    readout = layers_json["n_layers"] - 1
    best = max(v for k, v in gain.items() if k < readout)
    if best <= 0:
        raise SystemExit(f"{curve} patching restores no refusal below the readout block: nothing to align")
    return [k for k in sorted(gain) if k < readout and gain[k] >= 0.5 * best]


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in SCORES):
        raise SystemExit(f"usage: patching_layers.py layers.json [{'|'.join(SCORES)}]")
    with open(sys.argv[1]) as f:
        print(",".join(map(str, patching_layers(json.load(f), *sys.argv[2:]))))
