"""Render ``speed/results.json`` as the Markdown tables of docs/speed.md.

python -m speed.report [speed/results.json] > tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from speed.tables import DEFAULT_OUT, markdown


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT_OUT
    sys.stdout.write(markdown(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
