"""What an evaluation found (:class:`EvalResult`) and the one writer of its folder: exactly the files
``safety-probe eval --out`` writes.

    >>> result = evaluate(vlm, pairs)
    >>> result                                     # short: pairs, DSR per run, over-refusal (a table in Jupyter)
    >>> result.plot()                              # DSR per scene, text vs image run, over-refusal dashed
    >>> result.save("runs/eval", figures=True)     # metrics.json, metrics.csv, responses.jsonl, run.json, figures/

Results draw themselves: the methods that draw import :mod:`safety_probe.viz` inside themselves, the one import of a
later stage the package allows (``tests/test_design.py`` names this file), so importing a result never loads the
figure code.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from safety_probe.core.files import write_json, write_jsonl
from safety_probe.core.runinfo import package_versions

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

#: The metrics a person reads first, in the repr and the notebook table.
HEADLINE = ("text_dsr", "image_dsr", "text_benign_refusal", "image_benign_refusal", "image_task_accuracy")


@dataclass
class EvalResult:
    """Judged responses (one dict per pair) and their metrics, overall, per scene and per benchmark.

    ``metrics``: the ``metrics.json`` record (:func:`~safety_probe.eval.evaluate.metrics_of` and its ``benchmarks``
    table); ``run_key``: :func:`~safety_probe.eval.evaluate.eval_key` of the settings that produced the rows;
    ``settings``: the model, batching, generation length and defense, for ``run.json``.
    """

    rows: list[dict]
    metrics: dict
    run_key: str | None = None
    settings: dict = field(default_factory=dict)

    def headline(self) -> str:
        """One line: the model, the pairs, the judge and the headline metrics."""
        m = self.metrics["overall"]
        model = (self.settings.get("model") or {}).get("model")
        shown = ", ".join(f"{k} {m[k]:.3f}" for k in HEADLINE if m.get(k) is not None)
        return (f"{f'{model}: ' if model else ''}{m['n_pairs']} pairs ({m['n_harmful']} harmful, {m['n_benign']} "
                f"benign): {shown}; judge {self.metrics['judge']}")

    def __repr__(self) -> str:
        return f"EvalResult({self.headline()})"

    def _repr_html_(self) -> str:
        return f"<p><b>EvalResult: {html.escape(self.headline())}</b></p>" + self.table().to_html(
            float_format="{:.3f}".format, na_rep="-")

    def table(self) -> pd.DataFrame:
        """The headline metrics overall and per scene: one row per group, ``n_pairs`` and :data:`HEADLINE`."""
        import pandas as pd

        groups = {"overall": self.metrics["overall"], **self.metrics["per_scene"]}
        return pd.DataFrame.from_dict({g: {k: m.get(k) for k in ("n_pairs", *HEADLINE)} for g, m in groups.items()},
                                      orient="index")

    def frame(self) -> pd.DataFrame:
        """Responses as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self, backend: Literal["matplotlib", "plotly"] = "matplotlib") -> Figure | go.Figure:
        """DSR per scene, text vs image run, with each run's benign over-refusal dashed (``figures/eval_dsr``)."""
        from safety_probe.viz.evaluation import plot_eval  # results draw themselves (module docstring)

        return plot_eval(self.metrics, backend)

    def save(self, out_dir: str | Path, figures: bool = False, *, run: dict | None = None) -> list[Path]:
        """Write what ``safety-probe eval --out`` writes, atomically: ``responses.jsonl``, ``metrics.json``,
        ``metrics.csv``, with ``figures`` the DSR figure in ``figures/`` (PDF, PNG, HTML and the one
        ``plotly.min.js``; none when no pair is labelled), and ``run.json`` (``run``, or :meth:`run_record`)."""
        from safety_probe.eval.tables import write_metrics_csv

        out_dir = Path(out_dir)
        paths = [write_jsonl(out_dir / "responses.jsonl", self.rows), write_json(out_dir / "metrics.json", self.metrics),
                 write_metrics_csv(self.metrics, out_dir / "metrics.csv")]
        if figures:
            from safety_probe.viz.evaluation import draw_eval  # results draw themselves (module docstring)

            paths += draw_eval(self.metrics, out_dir / "figures")
        paths.append(write_json(out_dir / "run.json", self.run_record() if run is None else run))
        return paths

    def run_record(self) -> dict:
        """The ``run.json`` of a result saved from Python: its settings, prompts, judges and the package versions (the
        command line writes its own, with its command and timing)."""
        return {"config": {**self.settings, "prompts": self.metrics.get("prompts"), "judges": self.metrics.get("judges")},
                "command": "python: EvalResult.save", "versions": package_versions(), "n_pairs": len(self.rows),
                "run_key": self.run_key}
