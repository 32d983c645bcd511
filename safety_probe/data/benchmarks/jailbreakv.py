"""JailBreakV-28K (Luo et al., COLM 2024): LLM jailbreak prompts and image attacks against VLMs.

Published layout (the dataset card's files; images are the folders beside the CSV)::

    <root>/JailBreakV_28K/JailBreakV_28K.csv        (or <root>/JailBreakV_28K.csv)
    <root>/JailBreakV_28K/mini_JailBreakV_28K.csv   (split "mini_JailBreakV_28K")
    <root>/JailBreakV_28K/{llm_transfer_attack,query_related,figstep}/...   (the ``image_path`` values)

Columns: id, jailbreak_query, redteam_query, format, policy, image_path, from, selected_mini,
transfer_from_llm. ``image_path`` is relative to the folder holding the CSV. Every pair is harmful:
instruction = ``jailbreak_query``, ``text_query`` = ``redteam_query`` (the plain RedTeam-2K query),
scene = ``policy``; ``extra["attack_format"]`` = ``format`` and ``extra["attack"]`` its lower-case form
(``figstep`` rows are FigStep-style typographic attacks). RedTeam_2K.csv (text only, no image) is not read.
"""

from __future__ import annotations

from pathlib import Path

from safety_probe.data.benchmarks._common import check_split, csv_rows, first_existing, image_file
from safety_probe.data.pairs import Pair

NAME = "jailbreakv"
SPLITS = ("JailBreakV_28K", "mini_JailBreakV_28K")
COLUMNS = ("id", "jailbreak_query", "redteam_query", "format", "policy", "image_path")


def _csv(root: Path, split: str) -> list[Path]:
    return [root / "JailBreakV_28K" / f"{split}.csv", root / f"{split}.csv"]


def detect(root: Path) -> bool:
    """A JailBreakV_28K.csv or mini_JailBreakV_28K.csv at the root or in JailBreakV_28K/."""
    return any(p.is_file() for split in SPLITS for p in _csv(root, split))


def read(root: Path, split: str | None = None) -> list[Pair]:
    """Every row of JailBreakV_28K.csv (or the mini CSV) as a harmful pair."""
    split = check_split(split, SPLITS, NAME)
    table = first_existing(_csv(root, split), f"{split}.csv", root)
    pairs = []
    for row in csv_rows(table, COLUMNS):
        row.row = f"{row.row} (id {row.text('id')})"
        fmt = row.text("format")
        extra = {"attack": fmt.lower(), "attack_format": fmt}
        if row.text("from", required=False):
            extra["source"] = row.data["from"]
        for key in ("selected_mini", "transfer_from_llm"):
            value = row.flag(key, required=False)
            if value is not None:
                extra[key] = value
        pairs.append(Pair(
            image=image_file(table.parent, row.text("image_path"), row, key="image_path"),
            caption=None,
            instruction=row.text("jailbreak_query"),
            label="harmful",
            scene=row.text("policy"),
            text_query=row.text("redteam_query"),
            source_id=row.text("id"),
            extra=extra,
        ))
    return pairs
