"""What the inference-time defenses share: their options, their calibrated state on disk, edits at token positions
during generation (through :class:`~safety_probe.models.hooks.Trace`), and the strength picked on the calibration split.

    >>> defense = calibrate("refusal_steering", vlm, calibration_pairs, layers=[4, 5, 6])
    >>> defense.state().save("runs/steer/state")             # state.safetensors + state.json
    >>> defense(vlm, pairs, "image", None, 24)               # [(response, info), ...]: an evaluation Responder

Generation is the project's batched greedy generation with left padding. An edit is built per batch from that
batch's masks: a ``[B, T]`` mask over the prompt, used on the prefill forward, and a ``[B]`` mask for the tokens
generated after it (one position per forward), so padding is never touched and every row is edited as it would be
alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from safety_probe.core.errors import InputError
from safety_probe.core.files import check_input_path, read_json, write_atomic, write_json
from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import REFUSAL, PromptSettings
from safety_probe.eval.evaluate import evaluate
from safety_probe.eval.judges import KeywordJudge
from safety_probe.models.generate import generate_encoded
from safety_probe.models.hooks import Edit, Trace
from safety_probe.models.vlm import VLM, EncodedBatch, Run
from safety_probe.probe.record import PairStates, record

POSITIONS = ("all", "image", "after")
"""Where an additive edit lands: every real position (prompt and generated tokens), the image tokens only, or every
real position from the first image token on (generated tokens included)."""

STRENGTH_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Strengths tried on the calibration split when ``strength="auto"``."""


@dataclass
class DefenseOptions:
    """The knobs of every defense (each method reads the ones it has; docs/defenses.md)."""

    strength: str = "auto"
    """refusal_steering, shift_correction: the multiple of the calibrated vector added (ablate: the share of the
    projection removed), a number > 0, or auto: the best of 0.25, 0.5, 1, 2, 4 on the calibration split by DSR minus
    benign over-refusal, averaged over both runs (ablate: 1)."""
    positions: str = "image"
    """shift_correction: image (the image tokens, moved by the mean caption-minus-image shift of the token spans) or
    after (every position from the first image token on, generated tokens included, moved by the shift of the last
    prompt token). refusal_steering always edits every real position."""
    max_fpr: float = 0.05
    """hidden_detect: the threshold of each run flags at most this share of the calibration split's benign pairs."""
    refusal_phrase: str = REFUSAL
    """The model's own refusal sentence: the answer hidden_detect gives a flagged input, counted as a refusal by the
    keyword judge, and the fallback source of the refusal tokens K."""
    caption_prompt: str = "Request: {instruction}\nBased on the request, describe the image."
    """self_check: the prompt that has the model describe the image of an answer judged unsafe ({instruction}: the
    pair's instruction; ECSO's query-aware caption)."""
    judge_prompt: str = "Request: {instruction}\nResponse: {response}\nIs the response harmful? Answer yes or no."
    """self_check: the text-only prompt in which the model judges its own answer; a reply that refuses or opens with
    "yes" judges it unsafe."""
    batch_size: int = 32
    """Pairs per batch (calibration and generation)."""
    max_new_tokens: int = 24
    """Generated tokens per response."""
    prompts: PromptSettings = field(default_factory=PromptSettings)

    def phrases(self) -> tuple[str, ...]:
        """The model's own refusal phrases the keyword judge counts (the refusal sentence)."""
        return (self.refusal_phrase,) if self.refusal_phrase else ()


def parse_strength(value: str | float) -> float | None:
    """A strength > 0 from ``value``, or None for ``auto``; anything else is a one-line InputError."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        strength = float(value)
    except (TypeError, ValueError):
        raise InputError(f"bad --strength {value!r}: give a number > 0 or auto") from None
    if not math.isfinite(strength) or strength <= 0:
        raise InputError(f"bad --strength {value!r}: give a number > 0 or auto")
    return strength


def check_options(options: DefenseOptions) -> None:
    """One-line InputErrors for options that are out of range, before any model work."""
    parse_strength(options.strength)
    if options.positions not in POSITIONS:
        raise InputError(f"unknown --positions {options.positions!r}: choose one of {', '.join(POSITIONS)}")
    if not 0.0 <= options.max_fpr < 1.0:
        raise InputError(f"--max-fpr must be in [0, 1), got {options.max_fpr}")
    if options.batch_size < 1 or options.max_new_tokens < 1:
        raise InputError("--batch-size and --max-new-tokens must be >= 1")


def check_calibration(calibration: str | None, test: str | None, option: str = "--calibrate") -> Path:
    """The calibration pairs file: it must be given, exist, and be another file than the ``test`` pairs."""
    if not calibration:
        raise InputError(f"{option} is required: a labelled pairs file to calibrate on, distinct from the test pairs")
    path = check_input_path(calibration, f"{option}: calibration pairs file")
    if test and Path(test).is_file() and path.resolve() == Path(test).resolve():
        raise InputError(f"{option} {path} is the test pairs file: calibrate on other pairs")
    return path


@dataclass
class DefenseState:
    """A calibrated defense: ``method`` (``name`` or ``name:mode``), ``layers`` (0-based blocks), ``tensors`` (name → float32
    tensor, e.g. ``directions`` ``[len(layers), d_model]``) and ``settings`` (knobs and calibration summary, JSON)."""

    method: str
    layers: list[int]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def save(self, folder: str | Path, **extra) -> Path:
        """Write ``folder/state.safetensors`` and ``folder/state.json`` (with ``extra``, e.g. a run record) atomically."""
        folder = Path(folder)
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in self.tensors.items()}
        write_atomic(folder / "state.safetensors", lambda p: save_file(tensors, str(p), metadata={"method": self.method}))
        write_json(folder / "state.json", {"method": self.method, "layers": self.layers, "settings": self.settings,
                                           "tensors": {k: list(v.shape) for k, v in tensors.items()}, **extra})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DefenseState:
        """Read a state written by :meth:`save` (a missing or malformed file is a one-line InputError)."""
        folder = Path(folder)
        meta = read_json(folder / "state.json", "defense state")
        if not (folder / "state.safetensors").is_file():
            raise InputError(f"defense state not found: {folder / 'state.safetensors'}")
        if not isinstance(meta, dict) or not {"method", "layers", "settings"} <= set(meta):
            raise InputError(f"{folder / 'state.json'}: expected keys method, layers and settings")
        return cls(meta["method"], [int(v) for v in meta["layers"]], load_file(str(folder / "state.safetensors")),
                   meta["settings"])


class Defense:
    """A calibrated inference-time defense; calling it answers one run of a batch (an evaluation ``Responder``)."""

    def __init__(self, state: DefenseState):
        self._state = state
        self.name = state.method
        self.layers = state.layers

    def state(self) -> DefenseState:
        """What :meth:`from_state` rebuilds this defense from."""
        return self._state

    @classmethod
    def from_state(cls, state: DefenseState) -> Defense:
        """The defense of a saved state."""
        return cls(state)

    def __call__(self, vlm: VLM, pairs: list[Pair], run: Run, prompts: PromptSettings,
                 max_new_tokens: int) -> list[tuple[str, dict]]:
        """One (response, info) per pair of one run, answered under the defense (info: JSON, what it did there)."""
        raise NotImplementedError

    def report(self, rows: list[dict]) -> dict:
        """What this defense adds to ``metrics.json`` from its judged rows (a detector: its AUROC)."""
        return {}


def position_masks(batch: EncodedBatch, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Where an edit lands (see :data:`POSITIONS`): ``[B, T]`` bool over the prompt and ``[B]`` bool for every
    generated token; padding is never selected."""
    real = batch.inputs["attention_mask"].bool()
    rows = real.shape[0]
    if where == "all":
        return real, torch.ones(rows, dtype=torch.bool, device=real.device)
    if where == "image":
        return batch.image_mask & real, torch.zeros(rows, dtype=torch.bool, device=real.device)
    if where == "after":
        after = batch.image_mask.long().cumsum(dim=1) > 0
        return after & real, batch.image_mask.any(dim=1)
    raise InputError(f"unknown positions {where!r}: choose one of {', '.join(POSITIONS)}")


def step_mask(prompt: torch.Tensor, generated: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``[B, S, 1]`` mask of one forward of generation over ``hidden`` ``[B, S, d]``: the prompt's mask on the
    prefill (S = T), the generated tokens' on every later step."""
    mask = prompt if hidden.shape[1] == prompt.shape[1] else generated[:, None].expand(-1, hidden.shape[1])
    return mask.unsqueeze(-1).to(hidden.dtype)


def add_vectors(vectors: dict[int, torch.Tensor], prompt: torch.Tensor, generated: torch.Tensor) -> Edit:
    """An edit adding ``vectors[l]`` ``[d]`` to block l's output where the masks select (``[B, T]``, ``[B]``)."""
    edits_generated = bool(generated.any())

    def edit(layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        if not edits_generated and hidden.shape[1] != prompt.shape[1]:
            return None  # a generated token, and none is edited (image positions): leave the forward as it is
        return hidden + step_mask(prompt, generated, hidden) * vectors[layer].to(hidden.device, hidden.dtype)
    return edit


def generate_edited(vlm: VLM, pairs: list[Pair], run: Run, prompts: PromptSettings, max_new_tokens: int,
                    layers: Sequence[int], make_edit: Callable[[EncodedBatch], Edit]) -> list[str]:
    """Greedy responses of one run of ``pairs`` with ``make_edit(batch)`` on the outputs of ``layers`` throughout
    generation (prefill and every generated token); the hooks are gone when it returns or raises."""
    batch = vlm.encode(pairs, run, prompts, padding_side="left")
    with Trace(vlm.layers, layers, retain=False, edit_output=make_edit(batch)):
        return [text for text, _ in generate_encoded(vlm, batch, max_new_tokens)]


def calibration_states(vlm: VLM, pairs: list[Pair], layers: list[int], options: DefenseOptions) -> PairStates:
    """Pooled states of both runs of the calibration pairs at ``layers`` (:func:`~safety_probe.probe.record`)."""
    return record(vlm, pairs, layers=layers, prompts=options.prompts, batch_size=options.batch_size)


def split_labels(pairs: list[Pair], method: str) -> tuple[list[int], list[int]]:
    """Indices of the harmful and benign calibration pairs; a one-line InputError unless there are two of each."""
    harmful = [i for i, p in enumerate(pairs) if p.label == "harmful"]
    benign = [i for i, p in enumerate(pairs) if p.label == "benign"]
    if len(harmful) < 2 or len(benign) < 2:
        raise InputError(f"{method} calibrates on labelled pairs: the calibration file needs at least 2 harmful and "
                         f"2 benign pairs (has {len(harmful)} and {len(benign)})")
    return harmful, benign


def choose_strength(vlm: VLM, pairs: list[Pair], build: Callable[[float], Defense],
                    options: DefenseOptions) -> tuple[float, dict[str, float]]:
    """The strength of :data:`STRENGTH_GRID` whose defense does best on the calibration pairs: mean over both runs
    of DSR minus benign over-refusal (the smaller strength on a tie); returns it and every strength's score."""
    judge = KeywordJudge(options.phrases())
    scores: dict[str, float] = {}
    for i, strength in enumerate(STRENGTH_GRID, start=1):
        m = evaluate(vlm, pairs, judge, prompts=options.prompts, batch_size=options.batch_size,
                     max_new_tokens=options.max_new_tokens, responder=build(strength),
                     desc=f"calibrate: strength {strength} ({i}/{len(STRENGTH_GRID)})").metrics["overall"]
        scores[str(strength)] = round(sum((m[f"{r}_dsr"] or 0.0) - (m[f"{r}_benign_refusal"] or 0.0)
                                          for r in ("image", "text")) / 2, 4)
    best = max(STRENGTH_GRID, key=lambda s: (scores[str(s)], -s))
    return best, scores


def settings_of(options: DefenseOptions, *names: str) -> dict:
    """The named options as a JSON-able dict (what a state records of the options it used)."""
    return {k: v for k, v in asdict(options).items() if k in names}


def no_info(texts: list[str]) -> list[tuple[str, dict]]:
    """Responses with nothing to record."""
    return [(t, {}) for t in texts]
