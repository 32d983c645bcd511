"""Layer specs and ``layers.json``: the one place that parses block indices and checks their range.

    >>> parse_layers("0-3,9", n_layers=32)
    [0, 1, 2, 3, 9]
    >>> resolve_layers("runs/llava/layers.json", n_layers=32)      # its "safety_layers"
    [9, 10, 11]

Layer l = output of decoder block l (0-based) = TransformerLens ``blocks.{l}.hook_resid_post`` =
Hugging Face ``hidden_states[l + 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.core.files import read_json


def checked_layers(layers: Iterable[int], n_layers: int, what: str = "layer") -> list[int]:
    """Sorted unique block indices, or an InputError naming the first one outside ``[0, n_layers)``."""
    out = sorted({int(v) for v in layers})
    for layer in out:
        if not 0 <= layer < n_layers:
            raise InputError(f"{what} {layer} is out of range: the model has {n_layers} blocks (0-{n_layers - 1})")
    return out


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Parse ``all``, ``8-16`` (inclusive), ``3,5,7`` or a mix like ``0-3,9`` into sorted block indices."""
    if spec.strip() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                layers.update(range(lo, hi + 1))
            else:
                layers.add(int(part))
        except ValueError:
            raise InputError(f"bad layer spec {spec!r}: use 'all', '8-16' or '3,5,7'") from None
    return checked_layers(layers, n_layers)


def read_safety_layers(path: str | Path) -> list[int]:
    """The ``safety_layers`` of a ``layers.json`` (a non-empty list of 0-based block indices)."""
    path = Path(path)
    obj = read_json(path, "layers file")
    value = obj.get("safety_layers") if isinstance(obj, dict) else None
    if value == []:
        why = "; ".join(obj.get("warnings") or []) or "no band was drawn"
        raise InputError(f"{path}: no safety layers were located ({why}); give layers such as 9-17 instead")
    if not isinstance(value, list) or not value or not all(type(x) is int for x in value):
        raise InputError(f"{path}: expected key 'safety_layers' with a non-empty list of 0-based block indices")
    return sorted(set(value))


def resolve_layers(spec: str | Iterable[int], n_layers: int) -> list[int]:
    """Block indices from a ``layers.json`` path, a spec ("9-17", "3,5", "all") or a list of indices."""
    if not isinstance(spec, str):
        return checked_layers(spec, n_layers, "safety layer")
    if spec.endswith(".json") or Path(spec).is_file():
        return checked_layers(read_safety_layers(spec), n_layers, "safety layer")
    return parse_layers(spec, n_layers)
