"""Publication figures of the layer analysis: matplotlib (PDF with TrueType fonts, PNG) and offline plotly HTML.

Figures follow Xu et al., "Cross-Modal Safety Mechanism Transfer in Large Vision-Language Models",
ICLR 2025 (arXiv 2410.12662): the semantic shift (§3), where the safety mechanism activates (§2,
Algorithm 1), the locators side by side, activation patching, and the last-token cosine.

Every figure is built once as a backend-neutral spec (:mod:`safety_probe.viz.render`, grouped bars
:mod:`safety_probe.viz.bars`) and rendered by either backend, so the PDF/PNG and the HTML always show the same
data. :func:`result_figure` builds one figure of a :class:`~safety_probe.analysis.results.LayerAnalysis` with
everything the result knows filled in (histogram, support, n); ``result.plot_locate()`` and the other ``plot_*``
methods call it. :func:`draw_all` writes every figure a result supports, also of a result loaded from the saved
per-layer table (``layers.csv``) and ``layers.json``, so no model is needed. The evaluation's and the comparison's
figures are in :mod:`safety_probe.viz.evaluation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure

from safety_probe.analysis.results import LayerAnalysis
from safety_probe.analysis.scores import LayerScores
from safety_probe.viz.render import COLORS, Backend, Drawn, Heatmap, Panel, Series, Spec, render, save_drawn

#: Locator rows of the side-by-side figure: (column in layers.csv, label). Every row is drawn on one absolute scale
#: (a probability, its change, or a share of pairs or its difference): "refusal_prob" as its rise from the block before
#: (block 0: from 0), because the probability itself keeps growing after the decision; the band's test as its firing
#: share on refused text runs and the contrast of refused and answered runs; the Algorithm-1 layer as the share of pairs
#: whose layer it is; the refusal direction's AUROC as 2·AUROC − 1, so that 0 is chance there too.
LOCATORS: tuple[tuple[str, str], ...] = (
    ("refusal_prob", "ΔP(refusal)"),
    ("fires_refused", "chosen test fires"),
    ("contrast", "refused − answered"),
    ("alg1_fire_share", "K rises most"),
    ("alg1_hist", "Alg. 1 layer"),
    ("attention_mass", "attn. on caption"),
    ("refusal_direction_auroc", "refusal dir. 2·AUROC−1"),
    ("patching_gain", "patching gain"),
    ("tail_patching_gain", "tail patching gain"),
)
LOCATOR_UNIT = "probability or share"
LOCATOR_NOTE = "colour, one scale for every row: probability,\nits change or share of pairs (AUROC: 2·AUROC − 1)"


def plot_shift(
    scores: Mapping[str, LayerScores], safety_layers: Sequence[int] = (), backend: Backend = "matplotlib",
    n_pairs: int | None = None,
) -> Figure | go.Figure:
    """Semantic shift: matched cosine vs mismatched baseline (dashed) and centred cosine; their paired gap; linear CKA
    against its permutation null (dashed), and debiased CKA against its own null in a panel of its own."""
    _require(scores, ["cos_matched"], "plot_shift")
    cos = [_series(scores["cos_matched"], "matched", COLORS["blue"])]
    if "cos_mismatched" in scores:
        cos.append(_series(scores["cos_mismatched"], "mismatched", COLORS["grey"], dashed=True))
    if "cos_centred" in scores:
        cos.append(_series(scores["cos_centred"], "centred", COLORS["orange"]))
    panels = [Panel("cosine(image, caption)", cos, height=1.6)]
    if "cos_gap" in scores:
        panels.append(Panel("matched − mismatched", [_series(scores["cos_gap"], "paired gap", COLORS["blue"])]))
    for name, ylabel, label, color in (("cka", "linear CKA", "CKA across pairs", COLORS["green"]),
                                       ("cka_debiased", "debiased CKA", "debiased CKA", COLORS["orange"])):
        if name in scores:  # each statistic against its own null, never another's
            series = [_series(scores[name], label, color)]
            if f"{name}_null" in scores:
                series.append(_series(scores[f"{name}_null"], "its permutation null", COLORS["grey"], dashed=True))
            panels.append(Panel(ylabel, series))
    return render(Spec("Semantic shift per layer", panels, list(safety_layers), 1.6 + 1.0 * len(panels),
                       _n_note(n_pairs)), backend)


def plot_locate(
    refusal_prob: LayerScores,
    histogram: Mapping[str, object] | None = None,
    safety_layers: Sequence[int] = (),
    backend: Backend = "matplotlib",
    fire_share: LayerScores | None = None,
    fire_share_benign: LayerScores | None = None,
    support: Mapping[str, int] | None = None,
    test: str = "K rises most",
) -> Figure | go.Figure:
    """Where refusal appears: logit-lens P(refusal) per layer; the share of refused (and, dashed, benign) text
    runs where the per-pair ``test`` fires (the band's evidence); the Algorithm-1 histogram of pairs.

    ``support`` (``layers.json``'s: ``harmful``, ``refusing``, ``benign`` counts) puts each panel's n in its legend
    and the harmful n under the layer axis. ``result.plot_locate()`` fills every argument in from a result: the test
    the band was drawn with, or Algorithm 1's where the result names none.
    """
    n = dict(support or {})

    def with_n(label: str, key: str) -> str:
        return f"{label} (n={n[key]})" if key in n else label

    panels = [Panel("P(refusal tokens)",
                    [_series(refusal_prob, with_n("harmful text runs", "harmful"), COLORS["red"])],
                    height=1.4)]
    shares = []
    if fire_share is not None:
        shares.append(_series(fire_share, with_n("refused", "refusing"), COLORS["blue"]))
    if fire_share_benign is not None:
        shares.append(_series(fire_share_benign, with_n("benign", "benign"), COLORS["grey"],
                              dashed=True))
    if shares:
        panels.append(Panel(f"share: {test}", shares, height=1.2))
    if histogram is not None:
        counts = np.asarray(histogram["counts"], dtype=float)
        n_none = int(histogram.get("n_none", 0))
        label = f"Algorithm 1 layer ({int(counts.sum())} pairs, {n_none} none)"
        bars = Series(label, list(range(len(counts))), counts, COLORS["blue"], bars=True)
        panels.append(Panel("pairs", [bars]))
    return render(Spec("Refusal emergence (logit lens)", panels, list(safety_layers), 2.2 + 1.2 * len(panels),
                       _n_note(n.get("harmful"))), backend)


def plot_locators(
    scores: Mapping[str, LayerScores],
    histogram: Mapping[str, object] | None = None,
    safety_layers: Sequence[int] = (),
    backend: Backend = "matplotlib",
    n_pairs: int | None = None,
) -> Figure | go.Figure:
    """Locators side by side on one absolute colour scale from −1 to 1 (:data:`LOCATORS`; :data:`LOCATOR_UNIT`)."""
    rows, values = [], []
    layers = sorted({v for s in scores.values() for v in s.layers})
    if histogram is not None:
        layers = sorted(set(layers) | set(range(len(histogram["counts"]))))
    for key, label in LOCATORS:
        if key == "alg1_hist":
            if histogram is None:
                continue
            counts = np.asarray(histogram["counts"], dtype=float)
            row = dict(enumerate(counts / max(counts.sum() + float(histogram.get("n_none", 0)), 1.0)))
        elif key in scores:
            s = scores[key]
            y = {"refusal_prob": lambda m: np.diff(m, prepend=0.0),
                 "refusal_direction_auroc": lambda m: 2 * m - 1}.get(key, lambda m: m)(np.asarray(s.mean, float))
            row = dict(zip(s.layers, y))
        else:
            continue
        rows.append(label)
        values.append([row.get(layer, np.nan) for layer in layers])
    if not rows:
        raise ValueError(f"plot_locators needs at least one of {[k for k, _ in LOCATORS]}")
    panel = Panel("", heatmap=Heatmap(rows, layers, np.asarray(values, dtype=float), LOCATOR_UNIT))
    note = "\n".join(filter(None, (_n_note(n_pairs), LOCATOR_NOTE)))
    return render(Spec("Safety-layer locators", [panel], list(safety_layers), 1.1 + 0.28 * len(rows), note), backend)


def plot_patching(
    scores: Mapping[str, LayerScores], safety_layers: Sequence[int] = (), backend: Backend = "matplotlib",
    n_pairs: int | None = None,
) -> Figure | go.Figure:
    """Activation patching per layer: the gain in the image run's P(refusal) when its image tokens get the caption's
    pooled state, and when its prompt tail (instruction and template suffix) gets the text run's states."""
    series = [_series(scores[k], label, color) for k, label, color in (
        ("patching_gain", "image tokens", COLORS["blue"]),
        ("tail_patching_gain", "prompt tail", COLORS["red"])) if k in scores]
    if not series:
        raise ValueError("plot_patching needs patching_gain or tail_patching_gain")
    panel = Panel("gain in P(refusal)", series)
    return render(Spec("Patching text run → image run", [panel], list(safety_layers), 2.4, _n_note(n_pairs)), backend)


def plot_last_token(
    cos_last: LayerScores, safety_layers: Sequence[int] = (), backend: Backend = "matplotlib",
    n_pairs: int | None = None,
) -> Figure | go.Figure:
    """Cosine between the last prompt position of the image run and of the text run, per layer."""
    panel = Panel("cosine (last token)", [_series(cos_last, "image run vs text run", COLORS["purple"])])
    return render(Spec("Last-token cosine per layer", [panel], list(safety_layers), 2.2, _n_note(n_pairs)), backend)


def _shift(result: LayerAnalysis, backend: Backend) -> Figure | go.Figure:
    return plot_shift(result.scores, result.safety_layers, backend, n_pairs=result.support.get("harmful"))


def _locate(result: LayerAnalysis, backend: Backend) -> Figure | go.Figure:
    scores, test = result.scores, result.settings.get("test")
    fires = ("fires_refused", "fires_benign", f"{test} test fires") if test and "fires_refused" in scores else \
        ("alg1_fire_share", "alg1_fire_share_benign", "K rises most")
    return plot_locate(scores["refusal_prob"], result.locators.get("histogram"), result.safety_layers, backend,
                       fire_share=scores.get(fires[0]), fire_share_benign=scores.get(fires[1]), support=result.support,
                       test=fires[2])


def _locators(result: LayerAnalysis, backend: Backend) -> Figure | go.Figure:
    return plot_locators(result.scores, result.locators.get("histogram"), result.safety_layers, backend,
                         n_pairs=result.support.get("harmful"))


def _patching(result: LayerAnalysis, backend: Backend) -> Figure | go.Figure:
    return plot_patching(result.scores, result.safety_layers, backend, n_pairs=result.settings.get("patched_pairs"))


def _last_token(result: LayerAnalysis, backend: Backend) -> Figure | go.Figure:
    return plot_last_token(result.scores["cos_last"], result.safety_layers, backend,
                           n_pairs=result.support.get("harmful"))


#: Every figure of a result: file stem -> (the scores it needs, any one of; its builder).
FIGURES: dict[str, tuple[tuple[str, ...], Callable[[LayerAnalysis, Backend], Figure | go.Figure]]] = {
    "shift": (("cos_matched",), _shift),
    "locate": (("refusal_prob",), _locate),
    "locators": (tuple(k for k, _ in LOCATORS), _locators),
    "patching": (("patching_gain", "tail_patching_gain"), _patching),
    "last_token": (("cos_last",), _last_token),
}


def _supports(result: LayerAnalysis, stem: str) -> bool:
    needs = FIGURES[stem][0]
    return any(k in result.scores for k in needs) or (stem == "locators" and "histogram" in result.locators)


def result_figure(result: LayerAnalysis, stem: str, backend: Backend = "matplotlib") -> Figure | go.Figure:
    """Figure ``stem`` (a key of :data:`FIGURES`) of ``result``, every argument filled in from it; a result without
    the scores it needs is a ValueError naming them.

        >>> result_figure(result, "locate")            # = result.plot_locate(): three panels when measured
    """
    if stem not in FIGURES:
        raise ValueError(f"no figure {stem!r}: choose one of {', '.join(FIGURES)}")
    if not _supports(result, stem):
        raise ValueError(f"this result has none of the scores the {stem} figure draws ({', '.join(FIGURES[stem][0])})")
    return FIGURES[stem][1](result, backend)


def layer_figures(result: LayerAnalysis) -> list[Drawn]:
    """Every figure ``result`` supports, built in both backends (see :func:`draw_all`)."""
    return [(stem, result_figure(result, stem), result_figure(result, stem, "plotly"))
            for stem in FIGURES if _supports(result, stem)]


def draw_all(result: LayerAnalysis, out_dir: str | Path) -> list[Path]:
    """Draw every figure of a probe-layers result into ``out_dir``, each as PDF, PNG and HTML (the HTML sharing one
    ``plotly.min.js``); returns the paths.

        >>> draw_all(analyze(states, measurements), "runs/llava/figures")
        >>> draw_all(LayerAnalysis.load("runs/llava"), "runs/llava/figures")     # from the saved files
    """
    return save_drawn(layer_figures(result), out_dir)


def _n_note(n_pairs: int | None) -> str:
    return "" if n_pairs is None else f"n = {n_pairs} harmful pairs"


def _series(s: LayerScores, label: str, color: str, dashed: bool = False) -> Series:
    return Series(
        label, list(s.layers), np.asarray(s.mean), color, np.asarray(s.lower), np.asarray(s.upper), dashed
    )


def _require(scores: Mapping[str, LayerScores], keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in scores]
    if missing:
        raise KeyError(f"{where} needs scores {missing}")
