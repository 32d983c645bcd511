"""Render every results table of README.md and docs/ from the committed result files, or check that they are.

    python experiments/render_tables.py            # rewrite each marked table in place
    python experiments/render_tables.py --check    # re-render, fail on any difference (make docs-check)

A results table in a document sits between a marker naming its renderer and sources and an end marker:

    <!-- rendered from experiments/organism_smol/results/eval/metrics.json by experiments/render_tables.py: smol_eval -->
    | ... the table ... |
    <!-- end -->

The renderer (a function of :data:`TABLES`) reads only its sources, which are committed result files; the marker line
itself is rewritten from the registry, so a table always names the files it came from. ``--check`` names every table
and source it checked, and every document and table that differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.defenses import render as defenses  # noqa: E402
from experiments.demo import render as demo  # noqa: E402
from experiments.locate.table import separation_table  # noqa: E402
from experiments.organism_smol import render as organism_smol  # noqa: E402
from experiments.reviewers import render as reviewers  # noqa: E402
from experiments.tga import render as tga  # noqa: E402
from speed import tables as speed  # noqa: E402

DOCS = (
    "README.md",
    "docs/organism-smol.md",
    "docs/tga.md",
    "docs/reviewers.md",
    "docs/defenses.md",
    "docs/science.md",
    "docs/speed.md",
)
MARK = re.compile(
    r"<!-- rendered from (?P<src>.*?) by experiments/render_tables\.py: (?P<name>[\w-]+) -->\n"
    r"(?P<body>.*?)<!-- end -->",
    re.S,
)

TABLES: dict[str, tuple[list[str], Callable[[list[str]], str]]] = {
    **demo.TABLES,
    **organism_smol.TABLES,
    **reviewers.TABLES,
    **tga.TABLES,
    **defenses.TABLES,
    **speed.TABLES,
    "locate_separation": (["experiments/locate/results/separation.json"], separation_table),
}
"""Every renderer by name: the tables of each experiment folder (its ``render.py``), the locating table and the speed
harness's (speed/tables.py)."""


def render_block(name: str) -> str:
    if name not in TABLES:
        raise SystemExit(f"unknown table {name!r} (experiments/render_tables.py TABLES)")
    sources, fn = TABLES[name]
    return (
        f"<!-- rendered from {', '.join(sources)} by experiments/render_tables.py: {name} -->\n"
        f"{fn(sources)}<!-- end -->"
    )


def render_text(text: str, found: list[str]) -> str:
    def sub(m: re.Match) -> str:
        found.append(m["name"])
        return render_block(m["name"])

    return MARK.sub(sub, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail on any difference instead of rewriting")
    ap.add_argument("docs", nargs="*", default=list(DOCS))
    args = ap.parse_args()
    bad = []
    for doc in args.docs:
        path = ROOT / doc
        text = path.read_text()
        found: list[str] = []
        new = render_text(text, found)
        for name in found:
            print(f"{doc}: {name} <- {', '.join(TABLES[name][0])}")
        if not found:
            print(f"{doc}: no rendered tables")
        if new != text:
            if args.check:
                old_blocks = {m["name"]: m.group(0) for m in MARK.finditer(text)}
                differ = [n for n in found if old_blocks.get(n) != render_block(n)]
                bad.append(f"{doc}: {', '.join(differ) or 'markers'} differ from their sources")
            else:
                path.write_text(new)
                print(f"{doc}: rewritten")
    if bad:
        print("\n".join(["docs-check FAILED:", *bad, "run `python experiments/render_tables.py` and review the diff"]))
        raise SystemExit(1)
    if args.check:
        print("docs-check: every rendered table matches its sources")


if __name__ == "__main__":
    main()
