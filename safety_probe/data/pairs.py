"""The pairs file: JSONL, one image/caption pair a line; loading validates every line and image."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from safety_probe.errors import InputError
from safety_probe.prompts import DEFAULT_INSTRUCTION

LABELS = ("harmful", "benign")


@dataclass(frozen=True)
class Pair:
    """One image, the caption of that image, and the instruction asked of both.

    ``extra`` keeps every other field of the line (``kind``, ``expected``, ...) for evaluation.
    """

    image: Path
    caption: str
    instruction: str = DEFAULT_INSTRUCTION
    label: str | None = None
    scene: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def load_image(self) -> Image.Image:
        """Open the image as RGB; a missing or corrupt file raises InputError naming it."""
        return load_image(self.image)


def normalise_text(text: str) -> str:
    """The form captions are compared in (an image's own caption is never its retrieved text): trimmed,
    lower case, one space between words, no final full stop."""
    return " ".join(text.strip().rstrip(".").lower().split())


def load_image(path: Path) -> Image.Image:
    """Open an image file as RGB, or raise InputError naming the file."""
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"corrupt image {path}: {e}") from None


def string_field(obj: dict, key: str, where: str, required: bool = True) -> str | None:
    """``obj[key]`` as a non-empty string; None when absent and not ``required``; else one-line InputError."""
    value = obj.get(key)
    if value is None:
        if required:
            raise InputError(f"{where}: missing field '{key}'")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field '{key}' must be a non-empty string")
    return value


def load_pairs(path: str | Path, check_images: bool = True) -> list[Pair]:
    """Read and validate a pairs JSONL file; images are resolved relative to it.

    Every problem raises InputError naming the file and line number. With ``check_images``
    every image is opened once up front, so a bad image fails before any model work.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs file not found: {path}")
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: malformed JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object")
        image = string_field(obj, "image", where, required=True)
        caption = string_field(obj, "caption", where, required=True)
        instruction = string_field(obj, "instruction", where, required=False) or DEFAULT_INSTRUCTION
        label = string_field(obj, "label", where, required=False)
        if label is not None and label not in LABELS:
            raise InputError(f"{where}: label must be one of {LABELS}, got {label!r}")
        scene = string_field(obj, "scene", where, required=False)
        known = {"image", "caption", "instruction", "label", "scene"}
        pair = Pair(
            image=(path.parent / image).resolve(),
            caption=caption,
            instruction=instruction,
            label=label,
            scene=scene,
            extra={k: v for k, v in obj.items() if k not in known},
        )
        if check_images:
            try:
                pair.load_image()
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
        pairs.append(pair)
    if not pairs:
        raise InputError(f"{path}: no pairs in file")
    return pairs
