"""Grouped-bar figure specs and their two renderers (matplotlib PDF/PNG, plotly HTML), in the manner of
:mod:`safety_probe.viz.render`: a figure is built once as a :class:`BarSpec` and drawn by either backend, so both
show the same data. Bars carry optional error bars (e.g. Wilson 95% intervals); baselines are dashed lines, visible also at 0.
The figures themselves are defined in :mod:`safety_probe.viz.evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from safety_probe.viz.render import CITATION, COLUMN_WIDTH_IN, Backend, figure_style


@dataclass
class Bars:
    """One bar per group (None: no bar), with optional lower/upper error bounds."""

    label: str
    y: list[float | None]
    color: str
    lower: list[float | None] | None = None
    upper: list[float | None] | None = None


@dataclass
class Baseline:
    """A dashed horizontal reference line across a panel."""

    label: str
    y: float
    color: str


@dataclass
class BarPanel:
    """Groups along x (their labels), the bars of each series side by side, and the baselines."""

    title: str
    ylabel: str
    groups: list[str]
    bars: list[Bars]
    baselines: list[Baseline] = field(default_factory=list)


@dataclass
class BarSpec:
    title: str
    panels: list[BarPanel]
    ylim: tuple[float, float] = (-0.05, 1.05)
    """Below 0 so a baseline at 0 (no over-refusal) is drawn above the axis, not hidden on it."""
    panel_height_in: float = 1.9


def render_bars(spec: BarSpec, backend: Backend) -> Figure | go.Figure:
    """Draw ``spec`` with ``backend`` (``matplotlib`` or ``plotly``)."""
    if backend == "matplotlib":
        return _to_matplotlib(spec)
    if backend == "plotly":
        return _to_plotly(spec)
    raise ValueError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")


def _values(values: list[float | None] | None) -> np.ndarray | None:
    return None if values is None else np.array([np.nan if v is None else v for v in values], dtype=float)


def _errors(b: Bars) -> np.ndarray | None:
    """``[2, groups]`` distances below and above each bar (0 where unknown), or None without bounds; never negative
    (a Wilson bound at p = 0 or 1 can sit a rounding error past the bar)."""
    y, lo, hi = _values(b.y), _values(b.lower), _values(b.upper)
    if lo is None or hi is None:
        return None
    return np.clip(np.nan_to_num(np.stack([y - lo, hi - y]), nan=0.0), 0.0, None)


def _to_matplotlib(spec: BarSpec) -> Figure:
    with figure_style():
        fig = Figure(figsize=(2 * COLUMN_WIDTH_IN, 0.5 + spec.panel_height_in * len(spec.panels)), layout="constrained")
        axes = fig.subplots(len(spec.panels), 1, squeeze=False)[:, 0]
        for ax, panel in zip(axes, spec.panels):
            x = np.arange(len(panel.groups))
            width = 0.8 / max(len(panel.bars), 1)
            for i, b in enumerate(panel.bars):
                ax.bar(x + (i - (len(panel.bars) - 1) / 2) * width, _values(b.y), width, yerr=_errors(b),
                       label=b.label, color=b.color, capsize=2, error_kw={"elinewidth": 0.7, "capthick": 0.7})
            for line in panel.baselines:
                ax.axhline(line.y, color=line.color, ls="--", lw=0.9, label=line.label, zorder=3)
            ax.axhline(0, color="black", lw=0.6, zorder=1)  # the bars' base, below any baseline at 0
            ax.set_xticks(x, panel.groups, rotation=20, ha="right")
            ax.set_ylabel(panel.ylabel)
            ax.set_ylim(*spec.ylim)
            ax.set_title(panel.title, loc="left")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)  # outside the data
        fig.suptitle(spec.title)
    return fig


def _to_plotly(spec: BarSpec) -> go.Figure:
    fig = make_subplots(rows=len(spec.panels), cols=1, subplot_titles=[p.title for p in spec.panels],
                        vertical_spacing=min(0.12, 0.5 / max(len(spec.panels), 1)))
    shown: set[str] = set()  # each legend entry once, however many panels repeat it
    for row, panel in enumerate(spec.panels, start=1):
        for b in panel.bars:
            err = _errors(b)
            custom = None if err is None else np.stack([_values(b.lower), _values(b.upper)], axis=1).tolist()
            ci = "" if err is None else " [95%: %{customdata[0]:.3f}, %{customdata[1]:.3f}]"
            fig.add_trace(go.Bar(
                x=panel.groups, y=_values(b.y).tolist(), name=b.label, marker_color=b.color, legendgroup=b.label,
                showlegend=b.label not in shown, customdata=custom,
                error_y=None if err is None else {"type": "data", "symmetric": False, "array": err[1].tolist(),
                                                  "arrayminus": err[0].tolist()},
                hovertemplate=f"%{{x}}: {b.label} %{{y:.3f}}{ci}<extra></extra>"), row=row, col=1)
            shown.add(b.label)
        for line in panel.baselines:
            fig.add_trace(go.Scatter(
                x=panel.groups, y=[line.y] * len(panel.groups), mode="lines", name=line.label,
                line={"color": line.color, "dash": "dash"}, legendgroup=line.label, showlegend=line.label not in shown,
                hovertemplate=f"{line.label}: {line.y:.3f}<extra></extra>"), row=row, col=1)
            shown.add(line.label)
        fig.update_yaxes(title_text=panel.ylabel, range=list(spec.ylim), row=row, col=1)
    fig.update_layout(barmode="group", template="simple_white", width=900,
                      height=int(260 * len(spec.panels)) + 140, margin={"t": 120},
                      title={"text": f"{spec.title}<br><sup>method: {CITATION}</sup>"})
    return fig
