"""The blocks an alignment aligns, read off a probe-layers layers.json's patching curve:

    python patching_layers.py layers.json          # tail patching: the blocks of --guide-span tail
    python patching_layers.py layers.json caption  # caption-mean patching: the blocks of paper TGA's loss

Rule (fixed before any TGA run, the same for both curves; :func:`safety_probe.analysis.locate.patching_band`, which
`safety-probe tga --model organism-smol --layers layers.json` applies too): the blocks below the readout block where
the patching restores at least half of its largest gain there (``scores.tail_patching_gain`` or
``scores.patching_gain``, measured on the probe's own held-out pairs, never on the TGA evaluation pairs). Prints the
blocks as a list ("12,13,...") for ``safety-probe tga --layers``.
"""

from __future__ import annotations

import json
import sys

from safety_probe.analysis.locate import PATCHING_CURVES, patching_band

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in PATCHING_CURVES):
        raise SystemExit(f"usage: patching_layers.py layers.json [{'|'.join(PATCHING_CURVES)}]")
    with open(sys.argv[1]) as f:
        try:
            print(",".join(map(str, patching_band(json.load(f), *sys.argv[2:]))))
        except ValueError as e:
            raise SystemExit(str(e)) from None
