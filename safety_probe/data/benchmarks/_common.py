"""Shared helpers of the benchmark readers: row validation, table reading, image lookup and extraction.

Every reader validates its rows through ``Row`` so that a bad row is one InputError naming the file, the
row (index or id) and the field; a missing image names the path.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

from safety_probe.core.errors import InputError
from safety_probe.core.files import read_json, read_text

log = logging.getLogger("safety_probe.data.benchmarks")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


class Row:
    """One source row (a dict) and where it came from; typed field getters raise one-line InputErrors."""

    def __init__(self, data: Any, file: Path, row: str | int):
        self.file, self.row = Path(file), row
        if not isinstance(data, dict):
            raise InputError(f"{self.where}: expected an object, got {type(data).__name__}")
        self.data = data

    @property
    def where(self) -> str:
        """``file, row R`` for error messages."""
        return f"{self.file}, row {self.row}"

    def fail(self, key: str, problem: str) -> InputError:
        """An InputError naming file, row and field."""
        return InputError(f"{self.where}, field '{key}': {problem}")

    def text(self, key: str, required: bool = True) -> str | None:
        """A non-empty string field (numbers are accepted and turned into strings)."""
        value = self.data.get(key)
        if _missing(value):
            if required:
                raise self.fail(key, "missing or empty")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(key, f"must be a string, got {type(value).__name__}")
        value = str(value).strip() if not isinstance(value, str) else value
        if not value.strip():
            if required:
                raise self.fail(key, "missing or empty")
            return None
        return value

    def flag(self, key: str, required: bool = True) -> bool | None:
        """A boolean field; CSV spellings ``True``/``False``/``1``/``0`` are accepted."""
        value = self.data.get(key)
        if _missing(value):
            if required:
                raise self.fail(key, "missing")
            return None
        if isinstance(value, bool):
            return value
        spelled = str(value).strip().lower()
        if spelled in ("true", "1", "yes"):
            return True
        if spelled in ("false", "0", "no"):
            return False
        raise self.fail(key, f"must be true or false, got {value!r}")

    def items(self, key: str, kind: type = list) -> Any:
        """A list (or dict, with ``kind=dict``) field."""
        value = self.data.get(key)
        if not isinstance(value, kind):
            raise self.fail(key, f"must be a {kind.__name__}, got {type(value).__name__}")
        return value

    def rest(self, known: Iterable[str]) -> dict:
        """Every field not in ``known`` whose value is not missing, for ``Pair.extra``."""
        known = set(known)
        return {k: _plain(v) for k, v in self.data.items() if k not in known and not _missing(v)}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return value != value  # NaN from pandas
    except Exception:  # noqa: BLE001 - arrays etc. are present values
        return False


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays from parquet become JSON-friendly Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value


def first_existing(candidates: Iterable[Path], what: str, root: Path) -> Path:
    """The first of ``candidates`` that exists, else an InputError listing where it looked."""
    candidates = list(candidates)
    for path in candidates:
        if path.exists():
            return path
    tried = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in candidates)
    raise InputError(f"{root}: no {what} found (looked for {tried})")


def image_file(base: Path, rel: str, row: Row, key: str = "image", alternatives: bool = False) -> Path:
    """``base / rel`` as an absolute path; a missing file is an InputError naming the path and the row.

    With ``alternatives`` the same stem with another image suffix is accepted (a few benchmarks list
    ``.png`` names while their image archive ships ``.jpg``).
    """
    path = (base / rel).resolve()
    if path.is_file():
        return path
    if alternatives:
        for suffix in IMAGE_SUFFIXES:
            other = path.with_suffix(suffix)
            if other.is_file():
                return other
    raise InputError(f"{row.where}, field '{key}': image not found: {path}")


def check_split(split: str | None, allowed: tuple[str, ...], fmt: str) -> str:
    """``split`` or the default (first of ``allowed``); anything else is an InputError listing them."""
    if split is None:
        return allowed[0]
    if split not in allowed:
        raise InputError(f"{fmt}: unknown split {split!r}; known: {', '.join(allowed)}")
    return split


def load_json(path: Path, what: str) -> Any:
    """A JSON file (``.json``) or JSON Lines file (``.jsonl``) as Python data; errors name the file."""
    if path.suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(read_text(path, what).splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
        return rows
    return read_json(path, what)


def json_rows(path: Path, what: str, keyed: bool = False) -> Iterator[Row]:
    """The rows of a JSON list (row = index) or, with ``keyed``, a JSON object of id -> row (row = id)."""
    data = load_json(path, what)
    if keyed:
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object of id -> row, got {type(data).__name__}")
        for key, value in data.items():
            yield Row(value, path, key)
    else:
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
        for i, value in enumerate(data):
            yield Row(value, path, i)


def csv_rows(path: Path, required: Iterable[str]) -> Iterator[Row]:
    """The rows of a CSV file with a header; row = the line number; missing columns are one InputError."""
    if not path.is_file():
        raise InputError(f"CSV file not found: {path}")
    with StringIO(read_text(path, "CSV file"), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        for data in reader:
            yield Row({k: (None if v == "" else v) for k, v in data.items()}, path, f"line {reader.line_num}")


def table_columns(path: Path) -> set[str]:
    """The column names of a parquet, JSON or JSONL table, reading as little as possible."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return set(pq.read_schema(path).names)
    with path.open(encoding="utf-8", errors="replace") as f:  # a sniff: the reader checks the encoding
        head = f.read(4096) if path.suffix == ".json" else f.readline()
    if path.suffix == ".jsonl":
        try:
            return set(json.loads(head))
        except (json.JSONDecodeError, TypeError):
            return set()
    data = load_json(path, "table")
    return set(data[0]) if isinstance(data, list) and data and isinstance(data[0], dict) else set()


def table_rows(path: Path) -> Iterator[Row]:
    """The rows of a parquet (row = index), JSON list or JSONL table."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, data in enumerate(pq.read_table(path).to_pylist()):
            yield Row(data, path, i)
        return
    data = load_json(path, "table")
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of rows, got {type(data).__name__}")
    for i, value in enumerate(data):
        yield Row(value, path, i)


def saved_dataset_rows(folder: Path) -> Iterator[Row]:
    """Rows of a folder written by ``datasets.Dataset.save_to_disk`` (needs the optional ``datasets``)."""
    try:
        import datasets
    except ImportError:
        raise InputError(f"{folder}: a saved Hugging Face dataset needs the optional package 'datasets' "
                         "(or export it to parquet)") from None
    ds = datasets.load_from_disk(str(folder))
    if isinstance(ds, datasets.DatasetDict):
        raise InputError(f"{folder}: holds several splits ({', '.join(ds)}); point --root at one of them")
    ds = ds.cast_column("image", datasets.Image(decode=False)) if "image" in ds.column_names else ds
    for i, data in enumerate(ds):
        yield Row(data, folder, i)


def image_from_value(value: Any, row: Row, base: Path, image_dir: Path, stem: str) -> Path:
    """Resolve an image cell: a path string (relative to ``base``) or HF image bytes written to ``image_dir``.

    Embedded bytes are written once to ``image_dir/<stem><suffix>`` (suffix from the stored name or the
    bytes' format) and re-used when an identical file is already there.
    """
    if isinstance(value, str):
        return image_file(base, value, row)
    data = value.get("bytes") if isinstance(value, dict) else value
    if isinstance(value, dict) and not data and value.get("path"):
        return image_file(base, value["path"], row)
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise row.fail("image", "holds neither a file path nor image bytes")
    name = value.get("path") if isinstance(value, dict) else None
    suffix = Path(name).suffix.lower() if name and Path(name).suffix.lower() in IMAGE_SUFFIXES else _sniff(data)
    safe_stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    dest = image_dir / f"{safe_stem}{suffix}"
    if not (dest.is_file() and dest.stat().st_size == len(data) and dest.read_bytes() == data):
        image_dir.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(bytes(data))
    return dest.resolve()


def _sniff(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:3] == b"GIF":
        return ".gif"
    return ".img"


def note_skipped(fmt: str, n: int, why: str) -> None:
    """Log how many source entries a reader skipped on purpose, and why (never a silent skip)."""
    if n:
        log.warning("%s: skipped %d %s", fmt, n, why)
