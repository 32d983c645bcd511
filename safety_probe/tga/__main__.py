"""``python -m safety_probe.tga ...`` = ``safety-probe tga ...``; the module form is what
``accelerate launch -m safety_probe.tga`` needs."""

from __future__ import annotations

import sys

from safety_probe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["tga", *sys.argv[1:]]))
