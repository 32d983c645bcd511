"""TGA (Text-Guided Alignment, Xu et al., ICLR 2025 §4), the method only: align image-token states with their
caption's at the safety layers so the language model's text safety transfers to images. See docs/tga.md.

    >>> from safety_probe.tga.config import TGAConfig
    >>> from safety_probe.tga.data import load_tga_data
    >>> from safety_probe.tga.train import train
    >>> cfg = TGAConfig.of(layers="9-17", stage=1)          # = TGAConfig(TGAMethod(layers="9-17", stage=1))
    >>> result = train(load_vlm("runs/llava-base"), cfg, load_tga_data("tga.json"), "runs/tga")

Modules: ``config`` (the method's, the optimiser's and the run's fields, and the prompts), ``data`` (LLaVA
conversation JSON + caption and retrieved text), ``retrieval`` (R where the data lack it), ``loss`` (the guide's
rows and loss), ``batch`` (the collator), ``params`` (what is trained: projector, language model, LoRA), ``state``
(checkpoints), ``schedule`` (the learning rate), ``train`` (the accelerate trainer). The before/after harness with
baselines is :mod:`safety_probe.compare`.
"""
