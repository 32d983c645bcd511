"""Where a model's parts live: ``--device-map`` specs for accelerate's big-model loading, and execution devices.

    >>> parse_device_map("auto")                       # accelerate fills the visible GPUs, then CPU, then disk
    'auto'
    >>> parse_device_map("shards.json")                # {"model.language_model.layers.0": 0, ..., "lm_head": "disk"}
    {'model.language_model.layers.0': 0, ...}
    >>> execution_device(vlm.model, vlm.unembed)      # where lm_head computes, offloaded or not
    device(type='cpu')

A module that accelerate offloads (to ``cpu`` RAM or ``disk``) keeps its parameters on the ``meta`` device and
computes on its hook's ``execution_device``; that, not a parameter's device, is where its inputs must go.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from safety_probe.core.errors import InputError

#: Device-map strategies accelerate computes itself (``from_pretrained(device_map=...)``).
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DeviceMap = str | dict[str, int | str]


def parse_device_map(spec: str) -> DeviceMap:
    """A strategy name, or the ``{module name: device}`` object of a JSON file (devices: a GPU index, ``"cuda:1"``,
    ``"cpu"``, ``"mps"`` or ``"disk"``); anything else is a one-line InputError."""
    if spec in DEVICE_MAP_STRATEGIES:
        return spec
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--device-map {spec!r}: not one of {', '.join(DEVICE_MAP_STRATEGIES)} and no such JSON file")
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"--device-map {path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise InputError(f"--device-map {path}: expected a non-empty object of module name -> device")
    gpus = torch.cuda.device_count()
    for name, device in mapping.items():
        index = _gpu_index(device, path, name)
        if index is not None and index >= gpus:
            raise InputError(f"--device-map {path}: {name!r} -> {device!r}, but this machine has {gpus} GPU(s)")
    return mapping


def _gpu_index(device: object, path: Path, name: str) -> int | None:
    """The CUDA index ``device`` names (None for cpu, disk, mps, ...); not a device at all is an InputError."""
    if isinstance(device, int) and not isinstance(device, bool):
        return device
    if device == "disk":
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device-map {path}: {name!r} -> {device!r} is not a device (a GPU index, cpu, disk, ...)") from None
    return (parsed.index or 0) if parsed.type == "cuda" else None


def _hook_device(hook) -> torch.device | None:
    """The execution device of an accelerate hook (or of the first hook in a SequentialHook that names one)."""
    for h in getattr(hook, "hooks", (hook,)):
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return None


def execution_device(model: nn.Module, module: nn.Module) -> torch.device:
    """Where ``module`` (a submodule of ``model``) computes: the execution device of the nearest accelerate hook on
    it or its parents when ``model`` is device-mapped, else the device of its first parameter."""
    if getattr(model, "hf_device_map", None):
        name = next(n for n, m in model.named_modules() if m is module)
        parts = name.split(".") if name else []
        for depth in range(len(parts), -1, -1):
            device = _hook_device(getattr(model.get_submodule(".".join(parts[:depth])), "_hf_hook", None))
            if device is not None:
                return device
    return next(module.parameters()).device
