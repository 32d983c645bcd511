"""Publication figures of the layer analysis: matplotlib (PDF with TrueType fonts, PNG) and offline plotly HTML.

Figures follow Xu et al., "Cross-Modal Safety Mechanism Transfer in Large Vision-Language Models",
ICLR 2025 (arXiv 2410.12662): the semantic shift (§3), where the safety mechanism activates (§2,
Algorithm 1), the locators side by side, activation patching, and the last-token cosine.

Every figure is built once as a backend-neutral spec (:mod:`safety_probe.viz.render`, grouped bars
:mod:`safety_probe.viz.bars`) and rendered by either backend, so the PDF/PNG and the HTML always show the same
data. :func:`draw_all` redraws everything from the saved per-layer table (``layers.csv``, columns ``layer`` and
``{score}_mean`` / ``{score}_lower`` / ``{score}_upper``) and the small ``layers.json`` dict (``safety_layers``,
``histogram``), so no model is needed. The evaluation's and the comparison's figures are in
:mod:`safety_probe.viz.evaluation`.
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

#: Locator rows of the side-by-side figure: (column in layers.csv, label). "refusal_prob" is shown as its
#: rise from the previous layer, because the probability itself keeps growing after the decision.
LOCATORS: tuple[tuple[str, str], ...] = (
    ("refusal_prob", "ΔP(refusal)"),
    ("alg1_fire_share", "K rises most"),
    ("alg1_hist", "Alg. 1 layer"),
    ("attention_mass", "attn. on caption"),
    ("refusal_direction_auroc", "refusal dir. AUROC"),
    ("patching_gain", "patching gain"),
    ("tail_patching_gain", "tail patching gain"),
)


def plot_shift(
    scores: Mapping[str, LayerScores], safety_layers: Sequence[int] = (), backend: Backend = "matplotlib",
    n_pairs: int | None = None,
) -> Figure | go.Figure:
    """Semantic shift: matched cosine vs mismatched baseline (dashed) and centred cosine; their paired gap; raw and
    debiased CKA above the permutation null (dashed)."""
    _require(scores, ["cos_matched"], "plot_shift")
    cos = [_series(scores["cos_matched"], "matched", COLORS["blue"])]
    if "cos_mismatched" in scores:
        cos.append(_series(scores["cos_mismatched"], "mismatched", COLORS["grey"], dashed=True))
    if "cos_centred" in scores:
        cos.append(_series(scores["cos_centred"], "centred", COLORS["orange"]))
    panels = [Panel("cosine(image, caption)", cos, height=1.6)]
    if "cos_gap" in scores:
        panels.append(Panel("matched − mismatched", [_series(scores["cos_gap"], "paired gap", COLORS["blue"])]))
    cka = [_series(scores[k], label, color, dashed=k == "cka_null") for k, label, color in (
        ("cka", "CKA across pairs", COLORS["green"]), ("cka_debiased", "debiased CKA", COLORS["orange"]),
        ("cka_null", "permutation null", COLORS["grey"])) if k in scores]
    if cka:
        panels.append(Panel("linear CKA", cka))
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
) -> Figure | go.Figure:
    """Where refusal appears: logit-lens P(refusal) per layer; the share of refused (and, dashed, benign) text
    runs where a refusal token rises the most (the band's test); the Algorithm-1 histogram of pairs.

    ``support`` (``layers.json``'s: ``harmful``, ``refusing``, ``benign`` counts) puts each panel's n in its legend.
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
        panels.append(Panel("share: K rises most", shares, height=1.2))
    if histogram is not None:
        counts = np.asarray(histogram["counts"], dtype=float)
        n_none = int(histogram.get("n_none", 0))
        label = f"Algorithm 1 layer ({int(counts.sum())} pairs, {n_none} none)"
        bars = Series(label, list(range(len(counts))), counts, COLORS["blue"], bars=True)
        panels.append(Panel("pairs", [bars]))
    return render(Spec("Refusal emergence (logit lens)", panels, list(safety_layers), 2.2 + 1.2 * len(panels)),
                  backend)


def plot_locators(
    scores: Mapping[str, LayerScores],
    histogram: Mapping[str, object] | None = None,
    safety_layers: Sequence[int] = (),
    backend: Backend = "matplotlib",
    n_pairs: int | None = None,
) -> Figure | go.Figure:
    """Locators side by side: each row min–max normalised over layers, so rows are comparable."""
    rows, raw = [], []
    layers = sorted({v for s in scores.values() for v in s.layers})
    if histogram is not None:
        layers = sorted(set(layers) | set(range(len(histogram["counts"]))))
    for key, label in LOCATORS:
        if key == "alg1_hist":
            if histogram is None:
                continue
            counts = np.asarray(histogram["counts"], dtype=float)
            values = dict(enumerate(counts / max(counts.sum(), 1.0)))
        elif key in scores:
            s = scores[key]
            y = np.diff(s.mean, prepend=np.nan) if key == "refusal_prob" else s.mean
            values = dict(zip(s.layers, y))
        else:
            continue
        rows.append(label)
        raw.append([values.get(layer, np.nan) for layer in layers])
    if not rows:
        raise ValueError(f"plot_locators needs at least one of {[k for k, _ in LOCATORS]}")
    raw_arr = np.asarray(raw, dtype=float)
    heat = Heatmap(rows, layers, _minmax_rows(raw_arr), raw_arr)
    panel = Panel("", heatmap=heat)
    return render(
        Spec("Safety-layer locators", [panel], list(safety_layers), 0.9 + 0.28 * len(rows), _n_note(n_pairs)),
        backend
    )


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


def layer_figures(result: LayerAnalysis) -> list[Drawn]:
    """Every figure ``result`` supports, built (see :func:`draw_all`)."""
    scores, safety = result.scores, result.safety_layers
    histogram = result.locators.get("histogram")
    n_harmful = result.support.get("harmful")
    figures: list[tuple[str, Callable[..., Figure | go.Figure]]] = []
    if "cos_matched" in scores:
        figures.append(("shift", lambda **kw: plot_shift(scores, n_pairs=n_harmful, **kw)))
    if "refusal_prob" in scores:
        figures.append(("locate", lambda **kw: plot_locate(
            scores["refusal_prob"], histogram, fire_share=scores.get("alg1_fire_share"),
            fire_share_benign=scores.get("alg1_fire_share_benign"), support=result.support, **kw)))
    if histogram is not None or any(k in scores for k, _ in LOCATORS):
        figures.append(("locators", lambda **kw: plot_locators(scores, histogram, n_pairs=n_harmful, **kw)))
    if "patching_gain" in scores or "tail_patching_gain" in scores:
        n_patched = result.settings.get("patched_pairs")
        figures.append(("patching", lambda **kw: plot_patching(scores, n_pairs=n_patched, **kw)))
    if "cos_last" in scores:
        figures.append(("last_token", lambda **kw: plot_last_token(scores["cos_last"], n_pairs=n_harmful, **kw)))
    return [(stem, draw(safety_layers=safety), draw(safety_layers=safety, backend="plotly")) for stem, draw in figures]


def draw_all(result: LayerAnalysis, out_dir: str | Path) -> list[Path]:
    """Draw every figure of a probe-layers result into ``out_dir``, each as PDF, PNG and HTML; returns the paths.

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


def _minmax_rows(x: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(x, axis=1, keepdims=True), np.nanmax(x, axis=1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)  # a flat row maps to 0, not NaN
    return (x - lo) / span
