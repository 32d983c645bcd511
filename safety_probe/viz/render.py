"""Backend-neutral figure specs and their two renderers: matplotlib (PDF with TrueType fonts, PNG) and plotly HTML.

A figure is built once as a :class:`Spec` (panels of series with bands, or a heatmap, over layers, with the
safety layers shaded) and rendered by either backend, so the PDF/PNG and the HTML always show the same data.
The figures themselves are defined in :mod:`safety_probe.viz.layers`. The HTML figures of one folder share one
``plotly.min.js`` written beside them (:func:`save_drawn`): offline, and 4.8 MB once instead of per figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from plotly.subplots import make_subplots

from safety_probe.core.files import write_atomic

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
    # Beyond Okabe–Ito's eight, for the defense rows: Paul Tol's muted scheme.
    "indigo": "#332288",
    "teal": "#44AA99",
    "olive": "#999933",
    "wine": "#882255",
    "black": "#000000",
}

Backend = Literal["matplotlib", "plotly"]


@dataclass
class Series:
    label: str
    layers: list[int]
    y: np.ndarray
    color: str
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    dashed: bool = False
    bars: bool = False


@dataclass
class Heatmap:
    """Rows of values over layers on one absolute colour scale ``[vmin, vmax]`` (diverging around 0), named ``unit``."""

    rows: list[str]
    layers: list[int]
    values: np.ndarray  # [rows, layers] in ``unit``; NaN: not measured
    unit: str
    vmin: float = -1.0
    vmax: float = 1.0


@dataclass
class Panel:
    ylabel: str
    series: list[Series] = field(default_factory=list)
    heatmap: Heatmap | None = None
    height: float = 1.0  # relative panel height


@dataclass
class Spec:
    title: str
    panels: list[Panel]
    safety_layers: list[int]
    height_in: float
    note: str = ""  # e.g. "n = 60 harmful pairs": printed with the layer axis in both backends

    @property
    def xlabel(self) -> str:
        base = "layer (decoder block, 0-based)"
        return f"{base}\n{self.note}" if self.note else base


@contextmanager
def figure_style() -> Iterator[None]:
    """Temporarily apply :data:`STYLE` (matplotlib rcParams) for drawing or saving."""
    with matplotlib.rc_context(STYLE):
        yield


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


#: The plotly.js file the HTML figures of a folder load, written once beside them.
PLOTLY_JS = "plotly.min.js"


def write_plotly_js(out_dir: str | Path) -> Path:
    """Write ``out_dir/plotly.min.js`` (this plotly's own copy) unless that exact file is already there."""
    from plotly.offline import get_plotlyjs

    path, script = Path(out_dir) / PLOTLY_JS, get_plotlyjs()
    if path.is_file() and path.stat().st_size == len(script.encode()) and path.read_text(encoding="utf-8") == script:
        return path
    return write_atomic(path, lambda p: p.write_text(script, encoding="utf-8"))


def save_html(fig: go.Figure, out_dir: str | Path, stem: str) -> Path:
    """Write ``stem.html`` atomically, loading plotly.js from :data:`PLOTLY_JS` beside it (no network needed: write
    that file with :func:`write_plotly_js`)."""
    html = fig.to_html(include_plotlyjs=PLOTLY_JS, full_html=True)
    return write_atomic(Path(out_dir) / f"{stem}.html", lambda p: p.write_text(html, encoding="utf-8"))


Drawn = tuple[str, Figure, go.Figure]
"""A figure built in both backends before anything is written: (file stem, matplotlib figure, plotly figure)."""


def save_drawn(figures: list[Drawn], out_dir: str | Path) -> list[Path]:
    """Write each built figure as PDF, PNG and HTML into ``out_dir``, and the one :data:`PLOTLY_JS` the HTML figures
    share; returns the paths (the script's too)."""
    paths: list[Path] = [write_plotly_js(out_dir)] if figures else []
    for stem, fig, html in figures:
        paths += save_figure(fig, out_dir, stem)
        paths.append(save_html(html, out_dir, stem))
    return paths


def render(spec: Spec, backend: Backend) -> Figure | go.Figure:
    if backend == "matplotlib":
        return _to_matplotlib(spec)
    if backend == "plotly":
        return _to_plotly(spec)
    raise ValueError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")


def _to_matplotlib(spec: Spec) -> Figure:
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
                ax.axvspan(s - 0.5, e + 0.5, color=COLORS["band"], alpha=0.3, lw=0, zorder=0,
                           label="safety layers" if i == 0 and row == 0 else None)
            for s in panel.series:
                _mpl_series(ax, s)
            ax.set_ylabel(panel.ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            # Legend above the axes, outside the data area.
            ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, borderaxespad=0.2, handlelength=1.8,
                      columnspacing=1.0)
        axes[-1].set_xlabel(spec.xlabel)
        if _x_range(spec):
            axes[-1].set_xlim(*_x_range(spec))
    return fig


def _mpl_series(ax, s: Series) -> None:
    if s.bars:
        ax.bar(s.layers, s.y, width=0.8, color=s.color, alpha=0.85, label=s.label, zorder=2)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        return
    if s.lower is not None and s.upper is not None:
        ax.fill_between(s.layers, s.lower, s.upper, color=s.color, alpha=0.2, lw=0, zorder=1)
    ax.plot(s.layers, s.y, color=s.color, ls="--" if s.dashed else "-", marker=None if s.dashed else "o", label=s.label,
            zorder=3)


def _mpl_heatmap(fig: Figure, ax, heat: Heatmap, safety_layers: Sequence[int]) -> None:
    x0, x1 = heat.layers[0] - 0.5, heat.layers[-1] + 0.5
    grid = np.full((len(heat.rows), heat.layers[-1] - heat.layers[0] + 1), np.nan)
    grid[:, np.asarray(heat.layers) - heat.layers[0]] = heat.values
    img = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=heat.vmin, vmax=heat.vmax, interpolation="nearest",
                    extent=(x0, x1, len(heat.rows) - 0.5, -0.5))
    ax.set_yticks(range(len(heat.rows)), heat.rows)
    ax.tick_params(axis="y", length=0)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    # A bracket above the map marks the safety layers (a shaded band would change the colours).
    for i, (s, e) in enumerate(_runs(safety_layers)):
        ax.axvline(s - 0.5, color="black", lw=0.8, ls="--")
        ax.axvline(e + 0.5, color="black", lw=0.8, ls="--")
        ax.plot([s - 0.5, e + 0.5], [1.03, 1.03], color="black", lw=1.2, clip_on=False,
                transform=ax.get_xaxis_transform())
        if i == 0:
            ax.text((s + e) / 2, 1.06, "safety layers", ha="center", va="bottom", transform=ax.get_xaxis_transform())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    cbar = fig.colorbar(img, ax=ax, fraction=0.05, pad=0.02, ticks=[heat.vmin, 0, heat.vmax])
    cbar.set_label(heat.unit)
    cbar.outline.set_linewidth(0.4)


def _to_plotly(spec: Spec) -> go.Figure:
    heights = [p.height for p in spec.panels]
    fig = make_subplots(rows=len(spec.panels), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[h / sum(heights) for h in heights])
    for row, panel in enumerate(spec.panels, start=1):
        if panel.heatmap is not None:
            h = panel.heatmap
            fig.add_trace(
                go.Heatmap(
                    z=h.values.tolist(),
                    x=h.layers,
                    y=h.rows,
                    zmin=h.vmin,
                    zmax=h.vmax,
                    colorscale="RdBu_r",
                    colorbar={"title": h.unit},
                    hovertemplate="layer %{x}<br>%{y}: %{z:.4g}<extra></extra>",
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
    fig.update_xaxes(dtick=1 if _n_layers(spec) <= 40 else None, tick0=0, range=_x_range(spec))
    fig.update_xaxes(title_text=spec.xlabel.replace("\n", "<br>"), row=len(spec.panels), col=1)
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


def _plotly_series(fig: go.Figure, s: Series, row: int) -> None:
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


def _layers(spec: Spec) -> list[int]:
    """Every layer a panel draws."""
    layers = [v for p in spec.panels for s in p.series for v in s.layers]
    return layers + [v for p in spec.panels if p.heatmap is not None for v in p.heatmap.layers]


def _n_layers(spec: Spec) -> int:
    layers = _layers(spec)
    return max(layers) - min(layers) + 1 if layers else 0


def _x_range(spec: Spec) -> list[float] | None:
    """The x-axis limits: every drawn layer and every safety layer, each whole (half a layer either side)."""
    layers = _layers(spec) + list(spec.safety_layers)
    return [min(layers) - 0.5, max(layers) + 0.5] if layers else None


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _runs(layers: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive layers, e.g. [3, 4, 5, 9] → [(3, 5), (9, 9)]."""
    runs: list[tuple[int, int]] = []
    for v in sorted(set(layers)):
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs
