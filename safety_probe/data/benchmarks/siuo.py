"""SIUO (Wang et al., 2024): Safe Inputs but Unsafe Output, a cross-modal safety benchmark.

Published layout (the GitHub repository / dataset card; images from the SIUO images archive)::

    <root>/siuo_gen.json   (split "gen", default)  or <root>/data/siuo_gen.json
    <root>/siuo_mcqa.json  (split "mcqa")
    <root>/images/<image>  (beside the JSON, or <root>/images/)

Each file is a list of {"question_id", "image", "question", "category", ...} (gen adds e.g.
"safety_warning", "reference_answer"; mcqa adds its options and answer). Image and text are each safe, but
answering the combination helpfully would be unsafe, so every pair is labelled harmful: the benchmark
scores a safe response (one that warns or declines) as success. Every other field of a row is kept in
``extra`` under its own name. The multiple-choice prompt is not rebuilt: instruction = ``question``.
"""

from __future__ import annotations

from pathlib import Path

from safety_probe.data.benchmarks._common import check_split, first_existing, image_file, json_rows
from safety_probe.data.pairs import Pair

NAME = "siuo"
SPLITS = ("gen", "mcqa")
_KNOWN = ("question_id", "image", "question", "category")


def detect(root: Path) -> bool:
    """A siuo_gen.json or siuo_mcqa.json at the root or in data/."""
    return any((d / f"siuo_{s}.json").is_file() for d in (root, root / "data") for s in SPLITS)


def read(root: Path, split: str | None = None) -> list[Pair]:
    """Every SIUO question of one split as a harmful (safe-input, unsafe-output) pair."""
    split = check_split(split, SPLITS, NAME)
    meta = first_existing([root / f"siuo_{split}.json", root / "data" / f"siuo_{split}.json"],
                          f"siuo_{split}.json", root)
    images = first_existing([meta.parent / "images", root / "images"], "images/ folder", root)
    pairs = []
    for row in json_rows(meta, "SIUO questions"):
        qid = row.text("question_id")
        row.row = f"{row.row} (question_id {qid})"
        pairs.append(Pair(
            image=image_file(images, row.text("image"), row),
            caption=None,
            instruction=row.text("question"),
            label="harmful",
            scene=row.text("category"),
            source_id=qid,
            extra={"subset": split, **row.rest(_KNOWN)},
        ))
    return pairs
