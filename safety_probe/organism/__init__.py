"""The model organism: a tiny LLaVA trained from scratch whose text safety does not transfer to images.

``ORGANISM_DIR`` holds the Hugging Face folder of the LLaVA (model + processor); ``CLIP_DIR`` the CLIP model
whose vision tower the LLaVA uses (also a retriever and an input-filter baseline). See docs/organism.md.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ORGANISM_DIR = WEIGHTS_DIR / "llava"
CLIP_DIR = WEIGHTS_DIR / "clip"

__all__ = ["CLIP_DIR", "ORGANISM_DIR", "WEIGHTS_DIR", "load"]


def load(device: str = "cpu", dtype: str = "float32"):
    """The shipped organism as a :class:`~safety_probe.models.vlm.VLM` named ``organism``.

        >>> from safety_probe import organism
        >>> vlm = organism.load()
    """
    from safety_probe.errors import InputError
    from safety_probe.models.vlm import load_vlm

    if not (ORGANISM_DIR / "config.json").is_file():
        raise InputError(f"the organism is not built at {ORGANISM_DIR}: run `make organism`")
    vlm = load_vlm(ORGANISM_DIR, device=device, dtype=dtype)
    vlm.name = "organism"
    return vlm
