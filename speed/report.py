"""Render the results file as the Markdown tables of docs/speed.md.

python -m speed.report [speed/results.json] > tables.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from speed.results import DEFAULT_OUT, load
from speed.tables import markdown


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sys.stdout.write(markdown(load(Path(argv[0]) if argv else DEFAULT_OUT)))


if __name__ == "__main__":
    main()
