"""Shift correction: move the image run's states at the safety layers toward where their captions' states are.

The semantic shift (Xu et al., ICLR 2025, §3) is measured on the calibration pairs as the mean, over pairs, of the
caption's state minus the image's state at block l: δ_l ``[d_model]``. Two modes:

* ``cmrm``, after CMRM (Liu et al., *Unraveling and Mitigating Safety Alignment Degradation of Vision-Language
  Models*, Findings of ACL 2025): add α·δ_l, the whole dataset-level shift from the multimodal toward the text-only
  representation, at inference time.
* ``shiftdc``, after ShiftDC (Zou, Kang, Kesidis, Lin, *Understanding and Rectifying Safety Perception Distortion in
  VLMs*, NeurIPS 2025): add only the shift's safety-relevant component, its projection on the refusal direction
  r̂_l (harmful minus benign text runs at the last prompt token): α·(δ_l·r̂_l)·r̂_l. What the image carries that the
  caption does not is left alone.

``positions="image"``: δ_l is the shift of the token spans' means (caption tokens of the text run minus image tokens
of the image run, as probe-layers measures it) and is added at the image-token positions of the image run.
``positions="after"``: δ_l is the shift of the last prompt token (text run minus image run), added at every position
from the first image token on, generated tokens included, as CMRM shifts the multimodal input's representation.
Differences from the papers: CMRM and ShiftDC calibrate every layer, ShiftDC per input from the model's own caption;
here the vector is fitted once on the calibration split and added at the chosen (safety) layers. The text run has
no image and is never edited.
"""

from __future__ import annotations

from safety_probe.analysis.locate import refusal_direction
from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import PromptSettings
from safety_probe.defenses.base import (
    Defense,
    DefenseOptions,
    DefenseState,
    add_vectors,
    calibration_states,
    choose_strength,
    generate_edited,
    no_info,
    parse_strength,
    position_masks,
    split_labels,
)
from safety_probe.models.generate import generate
from safety_probe.models.hooks import Edit
from safety_probe.models.vlm import VLM, EncodedBatch, Run

MODES = ("cmrm", "shiftdc")


class ShiftCorrection(Defense):
    """Adds α·v_l to the image run at the state's layers and positions: v_l = δ_l (cmrm) or its part on r̂_l (shiftdc).

    State: ``shift`` ``[len(layers), d_model]`` (δ_l), ``refusal_direction`` ``[len(layers), d_model]`` (r_l);
    settings ``mode``, ``positions``, ``strength``.
    """

    def __init__(self, state: DefenseState):
        super().__init__(state)
        self.mode: str = state.settings["mode"]
        self.positions: str = state.settings["positions"]
        self.strength = float(state.settings["strength"])
        shift, direction = state.tensors["shift"], state.tensors["refusal_direction"]
        if self.mode == "shiftdc":
            unit = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            shift = (shift * unit).sum(-1, keepdim=True) * unit
        self.vectors = {l: self.strength * shift[i] for i, l in enumerate(self.layers)}

    def edit(self, batch: EncodedBatch) -> Edit:
        """The edit of one batch at its image tokens (``image``) or from its first image token on (``after``)."""
        return add_vectors(self.vectors, *position_masks(batch, self.positions))

    def __call__(self, vlm: VLM, pairs: list[Pair], run: Run, prompts: PromptSettings,
                 max_new_tokens: int) -> list[tuple[str, dict]]:
        if run == "text":
            return no_info(generate(vlm, pairs, run, prompts, max_new_tokens))
        return no_info(generate_edited(vlm, pairs, run, prompts, max_new_tokens, self.layers, self.edit))


def calibrate(vlm: VLM, pairs: list[Pair], layers: list[int], mode: str, options: DefenseOptions) -> ShiftCorrection:
    """Fit δ_l (and r_l) on the calibration pairs at ``layers``; with ``strength="auto"`` pick α there."""
    harmful, benign = split_labels(pairs, "shift_correction")
    states = calibration_states(vlm, pairs, layers, options)
    if options.positions == "image":
        shift = (states.caption_mean - states.image_mean).mean(0)
    else:
        shift = (states.caption_last - states.image_last).mean(0)
    scores, direction = refusal_direction(states.caption_last[harmful], states.caption_last[benign], layers)
    unit = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    settings = {"mode": mode, "positions": options.positions, "n_pairs": len(pairs),
                "shift_norm": {str(l): round(float(shift[i].norm()), 5) for i, l in enumerate(layers)},
                "shift_along_refusal": {str(l): round(float(shift[i] @ unit[i]), 5) for i, l in enumerate(layers)},
                "direction_auroc": {str(l): round(float(v), 4) for l, v in zip(layers, scores.mean)}}

    def build(strength: float, **extra) -> ShiftCorrection:
        return ShiftCorrection(DefenseState(f"shift_correction:{mode}", layers,
                                            {"shift": shift, "refusal_direction": direction},
                                            {**settings, "strength": strength, **extra}))

    strength = parse_strength(options.strength)
    if strength is not None:
        return build(strength)
    best, tried = choose_strength(vlm, pairs, build, options)
    return build(best, strength_rule="auto", strength_scores=tried)


DEFENSE = ShiftCorrection
