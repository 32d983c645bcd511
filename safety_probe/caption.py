"""Captions of images by a vision-language model: batched greedy generation, resumable, merged into pairs files.

The paper's pairs carry captions written by a strong LVLM (LLaVA-1.5-13B / LLaVA-NeXT; Xu et al. 2025, §1).

    >>> source = read_source("images/")                      # a folder (recursive) or a pairs JSONL file
    >>> store = CaptionFile("captions.jsonl", vlm.name, DEFAULT_PROMPT)
    >>> run = caption_images(vlm, source, store)              # skips the images the file already holds
    >>> write_pairs(merge_captions(source, store.rows), "pairs.captioned.jsonl")   # pairs input only

A captions row: ``image`` (the key: the path relative to the folder, or to the pairs file's folder, else absolute),
``caption`` (the generation's first sentence, or None when the generation was empty), ``model``, ``prompt``, and
``refused`` (whether the caption opens as a refusal). Rows are appended as batches finish.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from safety_probe.core.errors import InputError
from safety_probe.core.files import append_jsonl, read_text, write_jsonl
from safety_probe.core.resume import resumable, run_key
from safety_probe.data.pairs import Pair, load_image, load_pairs
from safety_probe.models.generate import generate
from safety_probe.models.vlm import VLM
from safety_probe.probe.refusal import is_refusal

DEFAULT_PROMPT = "Provide a one-sentence caption for the provided image."
"""LLaVA-1.5's own short-caption prompt (Liu et al. 2024, *Improved Baselines with Visual Instruction Tuning*)."""

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

ROW_FIELDS = ("image", "caption", "model", "prompt", "refused")

# A sentence ends at . ! or ? followed by white space (so "3.5" stays whole), or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")


def first_sentence(text: str) -> str | None:
    """The caption of a generation: stripped and cut after its first sentence; None when nothing is left."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip() or None


@dataclass(frozen=True)
class Source:
    """The images to caption, by key in input order; ``pairs`` when read from a pairs file (``root``: its folder)."""

    images: dict[str, Path]
    root: Path
    pairs: list[Pair] | None = None

    def key(self, image: Path) -> str:
        """An image's key: its path relative to ``root`` when inside it (POSIX form), else absolute."""
        image = Path(image).resolve()
        return image.relative_to(self.root).as_posix() if image.is_relative_to(self.root) else str(image)


def read_source(path: str | Path) -> Source:
    """A folder (every image file under it, recursively, sorted by relative path; hidden files and folders
    skipped) or a pairs JSONL file; every image is opened once, so a bad one fails before any model work."""
    path = Path(path)
    if path.is_dir():
        root = path.resolve()
        files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        if not files:
            raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {path} or its subfolders")
        source = Source({}, root)
        for p in sorted(files, key=source.key):
            load_image(p)
            source.images[source.key(p)] = p
        return source
    if not path.exists():
        raise InputError(f"no such folder or pairs file: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{path} is one image: give a folder of images or a pairs JSONL file")
    pairs = load_pairs(path, require_caption=False)
    source = Source({}, path.parent.resolve(), pairs)
    for pair in pairs:  # an image asked several instructions is captioned once
        source.images.setdefault(source.key(pair.image), pair.image)
    return source


class CaptionFile:
    """The captions JSONL of one model and prompt: its finished rows by image key, appended to as batches finish.

    A file holding another model's or prompt's captions is refused (captions are a product, not a partial run:
    :func:`~safety_probe.core.resume.resumable` with ``replace_option``) unless ``overwrite``, which replaces it at
    the first write, so an interruption before it leaves the old file whole. A last line cut short by an interruption is
    dropped (its image is captioned again).
    """

    def __init__(self, path: str | Path, model: str, prompt: str, overwrite: bool = False):
        self.path, self.model, self.prompt = Path(path), model, prompt
        if self.path.is_dir():
            raise InputError(f"{self.path} is a folder: give the captions JSONL file to write")
        self.rows: dict[str, dict] = {}
        self._rewrite = overwrite or not self.path.is_file()  # the next write replaces the file instead of appending
        if self._rewrite:
            return
        rows, torn = _read_rows(self.path)
        key = run_key(model, prompt)
        other = next((run_key(r["model"], r["prompt"]) for r in rows if run_key(r["model"], r["prompt"]) != key), key)
        resumable(self.path, other, key, "captions of another model or prompt", replace_option="--overwrite")
        self.rows = {r["image"]: r for r in rows}
        self._rewrite = torn

    def add(self, rows: list[dict]) -> None:
        """Record finished rows, on disk first."""
        self.rows.update((r["image"], r) for r in rows)
        if self._rewrite:
            write_jsonl(self.path, list(self.rows.values()))
            self._rewrite = False
        else:
            append_jsonl(self.path, rows)


def _read_rows(path: Path) -> tuple[list[dict], bool]:
    """The rows of a captions file, and whether it must be rewritten (its last line unterminated)."""
    text = read_text(path, "captions file")
    lines = text.splitlines()
    torn = bool(text) and not text.endswith("\n")
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and all(k in row for k in ROW_FIELDS)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            if torn and lineno == len(lines):  # the write an interruption cut short
                break
            raise InputError(f"{path}:{lineno}: not a captions row (fields {', '.join(ROW_FIELDS)})")
        rows.append(row)
    return rows, torn


def caption_row(image: str, generated: str, model: str, prompt: str) -> dict:
    """The captions row of one generation (see the module docstring)."""
    caption = first_sentence(generated)
    return {"image": image, "caption": caption, "model": model, "prompt": prompt,
            "refused": caption is not None and is_refusal(caption)}


@dataclass
class CaptionRun:
    """A captioning run: one row per input image (input order); ``generated`` images were captioned by this run,
    ``skipped`` were already in the file."""

    rows: list[dict]
    generated: int
    skipped: int
    empty: int = field(init=False)
    refused: int = field(init=False)

    def __post_init__(self) -> None:
        self.empty = sum(r["caption"] is None for r in self.rows)
        self.refused = sum(bool(r["refused"]) for r in self.rows)

    @property
    def warnings(self) -> list[str]:
        """Empty generations and refusals, which are no captions of their images."""
        out = []
        if self.empty:
            out.append(f"{self.empty} of {len(self.rows)} generations were empty (caption null)")
        if self.refused:
            out.append(f"{self.refused} of {len(self.rows)} captions are refusals (refused: true)")
        return out


def caption_images(vlm: VLM, source: Source, store: CaptionFile, batch_size: int = 8, max_new_tokens: int = 48,
                   progress: bool = True) -> CaptionRun:
    """Caption every image of ``source`` not yet in ``store`` greedily, in batches (the prompt: ``store.prompt``
    with the image, no system prompt), saving each batch before the next."""
    if vlm.name != store.model:
        raise InputError(f"{store.path} is for model {store.model!r}, not {vlm.name!r}")
    todo = [(k, p) for k, p in source.images.items() if k not in store.rows]
    done = len(source.images) - len(todo)
    bar = tqdm(total=len(source.images), initial=done, desc="caption", unit="image", disable=not progress)
    empty = refused = 0
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        texts = generate(vlm, [Pair(path, None, store.prompt) for _, path in chunk], "image", max_new_tokens=max_new_tokens)
        rows = [caption_row(key, text, store.model, store.prompt) for (key, _), text in zip(chunk, texts)]
        store.add(rows)
        empty += sum(r["caption"] is None for r in rows)
        refused += sum(r["refused"] for r in rows)
        bar.set_postfix(empty=empty, refused=refused, refresh=False)
        bar.update(len(chunk))
    bar.close()
    return CaptionRun([store.rows[k] for k in source.images], generated=len(todo), skipped=done)


def merge_captions(source: Source, captions: dict[str, dict], replace_captions: bool = False) -> list[Pair]:
    """The pairs of ``source`` with captions from ``captions`` (rows by image key) filled in; a pair's own caption is
    kept unless ``replace_captions``; an empty or refused generation fills nothing."""
    if source.pairs is None:
        raise InputError("merging captions needs a pairs file as the source (a folder has no pairs to fill)")
    merged = []
    for pair in source.pairs:
        row = captions.get(source.key(pair.image))
        usable = row is not None and row["caption"] is not None and not row["refused"]
        keep = pair.caption is not None and not replace_captions
        merged.append(pair if keep or not usable else replace(pair, caption=row["caption"]))
    return merged

