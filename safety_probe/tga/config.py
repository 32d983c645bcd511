"""TGA's configuration in parts, as EleutherAI's sparsify nests them: the method (:class:`TGAMethod`: what is aligned,
at which layers, with which loss), the optimiser (:class:`OptimConfig`), how a run is carried out (:class:`RunConfig`:
checkpoints, resuming, threads) and the prompts (:class:`~safety_probe.data.prompts.PromptSettings`), held by one
:class:`TGAConfig`. The comparison harness holds a TGAConfig in its own config (:mod:`safety_probe.compare`);
``safety-probe tga`` flattens all of them into its options, so each field's name is its option and its docstring
its help.

Build one part by part, or by the flat option names (each routed to the part that holds it):

    >>> cfg = TGAConfig(TGAMethod(layers="9-17", stage=1), OptimConfig(lr=1e-3, max_steps=1200))
    >>> cfg = TGAConfig.of(layers="9-17", stage=1, lr=1e-3, max_steps=1200)      # the same config
    >>> cfg.replace(guide_weight=0.0).method.guide_weight                           # a copy with one option changed
    0.0

Where the model lies and in which dtype are the loaded model's: :func:`~safety_probe.tga.train.train` trains the
VLM it is given where it is, and ``safety-probe tga`` loads it by ``--device`` / ``--dtype`` like every command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from safety_probe.core.checks import check_choice, check_number
from safety_probe.core.errors import InputError
from safety_probe.core.options import OptionTree
from safety_probe.data.prompts import PromptSettings


@dataclass
class TGAMethod:
    """Text-Guided Alignment (Xu et al., ICLR 2025, §4): L = L_LM + λ·L_guide on the safety layers J."""

    layers: str = "all"
    """Safety layers J: a layers.json (key ``safety_layers``: 0-based block indices) or a spec like "9-17" / "3,5"."""

    stage: int = 2
    """1: projector only. 2: projector + language model (full, or LoRA with ``lora``). The vision tower stays frozen."""

    guide_weight: float = 1.0
    """λ in L = L_LM + λ·L_guide."""

    guide_form: Literal["paper", "exp"] = "paper"
    """paper: Σ_{j∈J} [−cos(I,C) + softplus(−(cos(I,C) − cos(R,C)))], the sum over J as the paper writes it.
    exp: the released code's exp(−cos(I,C)) + exp(−(cos(I,C) − cos(R,C))), averaged over J as that code averages
    over its layers. Both average over the batch."""

    guide_span: Literal["image", "tail", "last"] = "image"
    """What the guide aligns. image (the paper): the image tokens' mean state with the caption tokens' mean, and the
    ranking term with R. tail: the prompt after the image (instruction and chat-template suffix, up to the token
    the answer starts from) with the same tokens after the caption in the caption run, token by token, the pull
    term alone: for a model whose refusal reads those positions rather than the image tokens. last: the tail's
    last position alone (the token the answer starts from)."""

    guide_centre: bool = False
    """Centre I, C and R on the batch mean of the caption states before the cosines: the raw cosine of residual
    streams is dominated by a component every state shares, which the pull can match without the content."""

    guide_centre_by: Literal["batch", "position"] = "batch"
    """With ``guide_centre``: subtract the batch mean of all caption states (batch), or, for the tail, the batch mean
    of the caption states at the same distance from the end of the prompt (position: each chat-template token is
    centred on its own mean)."""

    guide_layer_mean: bool = False
    """Average the guide over the layers of J instead of summing them (the paper sums): λ then weighs one layer,
    and a guide over 13 layers no longer gets 6.5 times the weight of one over 2."""

    anneal: bool = False
    """Weight the two guide terms by 0.25·(1−t) and 0.1·(1−t)² (released code) instead of 1 and 1."""

    lora: bool = False
    """Stage 2: train the language model through LoRA adapters (peft) instead of all its weights; merged on save."""

    lora_r: int = 16
    """LoRA rank."""

    lora_alpha: int = 32
    """LoRA alpha."""

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

    def validate(self) -> None:
        """One-line InputError naming the option that is out of range."""
        for name, choices in (("stage", (1, 2)), ("guide_form", ("paper", "exp")),
                              ("guide_span", ("image", "tail", "last")), ("guide_centre_by", ("batch", "position")),
                              ("caption_target", ("moving", "frozen"))):
            check_choice(self, name, choices)
        for name in ("lora_r", "lora_alpha"):
            check_number(self, name, 1)
        check_number(self, "guide_weight", 0.0)
        check_number(self, "plain_share", 0.0, 1.0)
        if self.guide_centre and self.guide_centre_by == "position" and self.guide_span == "image":
            raise InputError("--guide-centre-by position centres tail positions: use it with --guide-span tail or last")

    def centring(self) -> str:
        """How the guide centres its states: none, batch or position."""
        return self.guide_centre_by if self.guide_centre else "none"


@dataclass
class OptimConfig:
    """How the trained weights are optimised: AdamW with linear warm-up and cosine decay."""

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

    weight_decay: float = 0.0
    """AdamW weight decay."""

    warmup_ratio: float = 0.03
    """Share of steps with linear warm-up; cosine decay after."""

    max_grad_norm: float = 1.0
    """Gradient clipping (0: off)."""

    mixed_precision: str = "no"
    """accelerate mixed precision: no, bf16 or fp16."""

    seed: int = 0
    """Seed of model-independent randomness (data order, generated data)."""

    def peak_lr(self, stage: int) -> float:
        """``lr``, or the paper's default of ``stage``."""
        return self.lr if self.lr is not None else (1e-3 if stage == 1 else 2e-6)

    def validate(self) -> None:
        """One-line InputError naming the option that is out of range."""
        check_choice(self, "mixed_precision", ("no", "bf16", "fp16"))
        for name in ("epochs", "max_steps", "batch_size", "grad_accum"):
            check_number(self, name, 1)
        for name in ("weight_decay", "max_grad_norm"):
            check_number(self, name, 0.0)
        check_number(self, "lr", 0.0, low_open=True)
        check_number(self, "warmup_ratio", 0.0, 1.0, high_open=True)
        check_number(self, "seed", 0, 2**32 - 1)


@dataclass
class RunConfig:
    """How a run is carried out, never what it computes (none of these enters the run key: a rerun with other values
    resumes)."""

    save_every: int = 50
    """Checkpoint every this many optimizer steps (and at the end)."""

    keep_checkpoints: int = 2
    """Checkpoints kept (oldest deleted)."""

    resume: bool = True
    """Resume from the last checkpoint in ``out`` when one exists."""

    stop_after: int | None = None
    """Stop after this many optimizer steps without finishing (simulates an interruption; for tests)."""

    threads: int | None = 2
    """CPU threads (fixed for bitwise-reproducible CPU runs); None leaves torch's default."""

    shortcuts: bool = True
    """Exact shortcuts of every step (docs/speed.md): the prompt prefix all rows share computed once while the blocks
    are frozen, caption targets kept for rows that come again while they cannot change, guide-only rows stopped
    after the deepest guided block. The same weights to float rounding; false runs every forward whole."""

    keep_targets_mb: float = 2048.0
    """Memory for caption targets kept between a row's uses (with ``shortcuts``); rows beyond it recompute theirs."""

    def validate(self) -> None:
        """One-line InputError naming the option that is out of range."""
        for name in ("save_every", "keep_checkpoints", "stop_after", "threads"):
            check_number(self, name, 1)
        check_number(self, "keep_targets_mb", 0.0)


@dataclass
class TGAConfig(OptionTree):
    """One TGA training run: the method, the optimiser, how the run is carried out, and the prompts."""

    method: TGAMethod = field(default_factory=TGAMethod)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    """Prompts of the training rows, the caption run and the evaluation. Training batches pad on the right whatever
    ``padding_side`` says (the answer follows each prompt); the caption run is the text run of ``text_template``."""

    def validate(self) -> None:
        """Check every option before any work: one-line InputError naming the option and what it allows."""
        self.method.validate()
        self.optim.validate()
        self.run.validate()
        if self.prompts.text_run != "caption":
            raise InputError(f"--text-run {self.prompts.text_run}: TGA's caption run sends each row's image_caption "
                             "(use --text-run caption)")

    def key_settings(self) -> dict:
        """Every setting of this config that changes the trained weights (for run keys): all but :class:`RunConfig`."""
        return {"method": asdict(self.method), "optim": asdict(self.optim), "prompts": self.prompts.settings()}
