"""Atomic writes (a result file is either complete or absent, never half-written), flushed appends, checked JSON reads."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safety_probe.errors import InputError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Write one JSON object a line, atomically."""
    return write_atomic(path, lambda p: p.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows)))


def append_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Append one JSON object a line in one write, flushed to disk: an interruption can cut only the last line short."""
    with open(path, "a") as f:
        f.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` as an output folder: it may not exist yet, but it may not be a file (one-line InputError)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder")
    return path


def read_json(path: str | Path, what: str) -> Any:
    """Parse the JSON file ``path``; a missing file or malformed JSON is a one-line InputError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
