"""Configs made of nested parts (as EleutherAI's sparsify nests a method's config in its training config), set by the
flat option names the command line uses: simple-parsing flattens the parts into one option list, and so does this.

    >>> cfg = TGAConfig.of(layers="9-17", stage=1, lr=1e-3)      # each name goes to the part that holds it
    >>> cfg.method.layers, cfg.optim.lr
    ('9-17', 0.001)
    >>> cfg.replace(stop_after=1).run.stop_after                 # a copy; cfg itself is unchanged
    1
    >>> options_of(cfg)["lr"]                                    # every option by its flat name
    0.001
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T", bound="OptionTree")


def _is_part(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def options_of(cfg: Any) -> dict[str, Any]:
    """The options of the config dataclass ``cfg`` by flat name (its own fields and its nested parts' options)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out.update(options_of(value) if _is_part(value) else {f.name: value})
    return out


def replaced(cfg: Any, **options: Any) -> Any:
    """A copy of the config dataclass ``cfg`` with ``options`` set, each in the part whose field it names (a nested
    part may also be given whole by its field name); an option no part holds raises TypeError."""
    own = {f.name for f in dataclasses.fields(cfg)}
    changes = {k: v for k, v in options.items() if k in own}
    rest = {k: v for k, v in options.items() if k not in own}
    for f in dataclasses.fields(cfg):
        part = getattr(cfg, f.name)
        if not rest or not _is_part(part):
            continue
        mine = {k: v for k, v in rest.items() if k in options_of(part)}
        if mine:
            changes[f.name] = replaced(changes.get(f.name, part), **mine)
            rest = {k: v for k, v in rest.items() if k not in mine}
    if rest:
        raise TypeError(f"{type(cfg).__name__} has no option {', '.join(sorted(rest))}")
    return dataclasses.replace(cfg, **changes)


class OptionTree:
    """Mixin of a config dataclass made of nested parts: built (:meth:`of`) and copied (:meth:`replace`) by flat
    option names."""

    @classmethod
    def of(cls: type[T], **options: Any) -> T:
        """The default config with ``options`` set by their flat names (e.g. ``layers="9-17", stage=1``)."""
        return replaced(cls(), **options)

    def replace(self: T, **options: Any) -> T:
        """A copy with ``options`` set by their flat names (:func:`replaced`)."""
        return replaced(self, **options)
