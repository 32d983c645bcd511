"""Inference-time defenses beside TGA, each calibrated on pairs of its own and saved as a state (docs/defenses.md).

    >>> from safety_probe.defenses import DefenseOptions, calibrate, load_defense
    >>> defense = calibrate("shift_correction:shiftdc", vlm, calibration_pairs, [4, 5, 6], DefenseOptions(strength="1"))
    >>> defense.state().save("runs/shiftdc/state")
    >>> defense = load_defense("runs/shiftdc/state")
    >>> evaluate(vlm, test_pairs, responder=defense).metrics          # safety_probe.eval.evaluate

A method is named ``name`` or ``name:mode``: refusal_steering (add, ablate), shift_correction (cmrm, shiftdc),
hidden_detect, self_check; a method's first mode is its default.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from safety_probe.core.errors import InputError
from safety_probe.data.pairs import Pair
from safety_probe.defenses import hidden_detect, refusal_steering, self_check, shift_correction
from safety_probe.defenses.base import Defense, DefenseOptions, DefenseState, check_options
from safety_probe.models.vlm import VLM

METHODS: dict[str, ModuleType] = {"refusal_steering": refusal_steering, "shift_correction": shift_correction,
                                  "hidden_detect": hidden_detect, "self_check": self_check}

__all__ = ["METHODS", "Defense", "DefenseOptions", "DefenseState", "calibrate", "load_defense", "method_name",
           "parse_method"]


def _choices() -> str:
    return ", ".join(f"{n} ({'/'.join(m.MODES)})" if m.MODES else n for n, m in METHODS.items())


def parse_method(spec: str) -> tuple[str, str | None]:
    """(method, mode) of ``name`` or ``name:mode`` (mode defaulted; None for a method without modes), or a one-line
    InputError naming the choices."""
    name, _, mode = spec.strip().partition(":")
    if name not in METHODS:
        raise InputError(f"unknown defense method {spec!r}: choose one of {_choices()}")
    modes = METHODS[name].MODES
    if not modes:
        if mode:
            raise InputError(f"defense {name} has no modes (got {spec!r})")
        return name, None
    mode = mode or modes[0]
    if mode not in modes:
        raise InputError(f"unknown mode {mode!r} of defense {name}: choose one of {', '.join(modes)}")
    return name, mode


def method_name(spec: str) -> str:
    """The canonical name of a method: ``name:mode`` where it has modes, else ``name``."""
    name, mode = parse_method(spec)
    return f"{name}:{mode}" if mode else name


def calibrate(spec: str, vlm: VLM, pairs: list[Pair], layers: list[int],
              options: DefenseOptions | None = None) -> Defense:
    """The defense ``spec`` fitted on the calibration ``pairs`` alone at ``layers`` (0-based blocks)."""
    name, mode = parse_method(spec)
    options = options or DefenseOptions()
    check_options(options)
    layers = vlm.check_layers(layers)
    if not layers:
        raise InputError("a defense needs at least one layer (--layers)")
    return METHODS[name].calibrate(vlm, pairs, layers, mode, options)


def load_defense(folder: str | Path) -> Defense:
    """The defense of a state saved by ``defense.state().save(folder)``."""
    state = DefenseState.load(folder)
    name, _ = parse_method(state.method)
    return METHODS[name].DEFENSE.from_state(state)
