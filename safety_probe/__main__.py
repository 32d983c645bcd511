"""``python -m safety_probe COMMAND ...`` = ``safety-probe COMMAND ...``; also the target of
``accelerate launch -m safety_probe tga ...`` (one process per device)."""

from __future__ import annotations

from safety_probe.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
