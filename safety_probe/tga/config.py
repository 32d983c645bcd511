"""The method's configuration: what TGA trains and how (the comparison harness adds its options in
:mod:`safety_probe.compare`; ``safety-probe tga`` turns both into command-line options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from safety_probe.core.checks import check_choice, check_number


@dataclass
class TGAConfig:
    """Text-Guided Alignment (Xu et al., ICLR 2025, §4): L = L_LM + λ·L_guide on the safety layers J."""

    layers: str = "all"
    """Safety layers J: a layers.json (key ``safety_layers``: 0-based block indices) or a spec like "9-17" / "3,5"."""

    stage: int = 2
    """1: projector only. 2: projector + language model (full, or LoRA with ``lora``). The vision tower stays frozen."""

    lr: float | None = None
    """Peak learning rate. None: the paper's 1e-3 (stage 1) or 2e-6 (stage 2)."""

    epochs: int = 1
    """Passes over the training data (ignored when ``max_steps`` is set)."""

    max_steps: int | None = None
    """Optimizer steps to train for; None: ``epochs`` passes. Also the horizon t = step / max_steps of ``anneal``."""

    batch_size: int = 8
    """Examples per device per forward."""

    grad_accum: int = 1
    """Gradient accumulation steps (accelerate's ``accumulate``)."""

    guide_weight: float = 1.0
    """λ in L = L_LM + λ·L_guide."""

    guide_form: Literal["paper", "exp"] = "paper"
    """paper: Σ_{j∈J} [−cos(I,C) + softplus(−(cos(I,C) − cos(R,C)))], the sum over J as the paper writes it.
    exp: the released code's exp(−cos(I,C)) + exp(−(cos(I,C) − cos(R,C))), averaged over J as that code averages
    over its layers. Both average over the batch."""

    guide_span: Literal["image", "tail"] = "image"
    """What the guide aligns. image (the paper): the image tokens' mean state with the caption tokens' mean, and the
    ranking term with R. tail: the prompt after the image (instruction and chat-template suffix, up to the token
    the answer starts from) with the same tokens after the caption in the caption run, token by token, the pull
    term alone: for a model whose refusal reads those positions rather than the image tokens."""

    guide_centre: bool = False
    """Centre I, C and R on the batch mean of the caption states before the cosines: the raw cosine of residual
    streams is dominated by a component every state shares, which the pull can match without the content."""

    anneal: bool = False
    """Weight the two guide terms by 0.25·(1−t) and 0.1·(1−t)² (released code) instead of 1 and 1."""

    lora: bool = False
    """Stage 2: train the language model through LoRA adapters (peft) instead of all its weights; merged on save."""

    lora_r: int = 16
    """LoRA rank."""

    lora_alpha: int = 32
    """LoRA alpha."""

    weight_decay: float = 0.0
    """AdamW weight decay."""

    warmup_ratio: float = 0.03
    """Share of steps with linear warm-up; cosine decay after."""

    max_grad_norm: float = 1.0
    """Gradient clipping (0: off)."""

    retrieved_in_context: bool = True
    """Put the retrieved text in the training prompt ("Retrieved Text: R. <image>\\n{instruction}")."""

    caption_target: Literal["moving", "frozen"] = "moving"
    """Model of the caption run: "moving" = the model being trained (the paper: a detached, moving target);
    "frozen" = a copy of the starting model, so in stage 2 the language model cannot lower the guide loss by
    moving the captions' states (the text side) instead of the image's. In stage 1 both are the same (the
    projector is not on the text path) and no copy is made; in stage 2 "frozen" holds a second copy in memory."""

    guide_only_labels: list[str] = field(default_factory=list)
    """Rows whose data ``label`` is listed (e.g. harmful) train the guide loss alone, with no answer loss: a
    toxic image is aligned with its caption without being taught a helpful answer, or a refusal."""

    plain_share: float = 0.0
    """Share of training rows given the plain image prompt, without R, as at test time (0 = the paper). With R
    before the image, image tokens can match the caption by attending to R; on plain rows only the image path
    can, and the guide there is the pull term alone."""

    system_prompt: str | None = None
    """System prompt of the training prompts, the caption run and the evaluation (recorded in compare.json)."""

    seed: int = 0
    """Seed of model-independent randomness (data order, generated data)."""

    save_every: int = 50
    """Checkpoint every this many optimizer steps (and at the end)."""

    keep_checkpoints: int = 2
    """Checkpoints kept (oldest deleted)."""

    resume: bool = True
    """Resume from the last checkpoint in ``out`` when one exists."""

    stop_after: int | None = None
    """Stop after this many optimizer steps without finishing (simulates an interruption; for tests)."""

    device: str | None = None
    """Force "cpu"; None: accelerate picks (the GPU of this process when there is one)."""

    dtype: str = "float32"
    """Weights dtype when loading: float32, bfloat16 or float16."""

    mixed_precision: str = "no"
    """accelerate mixed precision: no, bf16 or fp16."""

    threads: int | None = 2
    """CPU threads (fixed for bitwise-reproducible CPU runs); None leaves torch's default."""

    def validate(self) -> None:
        """Check the method's options before any work: one-line InputError naming the option and what it allows."""
        for name, choices in (("stage", (1, 2)), ("guide_form", ("paper", "exp")),
                              ("guide_span", ("image", "tail")), ("caption_target", ("moving", "frozen")),
                              ("device", (None, "cpu", "cuda")), ("dtype", ("float32", "bfloat16", "float16")),
                              ("mixed_precision", ("no", "bf16", "fp16"))):
            check_choice(self, name, choices)
        for name in ("epochs", "max_steps", "batch_size", "grad_accum", "lora_r", "lora_alpha", "save_every",
                     "keep_checkpoints", "stop_after", "threads"):
            check_number(self, name, 1)
        for name in ("guide_weight", "weight_decay", "max_grad_norm"):
            check_number(self, name, 0.0)
        check_number(self, "lr", 0.0, low_open=True)
        check_number(self, "warmup_ratio", 0.0, 1.0, high_open=True)
        check_number(self, "plain_share", 0.0, 1.0)
        check_number(self, "seed", 0, 2**32 - 1)
