"""Publication figures of the layer analysis: matplotlib (PDF with TrueType fonts, PNG) and offline plotly HTML.

Figures follow Xu et al., "Cross-Modal Safety Mechanism Transfer in Large Vision-Language Models",
ICLR 2025 (arXiv 2410.12662): the semantic shift (§3), where the safety mechanism activates (§2,
Algorithm 1), the locators side by side, and the last-token cosine.

Every figure is built once as a backend-neutral spec and rendered by either backend, so the PDF/PNG and
the HTML always show the same data. :func:`draw_all` redraws everything from the saved per-layer table
(``layers.csv``, columns ``layer`` and ``{score}_mean`` / ``{score}_lower`` / ``{score}_upper``) and the small
``layers.json`` dict (``safety_layers``, ``histogram``), so no model is needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from plotly.subplots import make_subplots

from safety_probe.io import write_atomic
from safety_probe.scores import LayerScores

CITATION = "Xu et al., Cross-Modal Safety Mechanism Transfer in LVLMs, ICLR 2025"
COLUMN_WIDTH_IN = 3.4
PNG_DPI = 300

# Applied inside a context manager (never globally) both when drawing and when saving: the font type is
# read at save time, and 42 embeds TrueType instead of Type 3 bitmaps-as-glyphs that journals reject.
STYLE: dict[str, object] = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 2.5,
    "savefig.dpi": PNG_DPI,
}

# Okabe–Ito colours: distinguishable with colour-vision deficiencies and in greyscale print.
COLORS = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "red": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "grey": "#7F7F7F",
    "band": "#F0E442",  # Okabe–Ito yellow: the safety band stays distinct from the grey baseline
}

Backend = Literal["matplotlib", "plotly"]

#: Locator rows of the side-by-side figure: (column in layers.csv, label). "refusal_prob" is shown as its
#: rise from the previous layer, because the probability itself keeps growing after the decision.
LOCATORS: tuple[tuple[str, str], ...] = (
    ("refusal_prob", "ΔP(refusal)"),
    ("alg1_hist", "Alg. 1 layer"),
    ("attention_mass", "attn. on caption"),
    ("refusal_direction_auroc", "refusal dir. AUROC"),
    ("patching_gain", "patching gain"),
)


@dataclass
class _Series:
    label: str
    layers: list[int]
    y: np.ndarray
    color: str
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    dashed: bool = False
    bars: bool = False


@dataclass
class _Heatmap:
    rows: list[str]
    layers: list[int]
    values: np.ndarray  # [rows, layers] normalised to [0, 1]
    raw: np.ndarray  # [rows, layers] as saved, for hover


@dataclass
class _Panel:
    ylabel: str
    series: list[_Series] = field(default_factory=list)
    heatmap: _Heatmap | None = None
    height: float = 1.0  # relative panel height


@dataclass
class _Spec:
    title: str
    panels: list[_Panel]
    safety_layers: list[int]
    height_in: float


@contextmanager
def figure_style() -> Iterator[None]:
    """Temporarily apply :data:`STYLE` (matplotlib rcParams) for drawing or saving."""
    with matplotlib.rc_context(STYLE):
        yield


def plot_shift(
    scores: Mapping[str, LayerScores], safety_layers: Sequence[int] = (), backend: Backend = "matplotlib"
) -> Figure | go.Figure:
    """Semantic shift: matched cosine vs mismatched baseline (dashed) and centred cosine; CKA below."""
    _require(scores, ["cos_matched"], "plot_shift")
    cos = [_series(scores["cos_matched"], "matched", COLORS["blue"])]
    if "cos_mismatched" in scores:
        cos.append(_series(scores["cos_mismatched"], "mismatched", COLORS["grey"], dashed=True))
    if "cos_centred" in scores:
        cos.append(_series(scores["cos_centred"], "centred", COLORS["orange"]))
    panels = [_Panel("cosine(image, caption)", cos, height=1.6)]
    if "cka" in scores:
        panels.append(_Panel("linear CKA", [_series(scores["cka"], "CKA across pairs", COLORS["green"])]))
    return _render(_Spec("Semantic shift per layer", panels, list(safety_layers), 3.6), backend)


def plot_locate(
    refusal_prob: LayerScores,
    histogram: Mapping[str, object] | None = None,
    safety_layers: Sequence[int] = (),
    backend: Backend = "matplotlib",
) -> Figure | go.Figure:
    """Where refusal appears: logit-lens P(refusal) per layer, above the Algorithm-1 histogram of pairs."""
    panels = [
        _Panel(
            "P(refusal tokens)", [_series(refusal_prob, "logit lens, text run", COLORS["red"])], height=1.6
        )
    ]
    if histogram is not None:
        counts = np.asarray(histogram["counts"], dtype=float)
        n_none = int(histogram.get("n_none", 0))
        label = f"Algorithm 1 layer ({int(counts.sum())} pairs; {n_none} never)"
        bars = _Series(label, list(range(len(counts))), counts, COLORS["blue"], bars=True)
        panels.append(_Panel("pairs", [bars]))
    return _render(_Spec("Refusal emergence (logit lens)", panels, list(safety_layers), 3.4), backend)


def plot_locators(
    scores: Mapping[str, LayerScores],
    histogram: Mapping[str, object] | None = None,
    safety_layers: Sequence[int] = (),
    backend: Backend = "matplotlib",
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
    heat = _Heatmap(rows, layers, _minmax_rows(raw_arr), raw_arr)
    panel = _Panel("", heatmap=heat)
    return _render(
        _Spec("Safety-layer locators", [panel], list(safety_layers), 0.9 + 0.28 * len(rows)), backend
    )


def plot_last_token(
    cos_last: LayerScores, safety_layers: Sequence[int] = (), backend: Backend = "matplotlib"
) -> Figure | go.Figure:
    """Cosine between the last prompt position of the image run and of the text run, per layer."""
    panel = _Panel("cosine (last token)", [_series(cos_last, "image run vs text run", COLORS["purple"])])
    return _render(_Spec("Last-token cosine per layer", [panel], list(safety_layers), 2.2), backend)


METHOD_COLORS = {"before": COLORS["grey"], "tga": COLORS["blue"], "ce": COLORS["orange"],
                 "safety_ft": COLORS["green"], "filter": COLORS["purple"]}


def plot_tga_shift(compare: Mapping, backend: Backend = "matplotlib") -> Figure | go.Figure:
    """cos(image mean, caption mean) per layer before (dashed) and after each trained method of a
    ``compare.json`` (``safety-probe tga``), the safety layers J shaded."""
    series = []
    for name, row in compare["rows"].items():
        shift = row.get("shift")
        if not shift:
            continue
        layers = sorted(int(l) for l in shift["cos_matched"])
        y = np.array([shift["cos_matched"][str(l)] for l in layers])
        series.append(_Series(name, layers, y, METHOD_COLORS.get(name, COLORS["red"]), dashed=name == "before"))
    if not series:
        raise ValueError("plot_tga_shift: compare.json has no shift measurements")
    panel = _Panel("cosine(image, caption)", series)
    return _render(_Spec("Semantic shift before/after alignment", [panel], list(compare.get("safety_layers", [])),
                         2.4), backend)


def plot_tga_dsr(compare: Mapping, backend: Backend = "matplotlib") -> Figure | go.Figure:
    """Image-run DSR per toxic scene (and overall) for each row of a ``compare.json``: grouped bars."""
    rows = compare["rows"]
    scenes = sorted({s for r in rows.values() for s, m in r.get("per_scene", {}).items() if m.get("image_dsr") is not None})
    groups = [*scenes, "overall"]

    def dsr(row: Mapping, group: str) -> float:
        m = row["overall"] if group == "overall" else row.get("per_scene", {}).get(group, {})
        return float(m.get("image_dsr") or 0.0)

    names = list(rows)
    if backend == "plotly":
        fig = go.Figure([go.Bar(name=n, x=groups, y=[dsr(rows[n], g) for g in groups],
                                marker_color=METHOD_COLORS.get(n, COLORS["red"]),
                                hovertemplate="%{x}: image DSR %{y:.3f}<extra>" + n + "</extra>") for n in names])
        fig.update_layout(barmode="group", title="Image DSR per scene", yaxis_title="image DSR",
                          yaxis_range=[0, 1.05], template="simple_white")
        return fig
    with figure_style():
        fig = Figure(figsize=(2 * COLUMN_WIDTH_IN, 2.2), layout="constrained")
        ax = fig.subplots()
        width = 0.8 / len(names)
        x = np.arange(len(groups))
        for i, n in enumerate(names):
            ax.bar(x + (i - (len(names) - 1) / 2) * width, [dsr(rows[n], g) for g in groups], width,
                   label=n, color=METHOD_COLORS.get(n, COLORS["red"]))
        ax.set_xticks(x, [g.replace("_", " ") for g in groups], rotation=20, ha="right")
        ax.set_ylabel("image DSR")
        ax.set_ylim(0, 1.05)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(names), borderaxespad=0.2)
    return fig


def draw_tga(compare: Mapping, out_dir: str | Path) -> list[Path]:
    """Write ``tga_dsr`` and ``tga_shift`` as PDF, PNG and HTML into ``out_dir``; returns the paths."""
    paths: list[Path] = []
    for stem, fn in (("tga_dsr", plot_tga_dsr), ("tga_shift", plot_tga_shift)):
        paths += save_figure(fn(compare), out_dir, stem)
        paths.append(save_html(fn(compare, backend="plotly"), out_dir, stem))
    return paths


def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``stem.pdf`` (TrueType fonts) and ``stem.png`` (300 dpi) into ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    paths = []
    with figure_style():
        for fmt in ("pdf", "png"):
            path = out_dir / f"{stem}.{fmt}"
            meta = {"Title": stem, "Subject": f"Method: {CITATION}"} if fmt == "pdf" else None
            write_atomic(
                path, lambda p, fmt=fmt, meta=meta: fig.savefig(p, format=fmt, dpi=PNG_DPI, metadata=meta)
            )
            paths.append(path)
    return paths


def save_html(fig: go.Figure, out_dir: str | Path, stem: str) -> Path:
    """Write ``stem.html`` with plotly.js embedded (works offline) atomically."""
    html = fig.to_html(include_plotlyjs=True, full_html=True)
    return write_atomic(Path(out_dir) / f"{stem}.html", lambda p: p.write_text(html, encoding="utf-8"))


def load_layer_results(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read ``layers.csv`` and ``layers.json`` from a run directory (the inputs of :func:`draw_all`)."""
    run_dir = Path(run_dir)
    frame = pd.read_csv(run_dir / "layers.csv")
    meta_path = run_dir / "layers.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return frame, meta


def draw_all(frame: pd.DataFrame, meta: Mapping[str, object], out_dir: str | Path) -> list[Path]:
    """Draw every figure the saved results support, each as PDF, PNG and HTML; returns the written paths.

    ``frame``: per-layer table (``layer`` plus ``{score}_mean/_lower/_upper`` for scores among
    cos_matched, cos_mismatched, cos_centred, cka, cos_last, refusal_prob, attention_mass,
    refusal_direction_auroc, patching_gain). ``meta``: ``safety_layers`` (list of blocks) and
    ``histogram`` (``{"counts": [L], "n_none": int}``), both optional.
    """
    columns = set(frame.columns)
    names = {c[: -len("_mean")] for c in columns if c.endswith("_mean")}
    names = {n for n in names if {f"{n}_lower", f"{n}_upper"} <= columns}  # skip other *_mean columns
    scores = {n: LayerScores.from_frame(frame, n) for n in sorted(names)}
    safety = [int(v) for v in meta.get("safety_layers", []) or []]
    histogram = meta.get("histogram")
    figures: list[tuple[str, Callable[..., Figure | go.Figure]]] = []
    if "cos_matched" in scores:
        figures.append(("shift", lambda **kw: plot_shift(scores, **kw)))
    if "refusal_prob" in scores:
        figures.append(("locate", lambda **kw: plot_locate(scores["refusal_prob"], histogram, **kw)))
    if histogram is not None or any(k in scores for k, _ in LOCATORS):
        figures.append(("locators", lambda **kw: plot_locators(scores, histogram, **kw)))
    if "cos_last" in scores:
        figures.append(("last_token", lambda **kw: plot_last_token(scores["cos_last"], **kw)))
    paths: list[Path] = []
    for stem, draw in figures:
        paths += save_figure(draw(safety_layers=safety), out_dir, stem)
        paths.append(save_html(draw(safety_layers=safety, backend="plotly"), out_dir, stem))
    return paths


def _series(s: LayerScores, label: str, color: str, dashed: bool = False) -> _Series:
    return _Series(
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


def _runs(layers: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive layers, e.g. [3, 4, 5, 9] → [(3, 5), (9, 9)]."""
    runs: list[tuple[int, int]] = []
    for v in sorted(set(layers)):
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _render(spec: _Spec, backend: Backend) -> Figure | go.Figure:
    if backend == "matplotlib":
        return _to_matplotlib(spec)
    if backend == "plotly":
        return _to_plotly(spec)
    raise ValueError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")


def _to_matplotlib(spec: _Spec) -> Figure:
    with figure_style():
        # A bare Figure (not pyplot) keeps no global state and still renders inline in Jupyter.
        fig = Figure(figsize=(COLUMN_WIDTH_IN, spec.height_in), layout="constrained")
        axes = fig.subplots(
            len(spec.panels), 1, sharex=True, squeeze=False, height_ratios=[p.height for p in spec.panels]
        )[:, 0]
        for row, (ax, panel) in enumerate(zip(axes, spec.panels)):
            if panel.heatmap is not None:
                _mpl_heatmap(fig, ax, panel.heatmap, spec.safety_layers)
                continue
            for i, (s, e) in enumerate(_runs(spec.safety_layers)):
                # Labelled once per figure: the band means the same in every panel.
                ax.axvspan(
                    s - 0.5,
                    e + 0.5,
                    color=COLORS["band"],
                    alpha=0.3,
                    lw=0,
                    zorder=0,
                    label="safety layers" if i == 0 and row == 0 else None,
                )
            for s in panel.series:
                _mpl_series(ax, s)
            ax.set_ylabel(panel.ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            # Legend above the axes, outside the data area.
            ax.legend(
                loc="lower left",
                bbox_to_anchor=(0.0, 1.0),
                ncol=2,
                borderaxespad=0.2,
                handlelength=1.8,
                columnspacing=1.0,
            )
        axes[-1].set_xlabel("layer (decoder block, 0-based)")
        all_layers = [v for p in spec.panels for s in p.series for v in s.layers]
        if all_layers:
            axes[-1].set_xlim(min(all_layers) - 0.5, max(all_layers) + 0.5)
    return fig


def _mpl_series(ax, s: _Series) -> None:
    if s.bars:
        ax.bar(s.layers, s.y, width=0.8, color=s.color, alpha=0.85, label=s.label, zorder=2)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        return
    if s.lower is not None and s.upper is not None:
        ax.fill_between(s.layers, s.lower, s.upper, color=s.color, alpha=0.2, lw=0, zorder=1)
    ax.plot(
        s.layers,
        s.y,
        color=s.color,
        ls="--" if s.dashed else "-",
        marker=None if s.dashed else "o",
        label=s.label,
        zorder=3,
    )


def _mpl_heatmap(fig: Figure, ax, heat: _Heatmap, safety_layers: Sequence[int]) -> None:
    x0, x1 = heat.layers[0] - 0.5, heat.layers[-1] + 0.5
    grid = np.full((len(heat.rows), heat.layers[-1] - heat.layers[0] + 1), np.nan)
    grid[:, np.asarray(heat.layers) - heat.layers[0]] = heat.values
    img = ax.imshow(
        grid,
        aspect="auto",
        cmap="viridis",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(x0, x1, len(heat.rows) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(heat.rows)), heat.rows)
    ax.tick_params(axis="y", length=0)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    # A bracket above the map marks the safety layers (a shaded band would change the colours).
    for i, (s, e) in enumerate(_runs(safety_layers)):
        ax.axvline(s - 0.5, color="white", lw=0.8, ls="--")
        ax.axvline(e + 0.5, color="white", lw=0.8, ls="--")
        ax.plot(
            [s - 0.5, e + 0.5],
            [1.03, 1.03],
            color="black",
            lw=1.2,
            clip_on=False,
            transform=ax.get_xaxis_transform(),
        )
        if i == 0:
            ax.text(
                (s + e) / 2,
                1.06,
                "safety layers",
                ha="center",
                va="bottom",
                transform=ax.get_xaxis_transform(),
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    cbar = fig.colorbar(img, ax=ax, fraction=0.05, pad=0.02, ticks=[0, 1])
    cbar.set_label("min–max per row", labelpad=-4)
    cbar.outline.set_linewidth(0.4)


def _to_plotly(spec: _Spec) -> go.Figure:
    heights = [p.height for p in spec.panels]
    fig = make_subplots(
        rows=len(spec.panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[h / sum(heights) for h in heights],
    )
    for row, panel in enumerate(spec.panels, start=1):
        if panel.heatmap is not None:
            h = panel.heatmap
            fig.add_trace(
                go.Heatmap(
                    z=h.values.tolist(),
                    x=h.layers,
                    y=h.rows,
                    customdata=h.raw.tolist(),
                    zmin=0,
                    zmax=1,
                    colorscale="Viridis",
                    colorbar={"title": "min–max per row"},
                    hovertemplate="layer %{x}<br>%{y}: %{customdata:.4g} (normalised %{z:.2f})<extra></extra>",
                ),
                row=row,
                col=1,
            )
            fig.update_yaxes(autorange="reversed", row=row, col=1)
        for s in panel.series:
            _plotly_series(fig, s, row)
        fig.update_yaxes(title_text=panel.ylabel, row=row, col=1)
    for s, e in _runs(spec.safety_layers):
        fig.add_vrect(
            x0=s - 0.5,
            x1=e + 0.5,
            fillcolor=COLORS["band"],
            opacity=0.3,
            line_width=0,
            layer="below",
            row="all",
            col=1,
        )
    fig.update_xaxes(dtick=1 if _n_layers(spec) <= 40 else None, tick0=0)
    fig.update_xaxes(title_text="layer (decoder block, 0-based)", row=len(spec.panels), col=1)
    band = f"; safety layers {spec.safety_layers}" if spec.safety_layers else ""
    fig.update_layout(
        title={"text": f"{spec.title}<br><sup>method: {CITATION}{band}</sup>"},
        template="simple_white",
        hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0.0},
        margin={"t": 120},
        height=int(spec.height_in * 160) + 100,
        width=900,
    )
    return fig


def _plotly_series(fig: go.Figure, s: _Series, row: int) -> None:
    if s.bars:
        fig.add_trace(
            go.Bar(
                x=s.layers,
                y=s.y.tolist(),
                name=s.label,
                marker_color=s.color,
                hovertemplate="layer %{x}: %{y} pairs<extra></extra>",
            ),
            row=row,
            col=1,
        )
        return
    band = s.lower is not None and s.upper is not None
    if band:
        fig.add_trace(
            go.Scatter(
                x=s.layers,
                y=s.upper.tolist(),
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=s.layers,
                y=s.lower.tolist(),
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=_rgba(s.color, 0.2),
                showlegend=False,
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
    custom = np.stack([s.lower, s.upper], axis=1).tolist() if band else None
    hover = f"{s.label}: %{{y:.4f}}" + (" [95%: %{customdata[0]:.4f}, %{customdata[1]:.4f}]" if band else "")
    fig.add_trace(
        go.Scatter(
            x=s.layers,
            y=s.y.tolist(),
            customdata=custom,
            name=s.label,
            mode="lines" if s.dashed else "lines+markers",
            line={"color": s.color, "dash": "dash" if s.dashed else "solid"},
            hovertemplate=hover + "<extra></extra>",
        ),
        row=row,
        col=1,
    )


def _n_layers(spec: _Spec) -> int:
    layers = [v for p in spec.panels for s in p.series for v in s.layers]
    layers += [v for p in spec.panels if p.heatmap is not None for v in p.heatmap.layers]
    return max(layers) - min(layers) + 1 if layers else 0


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
