"""The analysis of `probe-layers`: locate the safety layers and measure the shift from recorded states.

    >>> states = record(vlm, pairs)
    >>> result = analyze(vlm, pairs, states)
    >>> result.safety_layers, result.frame()          # block indices; one row per layer, every metric
    >>> result.save("runs/llava")                     # layers.json + layers.csv

The model first answers every text run greedily (a few tokens): the harmful pairs it refuses are the band's
support, and the first tokens of its refusals are the refusal token set K. Algorithm 1, the released code's
start/end rule, the refusal-token probability and the attention mass are read on the text run of harmful
pairs, and Algorithm 1 also on the benign ones (its false-positive rate); the refusal direction contrasts
harmful and benign text runs; activation patching moves the image run's image-token states to the caption's
at one block at a time, and tail patching puts the text run's states of the prompt after the caption (the
instruction and the template's suffix) in place of the image run's after the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from safety_probe.data.pairs import Pair
from safety_probe.errors import InputError
from safety_probe.io import write_atomic, write_json
from safety_probe.lens import caption_attention_mass, iter_lens_logprobs
from safety_probe.locate import (
    ALG1_CANDIDATES,
    BAND_SHARE,
    MIN_SUPPORT,
    SAFETY_LAYER_RULES,
    LensStats,
    attention_mass_scores,
    choose_safety_layers,
    code_start_end,
    fire_share_scores,
    layer_histogram,
    lens_stats,
    lower_median,
    patching_gain_scores,
    refusal_direction,
    refusal_prob_scores,
)
from safety_probe.models.vlm import VLM, generate_with_ids
from safety_probe.patching import patch_caption_into_image, patch_text_tail_into_image
from safety_probe.probe import PairStates
from safety_probe.prompts import REFUSAL, TEXT_SPANS, is_refusal
from safety_probe.refusal_tokens import RefusalTokens, refusal_token_ids, refusal_tokens_from_responses
from safety_probe.scores import LayerScores, scores_frame, share_with_interval
from safety_probe.shift import semantic_shift

#: Tokens generated per text run to judge whether the model refuses it (enough for any refusal prefix).
REFUSAL_CHECK_TOKENS = 16


@dataclass
class TextRunResponses:
    """Greedy text-run responses of some pairs: the text, its first generated token id, and the refusal verdict."""

    index: list[int]
    responses: list[str]
    first_tokens: list[int | None]
    refused: list[bool]


@dataclass
class LayerAnalysis:
    """Everything `probe-layers` learns per layer; ``scores`` maps metric name to :class:`LayerScores`.

    ``lens`` / ``benign_lens``: Algorithm 1 and the lens on the harmful / benign text runs; ``refusing``:
    positions (within the harmful pairs) of the pairs whose text run the model refuses, the band's support.
    ``warnings`` are also notes, kept apart because something asked for was skipped or is unreliable.
    """

    n_layers: int
    scores: dict[str, LayerScores]
    safety_layers: list[int]
    rule: str
    refusal_tokens: RefusalTokens
    harmful_index: list[int]
    benign_index: list[int] = field(default_factory=list)
    lens: LensStats | None = None
    benign_lens: LensStats | None = None
    responses: TextRunResponses | None = None
    refusing: list[int] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """One row per layer: ``layer``, ``hook`` (TransformerLens name), ``safety_layer``, every metric's mean and 95% band,
        and per-layer counts of the Algorithm-1 layer on harmful (``alg1_count``) and benign (``alg1_benign_count``) text runs."""
        frame = scores_frame(self.scores.values())
        frame.insert(1, "hook", [f"blocks.{int(l)}.hook_resid_post" for l in frame["layer"]])
        frame.insert(2, "safety_layer", frame["layer"].isin(self.safety_layers))
        for column, lens in (("alg1_count", self.lens), ("alg1_benign_count", self.benign_lens)):
            if lens is not None:
                counts = layer_histogram(LensStats.as_layers(lens.alg1), self.n_layers)["counts"]
                frame[column] = [counts[int(l)] for l in frame["layer"]]
        return frame

    def summary(self) -> dict:
        """The ``layers.json`` record (all layer indices are 0-based block indices)."""
        out: dict = {
            "safety_layers": self.safety_layers,
            "safety_layer_rule": self.rule,
            "n_layers": self.n_layers,
            "layer_convention": "layer l = output of decoder block l (0-based) = TransformerLens blocks.{l}.hook_resid_post",
            "settings": self.settings,
            "refusal_tokens": self.refusal_tokens.summary(),
            "harmful_pairs": self.harmful_index,
            "benign_pairs": self.benign_index,
            "support": {"harmful": len(self.harmful_index), "benign": len(self.benign_index),
                        "refusing": len(self.refusing), "min_support": self.settings.get("min_support"),
                        "band_drawn": bool(self.safety_layers) and self.rule != "override"},
            "notes": self.notes,
            "warnings": self.warnings,
        }
        if self.responses is not None:
            harmful = set(self.harmful_index)
            verdicts = dict(zip(self.responses.index, self.responses.refused))
            out["text_run_refusal"] = {
                label: share_with_interval(sum(verdicts[i] for i in idx), len(idx))
                for label, idx in (("harmful", [i for i in self.responses.index if i in harmful]),
                                   ("benign", [i for i in self.responses.index if i not in harmful]))}
        if self.lens is not None:
            out.update(self._lens_summary())
        out["scores"] = {
            name: {"description": s.description, "per_layer": dict(zip(map(str, s.layers), np.round(s.mean, 6).tolist()))}
            for name, s in self.scores.items()
        }
        return out

    def _lens_summary(self) -> dict:
        lens = self.lens
        per_pair = LensStats.as_layers(lens.alg1)
        found = sum(v is not None for v in per_pair)
        paper = LensStats.as_layers(lens.alg1_paper)
        algorithm1 = {
            "per_pair": per_pair,
            "found": found,
            "share_found": round(found / max(len(per_pair), 1), 4),
            "histogram": layer_histogram(per_pair, self.n_layers),
            "start_median": lower_median(per_pair),
            "candidates": self.settings.get("candidates"),
            "paper_per_pair": paper,
            "paper_histogram": layer_histogram(paper, self.n_layers),
        }
        if self.benign_lens is not None:
            benign = LensStats.as_layers(self.benign_lens.alg1)
            algorithm1["benign_per_pair"] = benign
            algorithm1["benign_false_positive"] = share_with_interval(sum(v is not None for v in benign), len(benign))
        refusing = lens.subset(self.refusing) if self.refusing else None
        decision = {
            "band_share": self.settings.get("band_share"),
            "support": len(self.refusing),
            "start_per_pair": LensStats.as_layers(refusing.alg1) if refusing else [],
            "end_per_pair": LensStats.as_layers(refusing.decision_end) if refusing else [],
        }
        for key in ("start", "end"):
            decision[f"{key}_histogram"] = layer_histogram(decision[f"{key}_per_pair"], self.n_layers)
        return {
            "algorithm1": algorithm1,
            "histogram": algorithm1["histogram"],
            "decision": decision,
            "released_code": {
                **code_start_end(lens),
                "start_per_pair": LensStats.as_layers(lens.code_start),
                "end_per_pair": LensStats.as_layers(lens.code_end),
            },
        }

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``layers.json`` and ``layers.csv`` atomically."""
        out_dir = Path(out_dir)
        csv = write_atomic(out_dir / "layers.csv", lambda p: self.frame().to_csv(p, index=False))
        return write_json(out_dir / "layers.json", self.summary()), csv


def text_run_responses(vlm: VLM, pairs: list[Pair], index: list[int], refusal_phrases: tuple[str, ...],
                       system_prompt: str | None = None, batch_size: int = 8, progress: bool = True,
                       max_new_tokens: int = REFUSAL_CHECK_TOKENS) -> TextRunResponses:
    """Greedy text-run responses of ``pairs[i]`` for i in ``index`` and whether each is a refusal (prefix judge)."""
    responses, first = [], []
    for i in tqdm(range(0, len(index), batch_size), desc="text-run refusals", disable=not progress):
        for text, ids in generate_with_ids(vlm, [pairs[j] for j in index[i:i + batch_size]], "text",
                                           system_prompt, max_new_tokens):
            responses.append(text)
            first.append(ids[0] if ids else None)
    return TextRunResponses(list(index), responses, first, [is_refusal(r, refusal_phrases) for r in responses])


def analyze(
    vlm: VLM,
    pairs: list[Pair],
    states: PairStates,
    system_prompt: str | None = None,
    refusal_phrases: tuple[str, ...] = (REFUSAL,),
    rule: str = "default",
    safety_layers: list[int] | None = None,
    patch_pairs: int = 64,
    patch_mode: str = "shift",
    batch_size: int = 8,
    progress: bool = True,
    candidates: int = ALG1_CANDIDATES,
    band_share: float = BAND_SHARE,
    min_support: int = MIN_SUPPORT,
    refusal_tokens: str = "generated",
) -> LayerAnalysis:
    """Locate the safety layers and measure the semantic shift (see the module docstring).

    ``states`` must come from ``record`` on the same ``pairs``. Locating needs every block recorded
    (``--layers all``); with a subset only the shift is measured. ``patch_pairs`` caps the harmful pairs
    used for activation patching (one forward per pair and block); 0 turns patching off.
    ``refusal_tokens``: ``"generated"`` builds K from the first tokens of the model's own text-run refusals
    (falling back to the word list when it refuses none), ``"phrases"`` uses the word list. The band is
    drawn from the harmful pairs whose text run the model refuses, and only from ``min_support`` or more.
    """
    if states.image_mean.shape[0] != len(pairs):
        raise InputError(f"states hold {states.image_mean.shape[0]} pairs but the pairs file has {len(pairs)}")
    if rule not in SAFETY_LAYER_RULES:
        raise InputError(f"unknown safety-layer rule {rule!r}: choose one of {', '.join(SAFETY_LAYER_RULES)}")
    if refusal_tokens not in ("generated", "phrases"):
        raise InputError(f"unknown refusal-token source {refusal_tokens!r}: choose generated or phrases")
    labelled = any(p.label for p in pairs)
    harmful = [i for i, p in enumerate(pairs) if p.label == "harmful"] if labelled else list(range(len(pairs)))
    benign = [i for i, p in enumerate(pairs) if p.label == "benign"]
    notes = [] if labelled else ["no labels in the pairs file: every pair is treated as harmful"]
    warnings: list[str] = []
    if not harmful:
        raise InputError("the pairs file has no harmful pairs: the safety layers are read on harmful text runs")
    settings = {"candidates": candidates, "band_share": band_share, "min_support": min_support,
                "refusal_tokens": refusal_tokens, "text_template": vlm.text_template, "text_run": vlm.text_run,
                "text_span": TEXT_SPANS[vlm.text_run]}
    tensors = {k: v[harmful] for k, v in states.tensors().items()}
    shift = semantic_shift(tensors, layers=states.layers)
    scores = shift.scores
    warnings += [f"{name} skipped: {reason}" for name, reason in shift.skipped.items()]
    fallback = RefusalTokens(refusal_token_ids(vlm.tokenizer, extra_phrases=refusal_phrases), "phrases")
    if states.layers != list(range(vlm.n_layers)):
        notes.append("a subset of layers was recorded: locating needs all layers, only the shift was measured")
        chosen = choose_safety_layers(vlm.n_layers, override=safety_layers) if safety_layers else []
        return LayerAnalysis(vlm.n_layers, scores, chosen, "override" if safety_layers else "none", fallback,
                             harmful, benign, settings=settings, notes=notes, warnings=warnings)

    responses = text_run_responses(vlm, pairs, harmful + benign, refusal_phrases, system_prompt, batch_size, progress)
    n_h = len(harmful)
    refusing = [k for k, refused in enumerate(responses.refused[:n_h]) if refused]
    generated = refusal_tokens_from_responses(vlm.tokenizer, responses.first_tokens, responses.refused,
                                              [k < n_h for k in range(len(responses.refused))])
    if refusal_tokens == "phrases" or generated is None:
        k_set = fallback
        if refusal_tokens == "generated":
            warnings.append(f"the model refused none of the {n_h} harmful text runs: K is the fallback word list")
    else:
        k_set = generated
    if not k_set.ids:
        raise InputError(f"{vlm.name}: no refusal token found in the vocabulary (set --refusal-phrase)")
    ids = list(k_set.ids)
    lens = LensStats.concat([lens_stats(lp, ids, candidates=candidates)
                             for lp in iter_lens_logprobs(vlm, tensors["caption_last"])])
    benign_lens = None
    if benign:
        benign_lens = LensStats.concat([lens_stats(lp, ids, candidates=candidates)
                                        for lp in iter_lens_logprobs(vlm, states.caption_last[benign])])
        scores["alg1_fire_share_benign"] = fire_share_scores(benign_lens.fires, "alg1_fire_share_benign",
                                                             "benign text runs")
    scores["refusal_prob"] = refusal_prob_scores(lens.refusal_prob)
    if refusing:
        scores["alg1_fire_share"] = fire_share_scores(lens.fires[refusing], what="refused harmful text runs")
    harmful_pairs = [pairs[i] for i in harmful]
    mass = caption_attention_mass(vlm, harmful_pairs, system_prompt, batch_size, progress)
    scores["attention_mass"] = attention_mass_scores(mass)
    if len(benign) >= 2 and len(harmful) >= 2:
        scores["refusal_direction_auroc"], _ = refusal_direction(tensors["caption_last"], states.caption_last[benign])
    else:
        warnings.append("refusal direction skipped: it needs at least 2 harmful and 2 benign pairs")
    if patch_pairs > 0:
        n = min(patch_pairs, len(harmful_pairs))
        base, patched = patch_caption_into_image(
            vlm, harmful_pairs[:n], tensors["caption_mean"][:n], ids, range(vlm.n_layers), patch_mode,
            system_prompt, batch_size, progress,
        )
        settings["patched_pairs"] = n
        scores["patching_gain"] = patching_gain_scores(patched, base)
        scores["patched_refusal_prob"] = LayerScores.from_pairs(
            "patched_refusal_prob", patched, description="image-run P(refusal) after patching at the layer")
        notes.append(f"activation patching ({patch_mode}) on the first {n} harmful pairs; "
                     f"unpatched image-run P(refusal) = {float(base.mean()):.4f}")
        _, tail, text_prob = patch_text_tail_into_image(vlm, harmful_pairs[:n], ids, range(vlm.n_layers),
                                                        system_prompt, batch_size, progress)
        scores["tail_patching_gain"] = patching_gain_scores(tail, base, name="tail_patching_gain",
                                                            what="patching the text run's prompt tail")
        notes.append(f"tail patching (the text run's instruction and template suffix into the image run's) on the same "
                     f"{n} pairs; text-run P(refusal) = {float(text_prob.mean()):.4f}")
    chosen, used_rule = [], "override" if safety_layers else rule
    if safety_layers:
        chosen = choose_safety_layers(vlm.n_layers, override=safety_layers)
    elif len(refusing) < min_support:
        warnings.append(f"no safety layers drawn: the model refused {len(refusing)} of {n_h} harmful text runs, "
                        f"fewer than the {min_support} the band needs (--min-support); set them with --safety-layers")
    else:
        try:
            chosen = choose_safety_layers(vlm.n_layers, lens.fires[refusing],
                                          LensStats.as_layers(lens.code_start[refusing]),
                                          LensStats.as_layers(lens.code_end[refusing]), rule, band_share=band_share)
        except ValueError as e:
            warnings.append(f"no safety layers located ({e}); set them with --safety-layers")
    return LayerAnalysis(vlm.n_layers, scores, chosen, used_rule, k_set, harmful, benign, lens, benign_lens,
                         responses, refusing, settings, notes, warnings)


def print_table(result: LayerAnalysis) -> None:
    """A short per-layer table on the terminal, safety layers starred."""
    from rich.console import Console
    from rich.table import Table

    frame = result.frame()
    labels = {"refusal_prob_mean": "P(refuse)", "alg1_count": "alg1 n", "alg1_fire_share_mean": "K rises",
              "alg1_fire_share_benign_mean": "benign", "patching_gain_mean": "patch",
              "tail_patching_gain_mean": "tail patch", "cos_matched_mean": "cos",
              "cos_gap_mean": "cos gap", "cka_debiased_mean": "CKA (deb.)"}
    cols = [c for c in labels if c in frame]
    table = Table(title="per-layer results (* = safety layer)")
    table.add_column("layer", justify="right")
    for c in cols:
        table.add_column(labels[c], justify="right")
    for _, row in frame.iterrows():
        mark = "*" if row["safety_layer"] else ""
        table.add_row(f"{mark}{int(row['layer'])}", *(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    console = Console()
    console.print(table)
    console.print(f"safety layers: {result.safety_layers}  (rule: {result.rule}; {len(result.refusing)} refusing "
                  f"pairs; tokens K ({result.refusal_tokens.source}): "
                  f"{', '.join(repr(t) for t in result.refusal_tokens.ids.values())})")
