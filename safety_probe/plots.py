"""Publication figures of the layer analysis: matplotlib (PDF with TrueType fonts, PNG) and offline plotly HTML.

Figures follow Xu et al., "Cross-Modal Safety Mechanism Transfer in Large Vision-Language Models",
ICLR 2025 (arXiv 2410.12662): the semantic shift (§3), where the safety mechanism activates (§2,
Algorithm 1), the locators side by side, activation patching, and the last-token cosine.

Every figure is built once as a backend-neutral spec (:mod:`safety_probe.render`, grouped bars
:mod:`safety_probe.render_bars`) and rendered by either backend, so the PDF/PNG and the HTML always show the same
data. :func:`draw_all` redraws everything from the saved per-layer table (``layers.csv``, columns ``layer`` and
``{score}_mean`` / ``{score}_lower`` / ``{score}_upper``) and the small ``layers.json`` dict (``safety_layers``,
``histogram``), so no model is needed. The evaluation's and the comparison's figures are in
:mod:`safety_probe.plots_eval`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure

from safety_probe.errors import InputError
from safety_probe.io import read_json, read_text
from safety_probe.render import (
    COLORS,
    Backend,
    Drawn,
    Heatmap,
    Panel,
    Series,
    Spec,
    render,
    save_drawn,
)
from safety_probe.scores import LayerScores

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


def load_layer_results(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read and check ``layers.csv`` and ``layers.json`` of a run directory (the inputs of :func:`draw_all`); a
    missing, empty, truncated or malformed file is an InputError naming it and the row or key at fault."""
    run_dir = Path(run_dir)
    json_path, csv_path = run_dir / "layers.json", run_dir / "layers.csv"
    meta = read_json(json_path, "layers.json (the safety layers beside layers.csv)")
    _check_layers_meta(meta, json_path)
    frame = _read_layers_csv(csv_path)
    if isinstance(meta.get("n_layers"), int) and len(frame) != meta["n_layers"]:
        raise InputError(f"{csv_path}: {len(frame)} layer rows, but {json_path.name} says n_layers {meta['n_layers']} "
                         "(truncated?)")
    return frame, meta


def _check_layers_meta(meta: object, path: Path) -> None:
    def fail(what: str) -> None:
        raise InputError(f"{path}: {what}")

    def ints(value: object) -> bool:
        return isinstance(value, list) and all(type(v) is int for v in value)

    if not isinstance(meta, dict):
        fail("expected a JSON object")
    if not ints(meta.get("safety_layers")):
        fail(f"'safety_layers' must be a list of 0-based block indices, got {meta.get('safety_layers')!r}")
    n = meta.get("n_layers")
    if n is not None and (type(n) is not int or n < 1):
        fail(f"'n_layers' must be a positive integer, got {n!r}")
    if n is not None and any(not 0 <= v < n for v in meta["safety_layers"]):
        fail(f"'safety_layers' {meta['safety_layers']} lie outside 0..{n - 1}")
    histogram = meta.get("histogram")
    if histogram is not None and not (isinstance(histogram, dict) and ints(histogram.get("counts"))
                                      and type(histogram.get("n_none")) is int):
        fail("'histogram' must be {\"counts\": [integers per layer], \"n_none\": integer}")
    support = meta.get("support")
    if support is not None and not (isinstance(support, dict) and type(support.get("harmful", 0)) is int):
        fail("'support' must be an object with integer counts ('harmful', 'benign', 'refusing')")


def _read_layers_csv(path: Path) -> pd.DataFrame:
    text = read_text(path, "layers table")
    if not text.strip():
        raise InputError(f"{path}: empty (expected a header and one row per layer)")
    if not text.endswith("\n"):
        raise InputError(f"{path}: truncated (its last row is cut short)")
    if "\x00" in text:
        raise InputError(f"{path}: holds NUL bytes: not a CSV table (a binary file?)")
    try:
        rows = [row for row in csv.reader(StringIO(text)) if row]
    except csv.Error as e:
        raise InputError(f"{path}: not a CSV table ({e})") from None
    header = rows[0]
    if "layer" not in header:
        raise InputError(f"{path}: no 'layer' column in its header (is it a probe-layers layers.csv?)")
    for i, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise InputError(f"{path}: row {i} has {len(row)} fields, the header {len(header)} (truncated?)")
    frame = pd.read_csv(StringIO(text))
    if frame["layer"].tolist() != list(range(len(frame))):
        raise InputError(f"{path}: column 'layer' must count 0, 1, 2, ... (one row per block)")
    for column in [c for c in frame.columns if c.endswith(("_mean", "_lower", "_upper"))]:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & numbers.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0]) + 1
            raise InputError(f"{path}: row {row}, column {column!r}: {frame[column].iloc[row - 1]!r} is not a number")
        frame[column] = numbers
    return frame


def layer_figures(frame: pd.DataFrame, meta: Mapping[str, object]) -> list[Drawn]:
    """Every figure the saved results support, built (see :func:`draw_all`)."""
    columns = set(frame.columns)
    names = {c[: -len("_mean")] for c in columns if c.endswith("_mean")}
    names = {n for n in names if {f"{n}_lower", f"{n}_upper"} <= columns}  # skip other *_mean columns
    scores = {n: LayerScores.from_frame(frame, n) for n in sorted(names)}
    safety = [int(v) for v in meta.get("safety_layers", []) or []]
    histogram = meta.get("histogram")
    n_harmful = (meta.get("support") or {}).get("harmful")
    figures: list[tuple[str, Callable[..., Figure | go.Figure]]] = []
    if "cos_matched" in scores:
        figures.append(("shift", lambda **kw: plot_shift(scores, n_pairs=n_harmful, **kw)))
    if "refusal_prob" in scores:
        figures.append(("locate", lambda **kw: plot_locate(
            scores["refusal_prob"], histogram, fire_share=scores.get("alg1_fire_share"),
            fire_share_benign=scores.get("alg1_fire_share_benign"), support=meta.get("support"), **kw)))
    if histogram is not None or any(k in scores for k, _ in LOCATORS):
        figures.append(("locators", lambda **kw: plot_locators(scores, histogram, n_pairs=n_harmful, **kw)))
    if "patching_gain" in scores or "tail_patching_gain" in scores:
        n_patched = (meta.get("settings") or {}).get("patched_pairs")
        figures.append(("patching", lambda **kw: plot_patching(scores, n_pairs=n_patched, **kw)))
    if "cos_last" in scores:
        figures.append(("last_token", lambda **kw: plot_last_token(scores["cos_last"], n_pairs=n_harmful, **kw)))
    return [(stem, draw(safety_layers=safety), draw(safety_layers=safety, backend="plotly")) for stem, draw in figures]


def draw_all(frame: pd.DataFrame, meta: Mapping[str, object], out_dir: str | Path) -> list[Path]:
    """Draw every figure the saved results support, each as PDF, PNG and HTML; returns the written paths.

    ``frame``: per-layer table (``layer`` plus ``{score}_mean/_lower/_upper`` for scores among
    cos_matched, cos_mismatched, cos_centred, cka, cos_last, refusal_prob, attention_mass,
    refusal_direction_auroc, patching_gain, tail_patching_gain). ``meta``: ``safety_layers`` (list of blocks) and
    ``histogram`` (``{"counts": [L], "n_none": int}``), both optional.
    """
    return save_drawn(layer_figures(frame, meta), out_dir)


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
