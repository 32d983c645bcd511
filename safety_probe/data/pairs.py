"""The pairs file: JSONL, one image/caption pair a line; loading validates every line and image."""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from safety_probe.core.errors import InputError
from safety_probe.core.files import check_input_path, read_text, resolve, write_jsonl
from safety_probe.data.prompts import DEFAULT_INSTRUCTION

LABELS = ("harmful", "benign")
PAIR_FIELDS = ("image", "caption", "instruction", "label", "scene", "text_query", "source_id")


@dataclass(frozen=True)
class Pair:
    """One image, the caption of that image, and the instruction asked of both.

    ``extra`` keeps every other field of the line (``kind``, ``expected``, ...) for evaluation.
    ``caption`` is None when the source gives no description of the image; ``text_query`` is the source
    benchmark's own text-only equivalent of image + instruction; ``source_id`` is the benchmark's row id.
    """

    image: Path
    caption: str | None
    instruction: str = DEFAULT_INSTRUCTION
    label: str | None = None
    scene: str | None = None
    text_query: str | None = None
    source_id: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def load_image(self) -> Image.Image:
        """Open the image as RGB; a missing or corrupt file raises InputError naming it."""
        return load_image(self.image)


def normalise_text(text: str) -> str:
    """The form captions are compared in (an image's own caption is never its retrieved text): trimmed,
    lower case, one space between words, no final full stop."""
    return " ".join(text.strip().rstrip(".").lower().split())


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit RGB with its content kept, whatever its mode: 16-bit grey (``I;16*``) scaled from 0..65535,
    32-bit integer grey (``I``) from the range its values fit (0..255, 0..65535, else min..max), float grey (``F``) from
    its min..max, transparency (RGBA, LA, PA, a transparent colour) composited on white as transformers'
    ``convert_to_rgb`` does, LAB through an ICC transform; an animated image gives its first frame."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    if im.mode.startswith("I") or im.mode == "F":  # Pillow's convert clips at 255: a 16-bit image would turn white
        values = np.asarray(im, dtype=np.float64)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if im.mode.startswith("I;16") or (im.mode == "I" and 255 < high <= 65535 and low >= 0):
            low, high = 0.0, 65535.0
        elif im.mode == "I" and 0 <= low and high <= 255:
            low, high = 0.0, 255.0
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        return Image.fromarray(np.clip(np.nan_to_num(np.round(scaled)), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "LAB":
        from PIL import ImageCms

        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        return ImageCms.applyTransform(im, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
    if "A" in im.mode or "a" in im.mode or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: Path) -> Image.Image:
    """Open an image file as RGB (:func:`to_rgb`), or raise InputError naming the file: missing, a folder, a symlink
    loop, corrupt, or larger than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb)."""
    path = check_input_path(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"image {path} is too large ({e}); PIL.Image.MAX_IMAGE_PIXELS sets the limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
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


def pair_identity(pair: Pair) -> tuple:
    """Everything of a pair that any result depends on (its image path resolved, every field, extras sorted)."""
    return (str(pair.image), pair.caption, pair.instruction, pair.label, pair.scene, pair.text_query, pair.source_id,
            json.dumps(pair.extra, sort_keys=True, default=str))


def pairs_digest(pairs: list[Pair]) -> list[tuple]:
    """The pairs as plain data, for run keys: equal pairs in equal order, equal digest."""
    return [pair_identity(p) for p in pairs]


def load_pairs(path: str | Path, check_images: bool = True, require_caption: bool = True,
               require_text_query: bool = False, strict: bool = False) -> list[Pair]:
    """Read and validate a pairs JSONL file; images are resolved relative to it.

    Every problem raises InputError naming the file and line number. With ``check_images``
    every image is opened once up front, so a bad image fails before any model work. With
    ``require_caption=False`` a line without ``caption`` is accepted (its caption is None); with
    ``require_text_query`` a line without ``text_query`` is not (what ``--text-run query`` sends).
    A line that repeats an earlier pair (every field equal) is counted once, with one warning line naming the
    lines; with ``strict`` it is an InputError instead.
    """
    path = Path(path)
    pairs = []
    first_line: dict[tuple, int] = {}
    repeats: list[tuple[int, int]] = []
    for lineno, line in enumerate(read_text(path, "pairs file").splitlines(), start=1):
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
        if require_caption and obj.get("caption") is None:
            raise InputError(f"{where}: missing field 'caption' "
                             "(captions can be generated with `safety-probe caption --merge`)")
        if require_text_query and obj.get("text_query") is None:
            raise InputError(f"{where}: missing field 'text_query' (--text-run query sends it as the text run; "
                             "use --text-run caption with captions instead)")
        caption = string_field(obj, "caption", where, required=False)
        instruction = string_field(obj, "instruction", where, required=False) or DEFAULT_INSTRUCTION
        label = string_field(obj, "label", where, required=False)
        if label is not None and label not in LABELS:
            raise InputError(f"{where}: label must be one of {LABELS}, got {label!r}")
        scene = string_field(obj, "scene", where, required=False)
        text_query = string_field(obj, "text_query", where, required=False)
        source_id = string_field(obj, "source_id", where, required=False)
        pair = Pair(
            image=resolve(path.parent / image, f"{where}: image"),
            caption=caption,
            instruction=instruction,
            label=label,
            scene=scene,
            text_query=text_query,
            source_id=source_id,
            extra={k: v for k, v in obj.items() if k not in PAIR_FIELDS},
        )
        identity = pair_identity(pair)
        if identity in first_line:
            if strict:
                raise InputError(f"{where}: repeats the pair of line {first_line[identity]} (--strict)")
            repeats.append((first_line[identity], lineno))
            continue
        first_line[identity] = lineno
        if check_images:
            try:
                pair.load_image()
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
        pairs.append(pair)
    if not pairs:
        raise InputError(f"{path}: no pairs in file")
    if repeats:
        named = ", ".join(f"{b} (= {a})" for a, b in repeats[:5]) + (" ..." if len(repeats) > 5 else "")
        print(f"warning: {path}: {len(repeats)} line(s) repeat an earlier pair and are counted once: lines {named}",
              file=sys.stderr)
    return pairs


def write_pairs(pairs: list[Pair], path: str | Path) -> Path:
    """Write ``pairs`` as a pairs JSONL file, atomically; ``load_pairs`` reads it back unchanged.

    Image paths are written relative to the file's folder when the image lies inside it, else absolute.
    Only fields that are not None are written; ``extra`` fields are merged into the line (an extra key
    that shadows a pair field is an InputError).
    """
    path = Path(path)
    folder = path.parent.resolve()
    rows = []
    for i, pair in enumerate(pairs):
        image = Path(pair.image).resolve()
        rel = image.is_relative_to(folder)
        row = {"image": os.path.relpath(image, folder) if rel else str(image)}
        for key in PAIR_FIELDS[1:]:
            value = getattr(pair, key)
            if value is not None:
                row[key] = value
        clash = sorted(set(pair.extra) & set(PAIR_FIELDS))
        if clash:
            raise InputError(f"pair {i} ({pair.source_id or image}): extra field '{clash[0]}' shadows a pair field")
        row.update(pair.extra)
        rows.append(row)
    return write_jsonl(path, rows)
