"""SPA-VL (Zhang et al., 2024): a safety preference-alignment dataset; its test sets are read here.

Published layout (the Hugging Face dataset's parquet files, images embedded as bytes)::

    <root>/test/harm-*.parquet   or test/harm/*.parquet   split "harm" (default): image, question, class1-3
    <root>/test/help-*.parquet   or test/help/*.parquet   split "help"
    <root>/evalharm/test-*.parquet (or evalharm/test/*.parquet)   split "evalharm": image, question
    <root>/evalhelp/test-*.parquet (or evalhelp/test/*.parquet)   split "evalhelp"

Labels: every ``harm``/``evalharm`` question is harmful (they are drawn from the harm taxonomy, class1 >
class2 > class3). ``help``/``evalhelp`` score the helpfulness of answers, not refusal, so their pairs carry
no label (``extra["subset"]`` says which). Scene = class1, extra class2 and class3. The training set
(preference pairs with chosen/rejected responses) is not read. Embedded images go to ``image_dir``.
"""

from __future__ import annotations

from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.data.benchmarks._common import check_split, image_from_value, table_rows
from safety_probe.data.pairs import Pair

NAME = "spavl"
SPLITS = ("harm", "help", "evalharm", "evalhelp")
_PATTERNS = {"harm": ("test/harm-*.parquet", "test/harm/*.parquet"),
             "help": ("test/help-*.parquet", "test/help/*.parquet"),
             "evalharm": ("evalharm/test-*.parquet", "evalharm/test/*.parquet"),
             "evalhelp": ("evalhelp/test-*.parquet", "evalhelp/test/*.parquet")}


def _files(root: Path, split: str) -> list[Path]:
    return sorted(p for pattern in _PATTERNS[split] for p in root.glob(pattern))


def detect(root: Path) -> bool:
    """SPA-VL's test/ or evalharm/ parquet files."""
    return any(_files(root, split) for split in SPLITS)


def read(root: Path, split: str | None = None, image_dir: Path | None = None) -> list[Pair]:
    """Every question of one SPA-VL test split as a pair (harmful for the harm splits)."""
    split = check_split(split, SPLITS, NAME)
    files = _files(root, split)
    if not files:
        raise InputError(f"{root}: no SPA-VL {split} parquet files (looked for {', '.join(_PATTERNS[split])})")
    image_dir = Path(image_dir) if image_dir else root / "safety_probe_images" / NAME
    pairs = []
    for path in files:
        for row in table_rows(path):
            sid = f"{split}/{path.stem}/{row.row}"
            extra = {"subset": split}
            for key in ("class2", "class3"):
                if row.text(key, required=False):
                    extra[key] = row.data[key]
            if "image" not in row.data:
                raise row.fail("image", "missing")
            pairs.append(Pair(
                image=image_from_value(row.data["image"], row, path.parent, image_dir, sid.replace("/", "_")),
                caption=None,
                instruction=row.text("question"),
                label="harmful" if "harm" in split else None,
                scene=row.text("class1", required=False),
                source_id=sid,
                extra=extra,
            ))
    return pairs
