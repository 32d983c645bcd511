"""Readers of the field's VLM-safety benchmarks, in their own published on-disk layouts, into pairs.

    >>> from safety_probe.data.benchmarks import read_benchmark, detect_format, convert
    >>> pairs = read_benchmark("figstep", "FigStep/")            # list[Pair], images referenced in place
    >>> convert(detect_format("FigStep/"), "FigStep/", "figstep/pairs.jsonl")

Each reader works on a LOCAL copy only (nothing is downloaded). See docs/datasets/ for each layout, license,
and which fields map to what. Readers import nothing heavy (no torch); parquet needs pyarrow, and a folder
saved by ``datasets.save_to_disk`` needs the optional ``datasets`` package.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from safety_probe.core.errors import InputError
from safety_probe.data.benchmarks import (
    figstep,
    hades,
    imagefolder,
    jailbreakv,
    mmsafetybench,
    mossbench,
    siuo,
    spavl,
    vlguard,
)
from safety_probe.data.pairs import Pair, write_pairs


@dataclass(frozen=True)
class Reader:
    """One benchmark format: call it as ``reader(root, split=None, **options)`` to get its pairs."""

    name: str
    read: Callable[..., list[Pair]]
    detect: Callable[[Path], bool]
    splits: tuple[str, ...]
    summary: str

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options beyond ``root`` and ``split`` (e.g. ``harmful_classes``, ``image_dir``)."""
        return tuple(p for p in inspect.signature(self.read).parameters if p not in ("root", "split"))

    def __call__(self, root: str | Path, split: str | None = None, **options: Any) -> list[Pair]:
        """Read the local copy at ``root``; every pair's ``extra["benchmark"]`` names the format (what evaluation
        groups by). Unknown options are an InputError."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise InputError(f"{self.name}: unknown option {unknown[0]!r}; "
                             f"known: {', '.join(self.options) or 'none'}")
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise InputError(f"{self.name}: benchmark folder not found: {root}")
        return [replace(p, extra={**p.extra, "benchmark": self.name}) for p in self.read(root, split, **options)]


def _reader(module: ModuleType) -> Reader:
    summary = (module.__doc__ or "").strip().splitlines()[0]
    return Reader(module.NAME, module.read, module.detect, module.SPLITS, summary)


# Detection order: specific file names first, the generic class-folder layout last.
FORMATS: dict[str, Reader] = {m.NAME: _reader(m) for m in (
    mmsafetybench, figstep, vlguard, hades, jailbreakv, mossbench, siuo, spavl, imagefolder)}
_DETECT_ORDER = ("mmsafetybench", "figstep", "vlguard", "jailbreakv", "mossbench", "siuo", "spavl", "hades",
                 "imagefolder")


def get_reader(format: str) -> Reader:
    """The reader named ``format``; an unknown name is an InputError listing the known ones."""
    if format not in FORMATS:
        raise InputError(f"unknown benchmark format {format!r}; known: {', '.join(FORMATS)}")
    return FORMATS[format]


def detect_format(root: str | Path) -> str:
    """The name of the format whose published layout ``root`` has (what ``--format auto`` uses)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"benchmark folder not found: {root}")
    for name in _DETECT_ORDER:
        if FORMATS[name].detect(root):
            return name
    raise InputError(f"{root}: no known benchmark layout recognised; known formats: {', '.join(FORMATS)} "
                     "(pass --format NAME; see docs/datasets/)")


def read_benchmark(format: str, root: str | Path, split: str | None = None, **options: Any) -> list[Pair]:
    """Read a LOCAL copy of a benchmark in its published layout as pairs (``format="auto"`` detects it)."""
    if format == "auto":
        format = detect_format(root)
    return get_reader(format)(root, split, **options)


def convert(format: str, root: str | Path, out: str | Path, split: str | None = None, **options: Any) -> Path:
    """Read a benchmark and write it as our pairs JSONL at ``out``; images are referenced, not copied.

    Benchmarks that embed their images in parquet (HADES, SPA-VL) have them written once to
    ``<out folder>/<out stem>_images/`` unless ``image_dir`` is given.
    """
    out = Path(out)
    if format == "auto":
        format = detect_format(root)
    reader = get_reader(format)
    if "image_dir" in reader.options and options.get("image_dir") is None:
        options["image_dir"] = out.parent / f"{out.stem}_images"
    pairs = reader(root, split, **options)
    if not pairs:
        raise InputError(f"{root}: {format} gave no pairs")
    return write_pairs(pairs, out)


__all__ = ["FORMATS", "Reader", "convert", "detect_format", "get_reader", "read_benchmark"]
