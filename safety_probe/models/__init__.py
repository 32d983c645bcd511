"""Adapters that give every supported Hugging Face vision-language model one interface."""

from safety_probe.models.vlm import SUPPORTED_FAMILIES, VLM, EncodedBatch, load_vlm

__all__ = ["SUPPORTED_FAMILIES", "VLM", "EncodedBatch", "load_vlm"]
