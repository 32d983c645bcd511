"""Refusal steering: add (or ablate) the difference-of-means refusal direction while the model generates.

Arditi, Obeso, Syed, Paleka, Panickssery, Gurnee, Nanda, *Refusal in Language Models Is Mediated by a Single
Direction*, NeurIPS 2024 (arXiv 2406.11717). At block l, r_l = mean over harmful text runs − mean over benign text
runs of the last prompt token's state, fitted on the calibration pairs (:func:`safety_probe.analysis.locate.refusal_direction`).

* ``add`` (activation addition, which induces refusal): h ← h + α·r_l at every real position, prompt and generated
  tokens, of every chosen block's output.
* ``ablate`` (directional ablation, which removes refusal): h ← h − α·(h·r̂_l)·r̂_l, r̂_l = r_l / |r_l|. This is the
  paper's jailbreak, kept as a control: if it lowers text DSR the direction carries the refusal.

Both runs are edited; padding never is.
"""

from __future__ import annotations

import torch

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
    step_mask,
)
from safety_probe.models.hooks import Edit
from safety_probe.models.vlm import VLM, EncodedBatch, Run

MODES = ("add", "ablate")


class RefusalSteering(Defense):
    """Adds α·r_l (``add``) or removes α of the projection on r̂_l (``ablate``) at the state's layers.

    State: ``directions`` ``[len(layers), d_model]`` (r_l, unnormalised); settings ``mode``, ``strength``.
    """

    def __init__(self, state: DefenseState):
        super().__init__(state)
        self.mode: str = state.settings["mode"]
        self.strength = float(state.settings["strength"])
        directions = state.tensors["directions"]
        self.vectors = {l: self.strength * directions[i] for i, l in enumerate(self.layers)}
        self.units = {l: directions[i] / directions[i].norm().clamp_min(1e-12) for i, l in enumerate(self.layers)}

    def edit(self, batch: EncodedBatch) -> Edit:
        """The edit of one batch: every real position of the prompt and every generated token."""
        prompt, generated = position_masks(batch, "all")
        if self.mode == "add":
            return add_vectors(self.vectors, prompt, generated)

        def ablate(layer: int, hidden: torch.Tensor) -> torch.Tensor:
            unit = self.units[layer].to(hidden.device, hidden.dtype)
            along = (hidden @ unit).unsqueeze(-1) * unit  # [B, S, d]: the component on r̂_l
            return hidden - self.strength * step_mask(prompt, generated, hidden) * along
        return ablate

    def __call__(self, vlm: VLM, pairs: list[Pair], run: Run, prompts: PromptSettings,
                 max_new_tokens: int) -> list[tuple[str, dict]]:
        return no_info(generate_edited(vlm, pairs, run, prompts, max_new_tokens, self.layers, self.edit))


def calibrate(vlm: VLM, pairs: list[Pair], layers: list[int], mode: str, options: DefenseOptions) -> RefusalSteering:
    """Fit r_l on the calibration pairs' text runs at ``layers``; with ``strength="auto"`` pick α there (ablate: 1)."""
    harmful, benign = split_labels(pairs, "refusal_steering")
    states = calibration_states(vlm, pairs, layers, options)
    scores, directions = refusal_direction(states.caption_last[harmful], states.caption_last[benign], layers)
    settings = {"mode": mode, "n_harmful": len(harmful), "n_benign": len(benign),
                "direction_norm": {str(l): round(float(directions[i].norm()), 5) for i, l in enumerate(layers)},
                "direction_auroc": {str(l): round(float(v), 4) for l, v in zip(layers, scores.mean)}}

    def build(strength: float, **extra) -> RefusalSteering:
        return RefusalSteering(DefenseState(f"refusal_steering:{mode}", layers, {"directions": directions},
                                            {**settings, "strength": strength, **extra}))

    strength = parse_strength(options.strength)
    if strength is not None:
        return build(strength)
    if mode == "ablate":
        return build(1.0, strength_rule="auto: full ablation")
    best, tried = choose_strength(vlm, pairs, build, options)
    return build(best, strength_rule="auto", strength_scores=tried)


DEFENSE = RefusalSteering
