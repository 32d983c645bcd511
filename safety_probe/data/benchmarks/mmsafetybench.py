"""MM-SafetyBench (Liu et al., ECCV 2024): query-relevant images for 13 harmful scenarios.

Published layout (the GitHub repository ships the questions, the images come as a separate archive)::

    <root>/processed_questions/<NN-Scenario>.json     (or <root>/data/processed_questions/)
    <root>/imgs/<NN-Scenario>/{SD,TYPO,SD_TYPO}/<id>.jpg   (or data/imgs/, or "MM-SafetyBench(imgs)/")

Each questions file is an object id -> {"Question", "Rephrased Question", "Rephrased Question(SD)",
"Key Phrase", "Phrase Type", "Changed Question", ...}. Every pair is harmful; the scene is the scenario
folder name. Instructions follow the benchmark's own pairing: SD images with "Rephrased Question(SD)",
TYPO and SD_TYPO images with "Rephrased Question". ``text_query`` is the original "Question".

Image types: ``split`` picks them, as one type or a comma list (``SD_TYPO`` or ``SD,TYPO``); the default
is all three, one pair per question and type, with ``extra["image_type"]`` so each is its own row.
"""

from __future__ import annotations

from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.data.benchmarks._common import Row, first_existing, image_file, json_rows
from safety_probe.data.pairs import Pair

NAME = "mmsafetybench"
IMAGE_TYPES = {"SD": "Rephrased Question(SD)", "TYPO": "Rephrased Question", "SD_TYPO": "Rephrased Question"}
SPLITS = ("all", "SD", "TYPO", "SD_TYPO")
_IMAGE_DIRS = ("imgs", "data/imgs", "MM-SafetyBench(imgs)", "data/MM-SafetyBench(imgs)")


def _questions_dir(root: Path) -> Path:
    return first_existing([root / "processed_questions", root / "data" / "processed_questions"],
                          "processed_questions/ folder", root)


def detect(root: Path) -> bool:
    """A processed_questions/ folder of JSON files beside an images folder."""
    return any((root / d / "processed_questions").is_dir() and any((root / d / "processed_questions").glob("*.json"))
               for d in (".", "data"))


def _types(split: str | None) -> list[str]:
    if split in (None, "all"):
        return list(IMAGE_TYPES)
    types = [t.strip() for t in split.split(",") if t.strip()]
    unknown = [t for t in types if t not in IMAGE_TYPES]
    if unknown or not types:
        raise InputError(f"{NAME}: unknown image type {unknown[0] if unknown else split!r}; "
                         f"known: all, {', '.join(IMAGE_TYPES)} (or a comma list)")
    return types


def read(root: Path, split: str | None = None) -> list[Pair]:
    """Every (question, image type) of a local MM-SafetyBench copy as a harmful pair."""
    types = _types(split)
    qdir = _questions_dir(root)
    images = first_existing([root / d for d in _IMAGE_DIRS], "image folder", root)
    files = sorted(qdir.glob("*.json"))
    if not files:
        raise InputError(f"{qdir}: no <scenario>.json question files")
    pairs = []
    for path in files:
        scenario = path.stem
        for row in json_rows(path, "MM-SafetyBench questions", keyed=True):
            pairs.extend(_pairs(row, scenario, images / scenario, types))
    return pairs


def _pairs(row: Row, scenario: str, folder: Path, types: list[str]) -> list[Pair]:
    question = row.text("Question")
    out = []
    for image_type in types:
        key = IMAGE_TYPES[image_type]
        extra = {"attack": "query_relevant", "image_type": image_type, "question_field": key}
        for field, name in (("Key Phrase", "key_phrase"), ("Phrase Type", "phrase_type")):
            if row.text(field, required=False):
                extra[name] = row.data[field]
        out.append(Pair(
            image=image_file(folder, f"{image_type}/{row.row}.jpg", row, key="image"),
            caption=None,
            instruction=row.text(key),
            label="harmful",
            scene=scenario,
            text_query=question,
            source_id=f"{scenario}/{row.row}",
            extra=extra,
        ))
    return out
