"""The analysis of `probe-layers`: locate the safety layers and measure the shift from recorded states.

    >>> states = record(vlm, pairs)
    >>> result = analyze(vlm, pairs, states)
    >>> result.safety_layers, result.frame()          # block indices; one row per layer, every metric
    >>> result.save("runs/llava")                     # layers.json + layers.csv

Algorithm 1, the released code's start/end rule, the refusal-token probability and the attention mass
are read on the text run of harmful pairs; the refusal direction contrasts harmful and benign text runs;
activation patching moves the image run's image-token states to the caption's at one block at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from safety_probe.data.pairs import Pair
from safety_probe.errors import InputError
from safety_probe.io import write_atomic, write_json
from safety_probe.lens import caption_attention_mass, iter_lens_logprobs
from safety_probe.locate import (
    LensStats,
    attention_mass_scores,
    choose_safety_layers,
    code_start_end,
    layer_histogram,
    lens_stats,
    patching_gain_scores,
    refusal_direction,
    refusal_prob_scores,
    refusal_token_ids,
)
from safety_probe.models.vlm import VLM
from safety_probe.patching import patch_caption_into_image
from safety_probe.probe import PairStates
from safety_probe.prompts import REFUSAL
from safety_probe.scores import LayerScores, scores_frame
from safety_probe.shift import semantic_shift


@dataclass
class LayerAnalysis:
    """Everything `probe-layers` learns per layer; ``scores`` maps metric name to :class:`LayerScores`."""

    n_layers: int
    scores: dict[str, LayerScores]
    safety_layers: list[int]
    rule: str
    refusal_tokens: dict[int, str]
    harmful_index: list[int]
    lens: LensStats | None = None
    notes: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """One row per layer: ``layer``, ``hook`` (TransformerLens name), ``safety_layer``, every metric's mean and 95% band."""
        frame = scores_frame(self.scores.values())
        frame.insert(1, "hook", [f"blocks.{int(l)}.hook_resid_post" for l in frame["layer"]])
        frame.insert(2, "safety_layer", frame["layer"].isin(self.safety_layers))
        if self.lens is not None:
            counts = layer_histogram(LensStats.as_layers(self.lens.alg1), self.n_layers)["counts"]
            frame["alg1_count"] = [counts[int(l)] for l in frame["layer"]]
        return frame

    def summary(self) -> dict:
        """The ``layers.json`` record (all layer indices are 0-based block indices)."""
        out: dict = {
            "safety_layers": self.safety_layers,
            "safety_layer_rule": self.rule,
            "n_layers": self.n_layers,
            "layer_convention": "layer l = output of decoder block l (0-based) = TransformerLens blocks.{l}.hook_resid_post",
            "refusal_tokens": {str(k): v for k, v in self.refusal_tokens.items()},
            "harmful_pairs": self.harmful_index,
            "notes": self.notes,
        }
        if self.lens is not None:
            per_pair = LensStats.as_layers(self.lens.alg1)
            found = sum(v is not None for v in per_pair)
            out["algorithm1"] = {
                "per_pair": per_pair,
                "found": found,
                "share_found": round(found / max(len(per_pair), 1), 4),
                "histogram": layer_histogram(per_pair, self.n_layers),
            }
            out["histogram"] = out["algorithm1"]["histogram"]
            out["released_code"] = {
                **code_start_end(self.lens),
                "start_per_pair": LensStats.as_layers(self.lens.code_start),
                "end_per_pair": LensStats.as_layers(self.lens.code_end),
            }
        out["scores"] = {
            name: {"description": s.description, "per_layer": dict(zip(map(str, s.layers), np.round(s.mean, 6).tolist()))}
            for name, s in self.scores.items()
        }
        return out

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``layers.json`` and ``layers.csv`` atomically."""
        out_dir = Path(out_dir)
        csv = write_atomic(out_dir / "layers.csv", lambda p: self.frame().to_csv(p, index=False))
        return write_json(out_dir / "layers.json", self.summary()), csv


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
) -> LayerAnalysis:
    """Locate the safety layers and measure the semantic shift (see the module docstring).

    ``states`` must come from ``record`` on the same ``pairs``. Locating needs every block recorded
    (``--layers all``); with a subset only the shift is measured. ``patch_pairs`` caps the harmful pairs
    used for activation patching (one forward per pair and block); 0 turns patching off.
    """
    if states.image_mean.shape[0] != len(pairs):
        raise InputError(f"states hold {states.image_mean.shape[0]} pairs but the pairs file has {len(pairs)}")
    labelled = any(p.label for p in pairs)
    harmful = [i for i, p in enumerate(pairs) if p.label == "harmful"] if labelled else list(range(len(pairs)))
    benign = [i for i, p in enumerate(pairs) if p.label == "benign"]
    notes = [] if labelled else ["no labels in the pairs file: every pair is treated as harmful"]
    if len(harmful) < 3:
        raise InputError("the pairs file has fewer than 3 harmful pairs: the shift's baselines and CKA need more")
    tensors = {k: v[harmful] for k, v in states.tensors().items()}
    scores = semantic_shift(tensors, layers=states.layers).scores
    refusal_ids = refusal_token_ids(vlm.tokenizer, extra_phrases=refusal_phrases)
    ids = list(refusal_ids)
    if states.layers != list(range(vlm.n_layers)):
        notes.append("a subset of layers was recorded: locating needs all layers, only the shift was measured")
        chosen = choose_safety_layers(vlm.n_layers, override=safety_layers) if safety_layers else []
        return LayerAnalysis(vlm.n_layers, scores, chosen, "override" if safety_layers else "none",
                             refusal_ids, harmful, None, notes)

    harmful_pairs = [pairs[i] for i in harmful]
    lens = LensStats.concat([lens_stats(lp, ids) for lp in iter_lens_logprobs(vlm, tensors["caption_last"])])
    scores["refusal_prob"] = refusal_prob_scores(lens.refusal_prob)
    mass = caption_attention_mass(vlm, harmful_pairs, system_prompt, batch_size, progress)
    scores["attention_mass"] = attention_mass_scores(mass)
    if len(benign) >= 2 and len(harmful) >= 2:
        scores["refusal_direction_auroc"], _ = refusal_direction(tensors["caption_last"], states.caption_last[benign])
    else:
        notes.append("refusal direction skipped: it needs at least 2 harmful and 2 benign pairs")
    if patch_pairs > 0:
        n = min(patch_pairs, len(harmful_pairs))
        base, patched = patch_caption_into_image(
            vlm, harmful_pairs[:n], tensors["caption_mean"][:n], ids, range(vlm.n_layers), patch_mode,
            system_prompt, batch_size, progress,
        )
        scores["patching_gain"] = patching_gain_scores(patched, base)
        scores["patched_refusal_prob"] = LayerScores.from_pairs(
            "patched_refusal_prob", patched, description="image-run P(refusal) after patching at the layer")
        notes.append(f"activation patching ({patch_mode}) on the first {n} harmful pairs; "
                     f"unpatched image-run P(refusal) = {float(base.mean()):.4f}")
    try:
        chosen = choose_safety_layers(vlm.n_layers, LensStats.as_layers(lens.alg1), LensStats.as_layers(lens.code_start),
                                      LensStats.as_layers(lens.code_end), rule, safety_layers)
    except ValueError as e:  # a model that never refuses in text has no safety layers to find
        chosen = []
        notes.append(f"no safety layers located ({e}); set them with --safety-layers")
    return LayerAnalysis(vlm.n_layers, scores, chosen, "override" if safety_layers else rule,
                         refusal_ids, harmful, lens, notes)


def print_table(result: LayerAnalysis) -> None:
    """A short per-layer table on the terminal, safety layers starred."""
    from rich.console import Console
    from rich.table import Table

    frame = result.frame()
    labels = {"refusal_prob_mean": "P(refuse)", "alg1_count": "alg1 n", "attention_mass_mean": "attn",
              "refusal_direction_auroc_mean": "dir AUROC", "patching_gain_mean": "patch gain",
              "cos_matched_mean": "cos", "cos_mismatched_mean": "cos mism.", "cka_mean": "CKA"}
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
    console.print(f"safety layers: {result.safety_layers}  (rule: {result.rule}; tokens K: "
                  f"{', '.join(repr(t) for t in result.refusal_tokens.values())})")
