"""The model organism: a tiny LLaVA trained from scratch whose text safety does not transfer to images.

``ORGANISM_DIR`` holds the Hugging Face folder of the LLaVA (model + processor); ``CLIP_DIR`` the CLIP model
whose vision tower the LLaVA uses (also a retriever and an input-filter baseline). See docs/organism.md.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ORGANISM_DIR = WEIGHTS_DIR / "llava"
CLIP_DIR = WEIGHTS_DIR / "clip"

__all__ = ["CLIP_DIR", "ORGANISM_DIR", "WEIGHTS_DIR", "folder", "load"]


def folder() -> Path:
    """The organism's model folder (registered as the model name ``organism``)."""
    from safety_probe.core.errors import InputError

    if not (ORGANISM_DIR / "config.json").is_file():
        raise InputError(f"the organism is not built at {ORGANISM_DIR}: run `make organism`")
    return ORGANISM_DIR


def load(name: str = "organism", *, device: str = "cpu", dtype: str = "float32"):
    """An organism (``organism`` or ``organism-smol``) as a :class:`~safety_probe.models.vlm.VLM`: exactly
    ``safety_probe.load_vlm(name, device=device, dtype=dtype)``, the one way the docs use.

        >>> import safety_probe as sp
        >>> vlm = sp.load_vlm("organism-smol")      # the same as organism.load("organism-smol")
    """
    from safety_probe.core.errors import InputError
    from safety_probe.models.load import load_vlm

    if name not in ("organism", "organism-smol"):
        raise InputError(f"unknown organism {name!r}: choose organism or organism-smol")
    return load_vlm(name, device=device, dtype=dtype)
