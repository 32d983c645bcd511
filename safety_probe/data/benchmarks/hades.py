"""HADES (Li et al., ECCV 2024): harmful instructions whose key object is moved into a crafted image.

The published benchmark is a Hugging Face dataset (parquet, images embedded as bytes) with columns
``id, scenario, keywords, step, category, image, instruction``. Read from a LOCAL copy, any of:

    <root>/**/*.parquet                      the dataset's parquet files (e.g. data/test-00000-of-00001.parquet)
    <root>/**/*.json | *.jsonl               the same columns, ``image`` a path relative to the file
    <root>/ (state.json + *.arrow)           a folder written by ``Dataset.save_to_disk`` (needs ``datasets``)

Assumptions (documented in docs/datasets/hades.md): ``instruction`` is the original harmful instruction and
the image shows ``keywords``; the prompt sent with the image is HADES' masked form, where ``keywords`` is
replaced by "the <category> in the image" ("conduct the behavior in the image on" for ``behavior``).
text_query = the original instruction. When the keywords do not occur in the instruction, the instruction
is used unmasked and ``extra["masked"]`` is False. Embedded images are written to ``image_dir``.
``split`` picks one optimisation ``step`` (e.g. ``5``); the default reads every row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.data.benchmarks._common import Row, image_from_value, saved_dataset_rows, table_columns, table_rows
from safety_probe.data.pairs import Pair

NAME = "hades"
SPLITS = ("all",)
COLUMNS = {"id", "scenario", "keywords", "category", "image", "instruction"}


def tables(root: Path, columns: set[str]) -> list[Path]:
    """Parquet/JSON/JSONL files under ``root`` (any depth) whose columns include ``columns``."""
    found = []
    for ext in ("parquet", "jsonl", "json"):
        for path in sorted(root.rglob(f"*.{ext}")):
            if path.name in ("state.json", "dataset_info.json", "dataset_dict.json"):
                continue
            try:
                if columns <= table_columns(path):
                    found.append(path)
            except Exception:  # noqa: BLE001 - an unreadable unrelated file is simply not a table of ours
                continue
    return found


def rows(root: Path, columns: set[str], fmt: str) -> Iterator[tuple[Row, Path]]:
    """Rows (and the folder their relative image paths start from) of a saved dataset or of its table files."""
    if (root / "state.json").is_file() and (root / "dataset_info.json").is_file():
        for row in saved_dataset_rows(root):
            yield row, root
        return
    files = tables(root, columns)
    if not files:
        raise InputError(f"{root}: no {fmt} table found (parquet/JSON/JSONL with columns {', '.join(sorted(columns))})")
    for path in files:
        for row in table_rows(path):
            yield row, path.parent


def detect(root: Path) -> bool:
    """A table with HADES' columns (id, scenario, keywords, category, image, instruction)."""
    return bool(tables(root, COLUMNS))


def read(root: Path, split: str | None = None, image_dir: Path | None = None) -> list[Pair]:
    """Every HADES row (or those of one ``step``) as a harmful pair with the masked instruction."""
    image_dir = Path(image_dir) if image_dir else root / "safety_probe_images" / NAME
    pairs = []
    for row, base in rows(root, COLUMNS, NAME):
        step = row.text("step", required=False)
        if split not in (None, "all") and step != split:
            continue
        rid, scenario = row.text("id"), row.text("scenario")
        row.row = f"{row.row} (id {rid})"
        original, keywords, category = row.text("instruction"), row.text("keywords"), row.text("category")
        mask = "conduct the behavior in the image on" if category == "behavior" else f"the {category} in the image"
        masked = keywords in original
        stem = f"{scenario}_{rid}" + (f"_step{step}" if step is not None else "")
        pairs.append(Pair(
            image=image_from_value(row.data["image"], row, base, image_dir, stem),
            caption=None,
            instruction=original.replace(keywords, mask) if masked else original,
            label="harmful",
            scene=scenario,
            text_query=original,
            source_id=rid if step is None else f"{rid}/step{step}",
            extra={"attack": "hades", "keywords": keywords, "category": category, "masked": masked,
                   **({"step": step} if step is not None else {})},
        ))
    if not pairs:
        raise InputError(f"{root}: no HADES rows" + (f" with step {split!r}" if split not in (None, "all") else ""))
    return pairs
