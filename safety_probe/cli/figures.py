"""`safety-probe figures RUN`: redraw a run's figures from its saved results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simple_parsing import field as option

from safety_probe.core.errors import InputError


@dataclass
class FiguresConfig:
    """safety-probe figures RUN: redraw every figure of a probe-layers run from its saved results, without the model."""

    run: str = option(default="", positional=True, nargs="?")
    """A probe-layers output folder (holding layers.csv and layers.json) or a `safety-probe eval` one (metrics.json)."""

    def validate(self) -> None:
        """The run folder exists and holds results (their contents are checked when read)."""
        from safety_probe.core.files import check_input_path, check_out_dir

        if not self.run:
            raise InputError("give the run folder: safety-probe figures RUN")
        run = check_input_path(self.run, "run folder", folder=True)
        if not (run / "layers.csv").exists() and not (run / "metrics.json").exists():
            raise InputError(f"{run} holds no layers.csv and no metrics.json: is it a probe-layers or eval output folder?")
        check_out_dir(run / "figures", "figures folder")


def draw_figures(run: str | Path) -> list[Path]:
    """Draw the figures of a probe-layers run (layers.csv) and of an evaluation (metrics.json) into RUN/figures.

    Every input is read, checked and every figure built before the first file is written."""
    from safety_probe.analysis.results import LayerAnalysis
    from safety_probe.core.files import read_json
    from safety_probe.viz.evaluation import eval_figures
    from safety_probe.viz.layers import layer_figures
    from safety_probe.viz.render import save_drawn

    run = Path(run)
    layers = LayerAnalysis.load(run) if (run / "layers.csv").exists() else None
    metrics_path = run / "metrics.json"
    metrics = read_json(metrics_path, "evaluation metrics") if metrics_path.exists() else None
    if metrics is not None and not (isinstance(metrics, dict) and isinstance(metrics.get("benchmarks"), dict)):
        raise InputError(f"{metrics_path} has no benchmarks table (an older eval?): rerun safety-probe eval")
    drawn = layer_figures(layers) if layers else []
    try:
        drawn += eval_figures(metrics) if metrics is not None else []
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a table not written by eval
        raise InputError(f"{metrics_path}: malformed benchmarks table ({type(e).__name__}: {e})") from None
    return save_drawn(drawn, run / "figures")


def redraw(cfg: FiguresConfig) -> list[Path]:
    """Run `safety-probe figures` (holding the lock of the run folder)."""
    from safety_probe.core.lock import output_lock

    with output_lock(cfg.run):
        paths = draw_figures(cfg.run)
    print(f"{len(paths)} files -> {Path(cfg.run) / 'figures'}")
    return paths
