"""TGA (Text-Guided Alignment, Xu et al., ICLR 2025 §4), the method only: align image-token states with their
caption's at the safety layers so the language model's text safety transfers to images. See docs/tga.md.

    >>> from safety_probe.tga.config import TGAConfig
    >>> from safety_probe.tga.data import load_tga_data
    >>> from safety_probe.tga.train import train
    >>> result = train(load_vlm("runs/llava-base"), TGAConfig(layers="9-17", stage=1), load_tga_data("tga.json"), "runs/tga")

Modules: ``config`` (the method's fields), ``data`` (LLaVA conversation JSON + caption and retrieved text),
``loss`` (the guide loss), ``batch`` (the collator), ``params`` (what is trained: projector, language model,
LoRA), ``train`` (the accelerate trainer). The before/after harness
with baselines is :mod:`safety_probe.compare`.
"""
