"""Option checks run before any work: each raises a one-line :class:`InputError` naming the option."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from safety_probe.core.errors import InputError


def option_name(field: str) -> str:
    """The command-line spelling of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field.replace("_", "-")


def check_choice(cfg: Any, field: str, choices: Iterable[Any]) -> None:
    """InputError naming the option unless ``cfg.field`` is one of ``choices``."""
    choices = tuple(choices)
    value = getattr(cfg, field)
    if value not in choices:
        raise InputError(f"{option_name(field)} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_number(cfg: Any, field: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """InputError naming the option unless ``cfg.field`` (None: not set, accepted) lies in the interval; bounds are
    inclusive unless ``low_open`` / ``high_open``."""
    value = getattr(cfg, field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # value != value: NaN
        raise InputError(f"{option_name(field)} must be a number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            allowed = f"{'>' if low_open else '>='} {low}"
        elif low is None:
            allowed = f"{'<' if high_open else '<='} {high}"
        else:
            allowed = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise InputError(f"{option_name(field)} must be {allowed}, got {value!r}")


def check_text(cfg: Any, field: str, required: bool = False) -> None:
    """InputError naming the option when ``cfg.field`` is set (or ``required``) but empty or blank."""
    value = getattr(cfg, field)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{option_name(field)} must be a non-empty text" + (" (required)" if required else ""))
