"""Image folders, one folder per class (the HOD harmful-object dataset layout, and any like it).

Layouts, first match wins::

    <root>/dataset/class/<name>/**/<image>   the HOD repository (class/<name>/{normal_cases,hard_cases}/)
    <root>/class/<name>/**/<image>
    <root>/<name>/**/<image>

Scene = the class folder name. Label: the classes given by ``harmful_classes`` (a list or a comma string)
are harmful and the others benign; without it every class is harmful except ones named ``benign``,
``normal``, ``safe``, ``neutral`` or ``negative`` (any case). instruction = ``instruction`` (default
"Describe this image."); no caption, no text_query. ``split`` keeps only images whose first sub-folder
below the class is that name (HOD: ``normal_cases`` or ``hard_cases``), stored as ``extra["case"]``.
Files that are not images (HOD's .xml/.txt annotations) are skipped and counted in a logged note.
"""

from __future__ import annotations

from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.data.benchmarks._common import IMAGE_SUFFIXES, note_skipped
from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import DEFAULT_INSTRUCTION

NAME = "imagefolder"
SPLITS = ("all",)
BENIGN_NAMES = ("benign", "normal", "safe", "neutral", "negative")


def _classes_dir(root: Path) -> Path:
    for candidate in (root / "dataset" / "class", root / "class"):
        if candidate.is_dir():
            return candidate
    return root


def _class_folders(root: Path) -> list[Path]:
    base = _classes_dir(root)
    return sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")) if base.is_dir() else []


def detect(root: Path) -> bool:
    """At least one class folder holding an image file."""
    return any(any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.rglob("*")) for d in _class_folders(root))


def read(root: Path, split: str | None = None, harmful_classes: list[str] | str | None = None,
         instruction: str = DEFAULT_INSTRUCTION) -> list[Pair]:
    """Every image under the class folders as a pair labelled by its class."""
    folders = _class_folders(root)
    if not folders:
        raise InputError(f"{root}: no class folders (expected <root>/class/<name>/ or <root>/<name>/)")
    if isinstance(harmful_classes, str):
        harmful_classes = [c.strip() for c in harmful_classes.split(",") if c.strip()]
    if harmful_classes is not None:
        unknown = sorted(set(harmful_classes) - {d.name for d in folders})
        if unknown:
            raise InputError(f"{root}: harmful class {unknown[0]!r} is not a class folder; "
                             f"classes: {', '.join(d.name for d in folders)}")
    pairs, skipped = [], 0
    for folder in folders:
        harmful = folder.name in harmful_classes if harmful_classes is not None else \
            folder.name.lower() not in BENIGN_NAMES
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped += 1
                continue
            rel = path.relative_to(folder)
            case = rel.parts[0] if len(rel.parts) > 1 else None
            if split not in (None, "all") and case != split:
                continue
            pairs.append(Pair(image=path.resolve(), caption=None, instruction=instruction,
                              label="harmful" if harmful else "benign", scene=folder.name,
                              source_id=f"{folder.name}/{rel.as_posix()}",
                              extra={"case": case} if case else {}))
    note_skipped(NAME, skipped, "non-image files (annotations etc.)")
    if not pairs:
        raise InputError(f"{root}: no images in the class folders" + (f" under {split!r}" if split else ""))
    return pairs
