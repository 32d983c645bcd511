"""Atomic writes (a result is complete or absent, never half-written), flushed appends, checked reads, and output
paths checked before any work."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from safety_probe.core.errors import InputError, OutputError

SAFETENSORS_DTYPES = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
                      "F64", "I64", "U64", "C64", "F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "E8M0"}
# what atomic_path leaves behind when a run is killed: .NAME.XXXXXXXX.tmp (mkstemp / mkdtemp names)
LEFTOVER = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def cannot_write(path: Path, e: OSError) -> OutputError:
    hint = "; free some space and rerun to resume" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    return OutputError(f"cannot write {path}: {e.strerror or e} (earlier outputs are intact{hint})")


def _sync(path: Path) -> None:
    """Flush a written file (or every file of a written folder) to disk before it is renamed into place."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_path(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary file (or ``folder``) beside ``path``; it replaces ``path`` only if the block succeeds.

    A failed write (disk full, read-only) is an :class:`OutputError` naming ``path``; the temporary is removed and
    whatever ``path`` held before is left as it was.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{path.name}."
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if folder else 0o666) & ~umask)  # mkstemp creates 0600; results are ordinary files
        yield tmp
        _sync(tmp)
        if folder and path.is_dir():  # a folder cannot be renamed over a full one: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        if tmp is not None and tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None and tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, write: Callable[[Path], Any], folder: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically (``folder``: ``tmp_path`` is a folder)."""
    with atomic_path(path, folder) as tmp:
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
    try:
        with open(path, "a") as f:
            f.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise cannot_write(Path(path), e) from None
    return Path(path)


# ---------------------------------------------------------------------------------------------------------
# Paths checked before any work
# ---------------------------------------------------------------------------------------------------------


def check_input_path(path: str | Path, what: str, folder: bool = False) -> Path:
    """``path`` as an existing file (``folder``: folder) to read; otherwise a one-line InputError naming ``what``."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{what} {path} is a symlink loop") from None
        raise InputError(f"{what} not found: {path}") from None
    if folder and not stat.S_ISDIR(mode):
        raise InputError(f"{what} {path} is a file, not a folder")
    if not folder and stat.S_ISDIR(mode):
        raise InputError(f"{what} {path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} cannot be read (permission denied)")
    return path


def resolve(path: str | Path, what: str) -> Path:
    """``path`` made absolute with its symlinks resolved; a symlink loop is an InputError naming ``what``."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError on a loop
        raise InputError(f"{what} {path} is a symlink loop") from None


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` as an output folder: an existing folder or one that can be created, where files can be written."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"{option} {path} is a broken symlink (or a symlink loop)")
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
        if existing.is_symlink() and not existing.exists():
            raise InputError(f"{option} {path}: {existing} is a broken symlink")
    if not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a folder")
    try:  # the one test that holds for every user and file system (root, read-only mounts): write a file
        fd, probe = tempfile.mkstemp(prefix=".safety-probe-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{option} {path}: cannot write in {existing} ({e.strerror})") from None
    return path


def check_out_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` as an output file: not a folder, in a folder that exists or can be created and is writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder: give the file to write")
    check_out_dir(path.parent, option)
    return path


# ---------------------------------------------------------------------------------------------------------
# Checked reads
# ---------------------------------------------------------------------------------------------------------


def read_text(path: str | Path, what: str) -> str:
    """The text of the UTF-8 file ``path`` (a leading BOM dropped); a missing file or a byte that is not UTF-8 is a
    one-line InputError naming ``what`` (and the line of the byte)."""
    path = check_input_path(path, what)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); {what} must be UTF-8") from None


def read_json(path: str | Path, what: str) -> Any:
    """Parse the JSON file ``path``; a missing file or malformed JSON is a one-line InputError naming ``what``."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None


def safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (8-byte length, a table of tensors whose data lies inside the file),
    checked against the file's size; a corrupt or truncated file is an InputError naming it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if length is None or length > min(size - 8, 100_000_000):
            raise InputError(f"{path}: not a safetensors file (no valid header; corrupt or truncated?)")
        raw = f.read(length)
    try:
        table = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{path}: not a safetensors file (its header is not JSON; corrupt?)") from None
    if not isinstance(table, dict):
        raise InputError(f"{path}: not a safetensors file (its header is not a table of tensors)")
    data = size - 8 - length
    for name, info in table.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or info.get("dtype") not in SAFETENSORS_DTYPES
                or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
            raise InputError(f"{path}: tensor {name!r} has a malformed entry in the header (corrupt?)")
        if offsets[1] > data:
            raise InputError(f"{path}: truncated: tensor {name!r} ends at byte {offsets[1]} of {data} data bytes")
    return raw


#: Bytes per element of the safetensors dtypes the project writes, by the name safetensors gives them.
DTYPE_BYTES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1}


def safetensors_bytes(tensors: dict[str, tuple[str, tuple[int, ...]]], metadata: dict[str, str] | None = None) -> int:
    """The size of the safetensors file :func:`write_tensors` writes for tensors ``name -> (dtype, shape)`` and
    ``metadata``, without any tensor: an 8-byte length, the JSON header padded to 8 bytes, the data."""
    entries, offset = {}, 0
    for name, (dtype, shape) in sorted(tensors.items(), key=lambda kv: (-DTYPE_BYTES[kv[1][0]], kv[0])):
        size = DTYPE_BYTES[dtype] * int(np.prod(shape, dtype=np.int64))
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header = {**({"__metadata__": metadata} if metadata else {}), **entries}
    length = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode())
    return 8 + length + (-length) % 8 + offset


def write_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Write torch tensors to a safetensors file atomically (serialised in memory, so a full disk is an OutputError)."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    return write_atomic(path, lambda p: p.write_bytes(data))


def tensors_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file from its header alone (no tensor read); {} when absent or unreadable."""
    try:
        meta = json.loads(safetensors_header(Path(path))).get("__metadata__")
    except (OSError, InputError):
        return {}
    return meta if isinstance(meta, dict) else {}


def read_tensors(path: str | Path, what: str) -> tuple[dict, dict[str, str]]:
    """The tensors and metadata of a safetensors file, header-checked first; InputError naming ``what`` otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = check_input_path(path, what)
    header = json.loads(safetensors_header(path))
    try:
        return load(path.read_bytes()), header.get("__metadata__") or {}
    except SafetensorError as e:
        raise InputError(f"{path}: unreadable {what} ({e})") from None
