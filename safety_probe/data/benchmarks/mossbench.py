"""MOSSBench (Li et al., 2024): benign queries that oversensitive VLMs refuse, and harmful contrast queries.

Published layout (the GitHub repository; images from the dataset card's images.zip unzipped in data/)::

    <root>/data/images_information/information.json        (split "oversensitivity", label benign)
    <root>/data/images/<pid>.png
    <root>/data_contrast/images_information/information.json (split "contrast", label harmful)
    <root>/data_contrast/images/<pid>.png

information.json is an object pid -> {"image": "images/<pid>.png", "short description", "description",
"question", "pid", "metadata": {"over", "human", "child", "syn", "ocr", "harm"}}. ``image`` is relative
to data/ (data_contrast/); when that exact file is absent, the same name with another image suffix is
used (the image archive ships JPG/WEBP files under the listed ``.png`` names).

caption = ``description`` (the oracle description of the image), or ``short description`` when the
description is empty (``extra["caption_source"]`` says which; neither present -> no caption). Scene = the
stimulus type from ``metadata.over``: "type 1"/"type 2"/"type 3" are read as Exaggerated Risk / Negated
Harm / Counterintuitive Interpretation (the order of the paper; names already spelled out are kept).
No text_query: the benchmark has no text-only version.
"""

from __future__ import annotations

from pathlib import Path

from safety_probe.data.benchmarks._common import Row, check_split, first_existing, image_file, json_rows
from safety_probe.data.pairs import Pair

NAME = "mossbench"
SPLITS = ("oversensitivity", "contrast")
STIMULI = {"type 1": "Exaggerated Risk", "type 2": "Negated Harm", "type 3": "Counterintuitive Interpretation"}
_FOLDERS = {"oversensitivity": "data", "contrast": "data_contrast"}
_INFO = Path("images_information") / "information.json"


def detect(root: Path) -> bool:
    """An images_information/information.json under data/, data_contrast/ or the root."""
    return any((d / _INFO).is_file() for d in (root, root / "data", root / "data_contrast"))


def read(root: Path, split: str | None = None) -> list[Pair]:
    """Every MOSSBench query of one split; benign for ``oversensitivity``, harmful for ``contrast``."""
    split = check_split(split, SPLITS, NAME)
    info = first_existing([root / _FOLDERS[split] / _INFO] + ([root / _INFO] if split == SPLITS[0] else []),
                          f"{_FOLDERS[split]}/{_INFO}", root)
    base = info.parent.parent
    return [_pair(row, base, split) for row in json_rows(info, "MOSSBench information", keyed=True)]


def _pair(row: Row, base: Path, split: str) -> Pair:
    meta = row.items("metadata", dict) if "metadata" in row.data else {}
    over = meta.get("over")
    extra = {"subset": split, **{k: v for k, v in meta.items() if k != "over"}}
    if over is not None:
        extra["over"] = over
    caption = row.text("description", required=False)
    if caption:
        extra["caption_source"] = "description"
    else:
        caption = row.text("short description", required=False)
        if caption:
            extra["caption_source"] = "short description"
    return Pair(
        image=image_file(base, row.text("image"), row, alternatives=True),
        caption=caption,
        instruction=row.text("question"),
        label="benign" if split == "oversensitivity" else "harmful",
        scene=STIMULI.get(str(over).strip().lower(), over) if over is not None else None,
        source_id=row.text("pid", required=False) or str(row.row),
        extra=extra,
    )
