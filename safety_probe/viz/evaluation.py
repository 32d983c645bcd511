"""Publication figures of the evaluation and of the before/after comparison: DSR per benchmark and scene (text vs
image run, ``metrics.json``), and per method of a ``compare.json`` (``safety-probe tga``) the image DSR per scene and
the shift before/after. Built as backend-neutral specs (:mod:`safety_probe.viz.render`, :mod:`safety_probe.viz.bars`)
and written as PDF, PNG and HTML like the layer figures of :mod:`safety_probe.viz.layers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure

from safety_probe.analysis.scores import wilson_interval
from safety_probe.eval.tables import ALL, RUNS
from safety_probe.viz.bars import BarPanel, Bars, BarSpec, Baseline, render_bars
from safety_probe.viz.render import COLORS, Backend, Drawn, Panel, Series, Spec, render, save_drawn

METHOD_COLORS = {"before": COLORS["grey"], "tga": COLORS["blue"], "ce": COLORS["orange"],
                 "safety_ft": COLORS["green"], "filter": COLORS["purple"],
                 # inference-time defenses (safety_probe.defenses), by their canonical names
                 "refusal_steering:add": COLORS["sky"], "refusal_steering:ablate": COLORS["black"],
                 "shift_correction:cmrm": COLORS["red"], "shift_correction:shiftdc": COLORS["wine"],
                 "hidden_detect:cosine": COLORS["teal"], "hidden_detect:logprob": COLORS["indigo"],
                 "self_check": COLORS["olive"]}


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
        series.append(Series(name, layers, y, METHOD_COLORS.get(name, COLORS["red"]), dashed=name == "before"))
    if not series:
        raise ValueError("plot_tga_shift: compare.json has no shift measurements")
    panel = Panel("cosine(image, caption)", series)
    return render(Spec("Semantic shift before/after alignment", [panel], list(compare.get("safety_layers", [])),
                         2.4), backend)


def plot_tga_dsr(compare: Mapping, backend: Backend = "matplotlib") -> Figure | go.Figure:
    """Image-run DSR per toxic scene (and overall) for each row of a ``compare.json``: grouped bars with Wilson 95%
    intervals, each group's n of harmful pairs on its label, a row without a measurement left blank."""
    rows = compare["rows"]
    scenes = sorted({s for r in rows.values() for s, m in r.get("per_scene", {}).items() if m.get("image_dsr") is not None})
    groups = [*scenes, "overall"]

    def group(row: Mapping, name: str) -> Mapping:
        return row.get("overall", {}) if name == "overall" else row.get("per_scene", {}).get(name, {})

    n = {g: max((group(r, g).get("n_harmful") or 0) for r in rows.values()) for g in groups}
    bars = []
    for name, row in rows.items():
        y = [group(row, g).get("image_dsr") for g in groups]
        bounds = [wilson_interval(v, n[g]) if v is not None and n[g] else (None, None) for v, g in zip(y, groups)]
        bars.append(Bars(name, y, METHOD_COLORS.get(name, COLORS["red"]),
                         [None if lo is None else float(lo) for lo, _ in bounds],
                         [None if hi is None else float(hi) for _, hi in bounds]))
    labels = [f"{g.replace('_', ' ')} (n={n[g]})" for g in groups]
    title = f"Image DSR per scene ({compare.get('eval_pairs', 0)} held-out pairs)"
    return render_bars(BarSpec(title, [BarPanel("", "image DSR", labels, bars)]), backend)


RUN_COLORS = {"text": COLORS["blue"], "image": COLORS["red"]}


def eval_panels(table: Mapping) -> list[BarPanel]:
    """One panel per benchmark and attack variant of a ``metrics.json`` ``benchmarks`` table: its headline
    (DSR, or benign over-refusal where it has no harmful pairs) per scene and overall, text vs image run, with
    Wilson 95% error bars and each group's n; beside a DSR, each run's benign over-refusal dashed where there
    are benign pairs (a model refusing everything scores DSR 1 and over-refusal 1)."""
    panels = []
    for name, entry in table.items():
        for variant, scenes in entry["variants"].items():
            whole = scenes[ALL]
            if whole["headline"] is None:
                continue  # unlabelled pairs: neither measure
            measure, count = ("dsr", "n_harmful") if whole["headline"] == "dsr" else ("benign_refusal", "n_benign")
            groups = [s for s, c in scenes.items() if s != ALL and c[count]] + [ALL]
            shares = {run: [scenes[s][f"{run}_{measure}"] for s in groups] for run in RUNS}
            bars = [Bars(f"{run} run", [c["share"] for c in shares[run]], RUN_COLORS[run],
                         [c["lower"] for c in shares[run]], [c["upper"] for c in shares[run]]) for run in RUNS]
            baselines = [Baseline(f"{run} run: benign over-refusal (n={whole['n_benign']})",
                                  whole[f"{run}_benign_refusal"]["share"], RUN_COLORS[run])
                         for run in RUNS if measure == "dsr" and whole["n_benign"]]
            what = "DSR" if measure == "dsr" else "benign over-refusal"
            title = f"{name}{'' if variant == ALL else f' / {variant}'}: {what}"
            panels.append(BarPanel(title, what, [f"{s} (n={scenes[s][count]})" for s in groups], bars, baselines))
    return panels


def plot_eval(metrics: Mapping, backend: Backend = "matplotlib") -> Figure | go.Figure:
    """DSR per scene, text vs image run, for each benchmark and attack variant of a ``metrics.json``
    (:func:`eval_panels`); the judge is named in the title."""
    panels = eval_panels(metrics["benchmarks"])
    if not panels:
        raise ValueError("plot_eval: no labelled pairs in the benchmarks table")
    title = f"DSR per scene, text vs image run (judge: {metrics.get('judge')}; text run: {metrics.get('text_run')})"
    return render_bars(BarSpec(title, panels), backend)


def eval_figures(metrics: Mapping) -> list[Drawn]:
    """``eval_dsr`` of a ``metrics.json``, built (none when no pair is labelled)."""
    if not eval_panels(metrics["benchmarks"]):
        return []
    return [("eval_dsr", plot_eval(metrics), plot_eval(metrics, backend="plotly"))]


def draw_eval(metrics: Mapping, out_dir: str | Path) -> list[Path]:
    """Write ``eval_dsr`` as PDF, PNG and HTML into ``out_dir`` (nothing when no pair is labelled); returns the paths."""
    return save_drawn(eval_figures(metrics), out_dir)


def draw_tga(compare: Mapping, out_dir: str | Path) -> list[Path]:
    """Write ``tga_dsr`` and ``tga_shift`` as PDF, PNG and HTML into ``out_dir``; returns the paths."""
    return save_drawn([(stem, fn(compare), fn(compare, backend="plotly"))
                       for stem, fn in (("tga_dsr", plot_tga_dsr), ("tga_shift", plot_tga_shift))], out_dir)
