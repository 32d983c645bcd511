"""The one key of a run and the one resume policy of every command.

    >>> key = run_key(vlm.run_settings(), layers, pairs_digest)       # every setting that changes the outputs
    >>> if resumable(path, stored_key, key): ...                      # continue the earlier output at path

A long run writes its partial output with its key; a rerun with the same key continues it, a rerun with any other
settings starts afresh and says so in one line (the earlier partial output is then replaced, never mixed in). An
output that is itself the product (a captions file) is never replaced that way: a rerun with other settings is
refused with the option that replaces it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from safety_probe.core.errors import InputError


def run_key(*settings: Any) -> str:
    """A short hash of ``settings`` as sorted JSON: equal settings, equal key."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resumable(path: str | Path, stored: str | None, key: str, what: str = "output", *,
              replace_option: str | None = None) -> bool:
    """Whether the earlier ``what`` at ``path``, written by the run ``stored`` (None: unreadable or unkeyed), may be
    continued by the run ``key``; when not, one line on stderr says the run starts afresh and why. With
    ``replace_option`` (e.g. ``"--overwrite"``) the earlier output is kept: :class:`InputError` names the option."""
    if stored == key:
        return True
    why = "is unreadable or carries no run key" if stored is None else "was written with other settings"
    if replace_option:
        raise InputError(f"{path} ({what}) {why}: pass {replace_option} to replace it, or write elsewhere")
    print(f"note: {path} ({what}) {why}: starting afresh", file=sys.stderr)
    return False
