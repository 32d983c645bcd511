"""What every model command shares: the model options and the one place that resolves `--model organism`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safety_probe.errors import InputError

ORGANISM = "organism"


@dataclass
class ModelOptions:
    """How to load the model."""

    model: str = ORGANISM
    """Model: a local Hugging Face folder, a hub name, or `organism` (the shipped model organism)."""
    device: str = "auto"
    """Device: auto (cuda when available), cpu, cuda, cuda:1, mps."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16 or float16."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code (off unless you trust it)."""


def is_organism(model: str) -> bool:
    """Whether ``model`` names the shipped organism (by name or by its folder)."""
    from safety_probe.organism import ORGANISM_DIR

    return model == ORGANISM or Path(model).resolve() == ORGANISM_DIR.resolve()


def model_path(model: str) -> str:
    """The folder of the organism for ``organism``; any other name passes through."""
    if model != ORGANISM:
        return model
    from safety_probe.organism import ORGANISM_DIR

    if not (ORGANISM_DIR / "config.json").is_file():
        raise InputError(f"the organism is not built at {ORGANISM_DIR}: run `make organism`")
    return str(ORGANISM_DIR)


def device_of(name: str) -> str:
    """The device ``--device`` names; ``auto`` is cuda when available, else cpu."""
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(cfg: ModelOptions):
    """Load the model ``cfg`` names (the organism by name), on its device and dtype."""
    from safety_probe.models import load_vlm

    vlm = load_vlm(model_path(cfg.model), device=device_of(cfg.device), dtype=cfg.dtype,
                   trust_remote_code=cfg.trust_remote_code)
    vlm.name = cfg.model
    return vlm
