"""The one lock of an output folder: a run holds it while it writes; a killed run's lock is taken over and the
temporary files its killed writes left are removed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safety_probe.core.errors import OutputError
from safety_probe.core.files import LEFTOVER, cannot_write

LOCK_NAME = ".safety-probe.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _owner(lock: Path) -> dict | None:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def _stale(owner: dict | None, host: str) -> bool:
    # a lock is written whole (link of a finished file), so an unreadable one is no run's; another host's run cannot be
    # checked and counts as alive
    return owner is None or (owner.get("host") == host and not _alive(owner["pid"]))


def _remove_leftovers(folder: Path, prefix: str, depth: int = 4) -> None:
    """Temporary files and folders of killed writes under ``folder``: our own sub-folders only (no hidden ones, none
    that another run holds), as deep as outputs go."""
    for entry in list(folder.iterdir()):
        if LEFTOVER.match(entry.name) and entry.name.startswith(prefix):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        elif (prefix == "." and depth > 1 and entry.is_dir() and not entry.is_symlink()
              and not entry.name.startswith(".") and not (entry / LOCK_NAME).exists()):
            _remove_leftovers(entry, prefix, depth - 1)


def _take_lock(lock: Path, me: dict) -> None:
    """Create ``lock`` holding ``me``, or take it over from a dead run; OutputError while a live run holds it."""
    fd, name = tempfile.mkstemp(prefix=f"{lock.name}.", suffix=".tmp", dir=lock.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, lock)  # atomic: fails if a lock exists, and never shows a half-written one
            return
        except FileExistsError:
            pass
        owner = _owner(lock)
        if not _stale(owner, me["host"]):
            raise OutputError(f"{lock.parent} is in use by another run (pid {owner['pid']} on {owner.get('host')}, "
                              f"since {owner.get('started')}): wait for it, or delete {lock} if that run is gone")
        os.replace(tmp, lock)  # a dead run's lock
        if _owner(lock) != me:  # another run took it over at the same moment
            raise OutputError(f"{lock.parent} is in use by another run: {lock} was taken over just now")
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def output_lock(path: str | Path, folder: bool = True) -> Iterator[Path]:
    """Hold the lock of the output folder ``path`` (``folder=False``: of the output file ``path``) while the block runs.

    The lock file (``path/.safety-probe.lock``, or ``.NAME.lock`` beside a file) names the owner's pid and host. A
    lock of a live run is an :class:`OutputError`; one whose process is gone (killed) is taken over, and the
    temporary files its killed writes left are removed. Folders this call created are removed again if they are
    still empty at the end. Under a multi-process launch (``RANK`` set, as torchrun and accelerate do) only rank 0
    takes the lock: the other ranks write their shards into the folder rank 0 holds.
    """
    path = Path(path)
    if os.environ.get("RANK", "0") != "0":
        yield path / LOCK_NAME if folder else path.parent / f".{path.name}.lock"
        return
    where = path if folder else path.parent
    top = where  # the outermost folder this call creates
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    created = not where.exists()
    lock = where / (LOCK_NAME if folder else f".{path.name}.lock")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    held = False
    try:
        try:
            where.mkdir(parents=True, exist_ok=True)
            _take_lock(lock, me)
            held = True
            _remove_leftovers(where, "." if folder else f".{path.name}.")
        except OSError as e:
            raise cannot_write(lock, e) from None
        yield lock
    finally:
        if held and _owner(lock) == me:
            lock.unlink(missing_ok=True)
        empty = where
        while created and empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
            if empty == top:
                break
            empty = empty.parent
