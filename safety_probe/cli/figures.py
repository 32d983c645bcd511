"""`safety-probe figures RUN`: redraw a run's figures from its saved results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simple_parsing import field as option

from safety_probe.errors import InputError


@dataclass
class FiguresConfig:
    """safety-probe figures RUN: redraw every figure of a probe-layers run from its saved results, without the model."""

    run: str = option(default="", positional=True, nargs="?")
    """A probe-layers output folder (holding layers.csv and layers.json) or a `safety-probe eval` one (metrics.json)."""


def draw_figures(run: str | Path) -> list[Path]:
    """Draw the figures of a probe-layers run (layers.csv) and of an evaluation (metrics.json) into RUN/figures."""
    from safety_probe.io import read_json
    from safety_probe.plots import draw_all, draw_eval, load_layer_results

    run = Path(run)
    if not (run / "layers.csv").is_file() and not (run / "metrics.json").is_file():
        raise InputError(f"{run} holds no layers.csv and no metrics.json: is it a probe-layers or eval output folder?")
    paths = draw_all(*load_layer_results(run), run / "figures") if (run / "layers.csv").is_file() else []
    if (run / "metrics.json").is_file():
        metrics = read_json(run / "metrics.json", "evaluation metrics")
        if "benchmarks" not in metrics:
            raise InputError(f"{run / 'metrics.json'} has no benchmarks table (an older eval): rerun safety-probe eval")
        paths += draw_eval(metrics, run / "figures")
    return paths


def redraw(cfg: FiguresConfig) -> list[Path]:
    """Run `safety-probe figures`."""
    paths = draw_figures(cfg.run)
    print(f"{len(paths)} files -> {Path(cfg.run) / 'figures'}")
    return paths
