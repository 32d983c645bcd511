"""The few helpers every results-table renderer shares: read a committed result file, format a share with its Wilson
interval, write a markdown table (experiments/render_tables.py and the renderers of each experiment folder)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from safety_probe.analysis.scores import wilson_interval

ROOT = Path(__file__).resolve().parents[1]


def read(path: str):
    """A result file relative to the repository: CSV as a list of dicts, anything else as JSON."""
    p = ROOT / path
    if p.suffix == ".csv":
        with p.open(newline="") as f:
            return list(csv.DictReader(f))
    return json.loads(p.read_text())


def table(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table, newline-terminated."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def wilson(p: float | None, n: int | None, digits: int = 2) -> str:
    """``p [lo, hi]`` (Wilson 95%) with ``p`` to 3 decimals and the interval to ``digits``; blank when undefined."""
    if p is None or not n:
        return ""
    lo, hi = wilson_interval(p, n)
    return f"{p:.3f} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


IMAGE_RATES = (("image_dsr", "n_harmful"), ("text_dsr", "n_harmful"), ("image_benign_refusal", "n_benign"),
               ("image_task_accuracy", "n_benign"))
"""An evaluation's headline shares (image DSR, text DSR, image over-refusal, image task accuracy) and their n."""


def rates(overall: dict, columns: tuple[tuple[str, str], ...] = IMAGE_RATES) -> list[str]:
    """The cells ``wilson(overall[share], overall[n])`` of an evaluation's ``overall`` record, one per column."""
    return [wilson(overall.get(share), overall.get(n)) for share, n in columns]


def span(layers: list[int]) -> str:
    """``4–6`` for a run of blocks, ``27, 29`` otherwise."""
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return ", ".join(map(str, layers))
