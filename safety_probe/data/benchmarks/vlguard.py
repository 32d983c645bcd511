"""VLGuard (Zong et al., ICML 2024): safe and unsafe images with safe and unsafe instructions.

Published layout (GitHub ``data/`` or the dataset card; the image zips extracted in place)::

    <root>/{train,test}.json      (or <root>/data/{train,test}.json)
    <root>/{train,test}/<image>   (the ``image`` field, e.g. bad_ads/<uuid>.png; also data/<split>/,
                                   VLGuard/<split>/ or data/VLGuard/<split>/)

Each row: {"id", "image", "safe": bool, "harmful_category", "harmful_subcategory" (unsafe images only),
"instr-resp": [{"instruction" | "safe_instruction" | "unsafe_instruction": ..., "response": ...}]}.
One pair per instruction. Label: harmful when the image is unsafe or the instruction is the
``unsafe_instruction``; benign for a safe image with its ``safe_instruction``. ``extra["subset"]`` names the
benchmark's evaluation subsets: ``unsafes``, ``safe_unsafes``, ``safe_safes``. Scene: the harmful category
for unsafe images, else the subset name. ``extra["response"]`` is the reference response.
"""

from __future__ import annotations

from pathlib import Path

from safety_probe.data.benchmarks._common import Row, check_split, first_existing, image_file, json_rows
from safety_probe.data.pairs import Pair

NAME = "vlguard"
SPLITS = ("test", "train")
_KEYS = ("instruction", "safe_instruction", "unsafe_instruction")


def detect(root: Path) -> bool:
    """A train.json or test.json whose rows carry ``instr-resp``."""
    for d in (root, root / "data"):
        for split in SPLITS:
            path = d / f"{split}.json"
            if path.is_file():
                with path.open(encoding="utf-8") as f:
                    if '"instr-resp"' in f.read(8192):
                        return True
    return False


def read(root: Path, split: str | None = None) -> list[Pair]:
    """Every (image, instruction) of one VLGuard split as a labelled pair."""
    split = check_split(split, SPLITS, NAME)
    meta = first_existing([root / f"{split}.json", root / "data" / f"{split}.json"], f"{split}.json", root)
    images = first_existing([meta.parent / split, root / split, root / "data" / split, root / "VLGuard" / split,
                             root / "data" / "VLGuard" / split], f"{split}/ image folder", root)
    pairs = []
    for row in json_rows(meta, "VLGuard metadata"):
        pairs.extend(_pairs(row, images, split))
    return pairs


def _pairs(row: Row, images: Path, split: str) -> list[Pair]:
    row.row = row.text("id", required=False) or row.row
    safe = row.flag("safe")
    image = image_file(images, row.text("image"), row)
    category = None if safe else row.text("harmful_category")
    out = []
    for k, item in enumerate(row.items("instr-resp")):
        sub = Row(item, row.file, f"{row.row} instr-resp[{k}]")
        keys = [key for key in _KEYS if key in item]
        if len(keys) != 1:
            raise sub.fail("instruction", f"expected exactly one of {', '.join(_KEYS)}, got {sorted(item)}")
        key = keys[0]
        subset = "unsafes" if not safe else ("safe_unsafes" if key == "unsafe_instruction" else "safe_safes")
        harmful = not safe or key == "unsafe_instruction"
        extra = {"subset": subset, "instruction_kind": key, "split": split}
        if sub.text("response", required=False):
            extra["response"] = item["response"]
        if not safe and row.text("harmful_subcategory", required=False):
            extra["harmful_subcategory"] = row.data["harmful_subcategory"]
        out.append(Pair(image=image, caption=None, instruction=sub.text(key),
                        label="harmful" if harmful else "benign", scene=category or subset,
                        source_id=str(row.row), extra=extra))
    return out
