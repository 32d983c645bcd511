"""The analysis of probe-layers, a pure function of the recorded states and the measurements: locate the safety
layers and measure the shift, without the model.

    >>> states, measurements = measure(vlm, pairs)
    >>> result = analyze(states, measurements)                          # LayerAnalysis
    >>> analyze(states, measurements, LocateOptions(test="alg1"))       # another test, in seconds

The model's answer to every text run says which runs it refuses; the first tokens of its harmful refusals are the
refusal token set K (a token that also opens answers counts only where the lens after it leads to a refusal). A
per-pair test (``--test``; default: the block where P(K) rises the most) says where each run's refusal forms; the
safety layers are the blocks where refused runs fire more often than answered runs by a margin (``--rule``).
Every test is reported beside the chosen one, with how well it separates refused from answered runs; Algorithm 1,
verbatim and with its candidate floor, and the released code's rule keep their per-pair records. The refusal
direction contrasts harmful and benign text runs; the two patchings give the image run's P(refusal) after its image
tokens got the caption's pooled state, or its prompt tail the text run's states, at one block at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from safety_probe.analysis import evidence as ev
from safety_probe.analysis.locate import (
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
from safety_probe.analysis.results import LayerAnalysis
from safety_probe.analysis.scores import LayerScores, share_with_interval
from safety_probe.analysis.shift import semantic_shift
from safety_probe.core.errors import InputError
from safety_probe.data.prompts import TEXT_SPANS
from safety_probe.models.layers import parse_layers
from safety_probe.probe.config import TESTS, LocateOptions
from safety_probe.probe.measure import Measurements
from safety_probe.probe.record import PairStates
from safety_probe.probe.refusal import RefusalTokens, choose_refusal_tokens, refusal_logprob


def analyze(states: PairStates, measurements: Measurements | None = None,
            cfg: LocateOptions | None = None) -> LayerAnalysis:
    """Locate the safety layers and measure the semantic shift (see the module docstring).

    ``states`` and ``measurements`` come from one :func:`~safety_probe.probe.measure.measure` pass. Without
    measurements (states from :func:`~safety_probe.probe.record.record` alone, or of a subset of blocks) only the
    shift is measured. The band is drawn only from ``cfg.min_support`` or more refused (and answered) runs.
    """
    cfg = cfg or LocateOptions()
    cfg.validate()
    n_pairs = states.image_mean.shape[0]
    labels = measurements.labels if measurements is not None else [None] * n_pairs
    if len(labels) != n_pairs:
        raise InputError(f"the states hold {n_pairs} pairs, the measurements {len(labels)}")
    labelled = any(labels)
    harmful = [i for i, label in enumerate(labels) if label == "harmful"] if labelled else list(range(n_pairs))
    benign = [i for i, label in enumerate(labels) if label == "benign"]
    notes = [] if labelled else ["no labels in the pairs file: every pair is treated as harmful"]
    if not harmful:
        raise InputError("the pairs file has no harmful pairs: the safety layers are read on harmful text runs")
    n_layers = measurements.lens.rise_argmax.shape[1] if measurements is not None else states.layers[-1] + 1
    prompts = (measurements.settings.get("prompts") if measurements is not None else None) or {}
    settings = {**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k != "safety_layers"},
                "text_template": prompts.get("text_template"), "text_run": prompts.get("text_run"),
                "text_span": TEXT_SPANS.get(prompts.get("text_run"))}
    override = parse_layers(cfg.safety_layers, n_layers) if cfg.safety_layers else None
    tensors = {k: v[harmful] for k, v in states.tensors().items()}
    shift = semantic_shift(tensors, layers=states.layers)
    scores = dict(shift.scores)
    warnings = [f"{name} skipped: {reason}" for name, reason in shift.skipped.items()]
    support = {"harmful": len(harmful), "benign": len(benign), "refusing": 0, "min_support": cfg.min_support}
    if measurements is None or states.layers != list(range(n_layers)):
        notes.append("a subset of layers was recorded (or nothing measured): locating needs every block and the "
                     "measurements, only the shift was measured")
        k = measurements.fallback if measurements is not None else RefusalTokens({}, "none")
        chosen = choose_safety_layers(n_layers, override=override) if override else []
        return LayerAnalysis(n_layers, chosen, "override" if override else "none", scores, k, harmful, benign,
                             {**support, "band_drawn": False}, settings=settings, notes=notes, warnings=warnings)

    m = measurements
    order = {pair: k for k, pair in enumerate(m.responses.index)}
    refused = np.asarray([m.responses.refused[order[i]] for i in range(n_pairs)])
    is_harmful = np.zeros(n_pairs, dtype=bool)
    is_harmful[harmful] = True
    groups = {"refused": refused, "answered_harmful": is_harmful & ~refused, "benign": ~is_harmful & ~refused,
              "answered": ~refused}
    k_set, warning = choose_refusal_tokens(m.responses, [bool(is_harmful[i]) for i in m.responses.index], m.fallback,
                                           m.pool, m.pool_texts, cfg.refusal_tokens)
    warnings += [warning] if warning else []
    if not k_set.ids:
        raise InputError("no refusal token found in the vocabulary (set --refusal-phrase)")
    ids = list(k_set.ids)
    evidence, weights = _evidence(states, m, refused, ids, cfg)
    refusing = [k for k, i in enumerate(harmful) if refused[i]]
    support.update(refusing=len(refusing), refused=int(refused.sum()), answered=int((~refused).sum()))

    lens = lens_stats(m.lens.subset(harmful), ids, candidates=cfg.candidates)
    benign_lens = lens_stats(m.lens.subset(benign), ids, candidates=cfg.candidates) if benign else None
    refused_lens = lens_stats(m.lens.subset(np.flatnonzero(refused)), ids, candidates=cfg.candidates) \
        if cfg.rule == "code" and refused.any() else None
    bands = {name: _band(e, groups, refused_lens, cfg) for name, e in evidence.items()}
    chosen_band, contrast = bands[cfg.test]
    scores.update(_located_scores(evidence[cfg.test], groups, contrast))
    mass = np.exp(ev.k_logmass(m.lens.pool_logprob.numpy(), weights))
    scores["refusal_prob"] = refusal_prob_scores(mass[harmful])
    if refusing:
        scores["alg1_fire_share"] = fire_share_scores(lens.fires[refusing], what="refused harmful text runs")
    if benign_lens is not None:
        scores["alg1_fire_share_benign"] = fire_share_scores(benign_lens.fires, "alg1_fire_share_benign",
                                                             "benign text runs")
    scores["attention_mass"] = attention_mass_scores(m.attention[harmful])
    scores["cos_tail"] = LayerScores.from_pairs(
        "cos_tail", m.tail_cos[harmful], description="mean cosine of the image run's and the text run's states over "
                                                      "their shared prompt tail (instruction and template suffix)")
    if len(benign) >= 2 and len(harmful) >= 2:
        scores["refusal_direction_auroc"], _ = refusal_direction(tensors["caption_last"], states.caption_last[benign])
    else:
        warnings.append("refusal direction skipped: it needs at least 2 harmful and 2 benign pairs")
    if m.patched:
        settings["patched_pairs"] = len(m.patched)
        scores.update(_patching_scores(m, ids, notes))

    chosen, used_rule = [], "override" if override else cfg.rule
    if override:
        chosen = choose_safety_layers(n_layers, override=override)
    elif int(refused.sum()) < cfg.min_support or (cfg.rule == "contrast" and int((~refused).sum()) < cfg.min_support):
        warnings.append(f"no safety layers drawn: {int(refused.sum())} refused and {int((~refused).sum())} answered text "
                        f"runs, fewer than the {cfg.min_support} the band needs (--min-support); set them with "
                        "--safety-layers")
    elif not chosen_band:
        warnings.append(f"no safety layers located: no block passes the {cfg.rule} rule for the {cfg.test} test; set "
                        "them with --safety-layers")
    else:
        chosen = chosen_band
    support["band_drawn"] = bool(chosen) and not override
    counts = {"alg1_count": layer_histogram(LensStats.as_layers(lens.alg1), n_layers)["counts"]}
    if benign_lens is not None:
        counts["alg1_benign_count"] = layer_histogram(LensStats.as_layers(benign_lens.alg1), n_layers)["counts"]
    locators = {
        "text_run_refusal": {"harmful": share_with_interval(int(refused[harmful].sum()), len(harmful)),
                             "benign": share_with_interval(int(refused[benign].sum()), len(benign))},
        "ambiguous_tokens": {str(t): m.pool_texts.get(t, str(t)) for t in m.cont_ids},
        "separation": {name: ev.separation(e, groups, bands[name][0]) for name, e in evidence.items()},
        **_locator_records(lens, benign_lens, refusing, n_layers, cfg)}
    return LayerAnalysis(n_layers, chosen, used_rule, scores, k_set, harmful, benign, support, locators, counts,
                         settings, notes, warnings)


def _evidence(states: PairStates, m: Measurements, refused: np.ndarray, ids: list[int],
              cfg: LocateOptions) -> tuple[dict[str, ev.Evidence], np.ndarray]:
    """Every per-pair test of :data:`~safety_probe.probe.config.TESTS` on every text run, and the K weights
    ``[n, L, P]`` they read (the paper's test reads the paper's K: every first token of a refusal, everywhere)."""
    trace = m.lens
    pool = trace.pool_ids.numpy()
    first = np.asarray([row[0] if row else -1 for row in m.responses.token_ids])
    second = np.asarray([row[1] if len(row) > 1 else -1 for row in m.responses.token_ids])
    n_layers = trace.rise_argmax.shape[1]
    paper_k = ev.k_weights(pool, n_layers, ids, first, second, refused)
    continued = cfg.ambiguous == "continue" and len(m.cont_ids) > 0
    weights = ev.k_weights(pool, n_layers, ids, first, second, refused, np.asarray(m.cont_ids),
                           m.cont_logprob.numpy()) if continued else paper_k
    top_ids, top, before = trace.top_ids.numpy(), trace.top_logprob.numpy(), trace.top_prev_logprob.numpy()
    evidence = {
        "peak": ev.peak_rise(trace.pool_logprob.numpy(), weights, refused, cfg.min_mass, cfg.min_rise,
                             cfg.answered_quantile),
        "alg1": ev.log_rise(top_ids, top, before, pool, weights, cfg.candidates or top_ids.shape[-1]),
        "paper": ev.verbatim(trace.rise_argmax.numpy(), pool, paper_k),
        "gain": ev.gain(trace.gain_top_ids.numpy(), pool, weights),
        "entry": ev.rank_entry(top_ids, pool, weights),
        "direction": ev.direction(states.caption_last.numpy(), refused),
    }
    return {name: evidence[name] for name in TESTS}, weights


def _band(e: ev.Evidence, groups: dict[str, np.ndarray], refused_lens: LensStats | None,
          cfg: LocateOptions) -> tuple[list[int], list[list[float]]]:
    """The band of one test under ``cfg.rule``, and the per-block contrast rows (refused − answered share, with its
    Newcombe interval) it is read from."""
    refused, answered = groups["refused"], groups["answered"]
    band, contrast = ev.contrast_band(e.fires, refused, answered, cfg.margin, cfg.min_support)
    if cfg.rule == "share":
        band = ev.share_band(e.fires[refused], cfg.band_share) if refused.sum() >= cfg.min_support else []
    elif cfg.rule == "code":
        try:
            band = choose_safety_layers(e.fires.shape[1], None, LensStats.as_layers(refused_lens.code_start),
                                        LensStats.as_layers(refused_lens.code_end), rule="code")
        except (ValueError, AttributeError):
            band = []
    return band, contrast


def _located_scores(e: ev.Evidence, groups: dict[str, np.ndarray], contrast: list[list[float]]) -> dict[str, LayerScores]:
    """Per block, the share of refused, answered harmful and benign runs the chosen test fires at (bootstrap bands),
    and the contrast the band is drawn from (refused − answered, Newcombe 95% interval)."""
    out = {f"fires_{name}": LayerScores.from_pairs(f"fires_{name}", e.fires[mask].astype(float),
                                                   description=f"share of {name.replace('_', ' ')} text runs where the "
                                                               "chosen test fires")
           for name, mask in groups.items() if name != "answered" and mask.any()}
    if contrast:
        rows = np.asarray(contrast)
        out["contrast"] = LayerScores("contrast", list(range(len(rows))), rows[:, 0], rows[:, 1], rows[:, 2], None,
                                      "refused − answered firing share of the chosen test (Newcombe 95% interval)")
    return out


def _patching_scores(m: Measurements, ids: list[int], notes: list[str]) -> dict[str, LayerScores]:
    """The two patchings' gains in the image run's P(refusal) over the unpatched run, and P(refusal) after caption
    patching (each ``[L]``), with a note of the unpatched image-run and text-run P(refusal)."""
    columns = m.lens.pool_columns(ids)

    def prob(logprob: torch.Tensor) -> torch.Tensor:
        return refusal_logprob(logprob, columns).exp()

    base, text = prob(m.patch["image"]), prob(m.patch["text"])
    caption, tail = prob(m.patch["caption"]), prob(m.patch["tail"])
    n = len(m.patched)
    mode = m.settings.get("patch_mode", "shift")
    notes.append(f"activation patching ({mode}) on the first {n} harmful pairs; "
                 f"unpatched image-run P(refusal) = {float(base.mean()):.4f}")
    notes.append(f"tail patching (the text run's instruction and template suffix into the image run's) on the same "
                 f"{n} pairs; text-run P(refusal) = {float(text.mean()):.4f}")
    return {"patching_gain": patching_gain_scores(caption, base),
            "patched_refusal_prob": LayerScores.from_pairs(
                "patched_refusal_prob", caption, description="image-run P(refusal) after patching at the layer"),
            "tail_patching_gain": patching_gain_scores(tail, base, name="tail_patching_gain",
                                                       what="patching the text run's prompt tail")}


def _locator_records(lens: LensStats, benign_lens: LensStats | None, refusing: list[int], n_layers: int,
                     cfg: LocateOptions) -> dict:
    """The per-pair records of Algorithm 1 (floored and verbatim, benign false positives), its decision's start and
    end on the refusing pairs, and the released code's rule."""
    per_pair = LensStats.as_layers(lens.alg1)
    found = sum(v is not None for v in per_pair)
    paper = LensStats.as_layers(lens.alg1_paper)
    algorithm1 = {
        "per_pair": per_pair,
        "found": found,
        "share_found": round(found / max(len(per_pair), 1), 4),
        "histogram": layer_histogram(per_pair, n_layers),
        "start_median": lower_median(per_pair),
        "candidates": cfg.candidates,
        "paper_per_pair": paper,
        "paper_histogram": layer_histogram(paper, n_layers),
    }
    if benign_lens is not None:
        benign = LensStats.as_layers(benign_lens.alg1)
        algorithm1["benign_per_pair"] = benign
        algorithm1["benign_false_positive"] = share_with_interval(sum(v is not None for v in benign), len(benign))
    subset = lens.subset(refusing) if refusing else None
    decision = {
        "band_share": cfg.band_share,
        "support": len(refusing),
        "start_per_pair": LensStats.as_layers(subset.alg1) if subset else [],
        "end_per_pair": LensStats.as_layers(subset.decision_end) if subset else [],
    }
    for key in ("start", "end"):
        decision[f"{key}_histogram"] = layer_histogram(decision[f"{key}_per_pair"], n_layers)
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
