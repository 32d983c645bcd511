"""What the before/after comparison found (:class:`CompareResult`, the record of ``compare.json``) and the one writer
of its files: ``compare.json`` and the figures ``safety-probe tga`` draws.

    >>> result = run_compare("runs/llava-base", cfg)    # or CompareResult.load("runs/tga")
    >>> result                                           # short: pairs, layers, image DSR of each row
    >>> result.table()                                   # one row per method: the headline metrics
    >>> result.plot_dsr(); result.plot_shift()           # image DSR per scene; cos(image, caption) per layer
    >>> result.save("runs/tga-copy", figures=True)       # compare.json and figures/ (the models stay where trained)

Like the other results it draws itself through :mod:`safety_probe.viz`, imported inside the methods that draw
(``tests/test_design.py`` names this file).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from safety_probe.core.errors import InputError
from safety_probe.core.files import read_json, write_json
from safety_probe.eval.results import HEADLINE

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

Backend = Literal["matplotlib", "plotly"]


@dataclass
class CompareResult:
    """The record of ``compare.json``: ``rows`` (method → metrics: ``before``, ``tga``, each baseline and defense,
    with ``overall``, ``per_scene`` and, for trained rows, ``shift`` per layer), ``safety_layers``, ``eval_pairs``
    (held-out pairs scored), ``notes``, the model, the config and the run key."""

    record: dict

    @classmethod
    def load(cls, path: str | Path) -> CompareResult:
        """Read ``compare.json`` from a ``safety-probe tga --out`` folder (or the file itself)."""
        path = Path(path)
        file = path / "compare.json" if path.is_dir() else path
        if not file.is_file():
            raise InputError(f"{file}: no compare.json (write one with `safety-probe tga --out {path}`)")
        record = read_json(file, "compare.json")
        if not isinstance(record, dict) or not isinstance(record.get("rows"), dict):
            raise InputError(f"{file}: not a compare.json (no 'rows' object)")
        return cls(record)

    @property
    def rows(self) -> dict[str, dict]:
        """Method → its row (``before`` is the model before alignment)."""
        return self.record["rows"]

    @property
    def evaluated(self) -> bool:
        """Whether the rows carry measurements on held-out pairs (and so figures)."""
        return bool(self.record.get("eval_pairs")) and "before" in self.rows

    def headline(self) -> str:
        """One line: held-out pairs, the aligned layers, and each row's image DSR."""
        dsr = ", ".join(f"{name} {row['overall']['image_dsr']:.3f}" for name, row in self.rows.items()
                        if (row.get("overall") or {}).get("image_dsr") is not None)
        pairs = self.record.get("eval_pairs") or 0
        return (f"{pairs} held-out pairs, layers {self.record.get('safety_layers')}"
                + (f"; image DSR: {dsr}" if dsr else f"; not evaluated, rows: {', '.join(self.rows) or 'none'}"))

    def __repr__(self) -> str:
        text = f"CompareResult({self.headline()})"
        return text if len(text) <= 1000 else text[:996] + "…)"

    def _repr_html_(self) -> str:
        return f"<p><b>CompareResult: {html.escape(self.headline())}</b></p>" + self.table().to_html(
            float_format="{:.3f}".format, na_rep="-")

    def table(self) -> pd.DataFrame:
        """One row per method: ``n_pairs`` and the headline metrics overall (blank where not measured)."""
        import pandas as pd

        return pd.DataFrame.from_dict(
            {name: {k: (row.get("overall") or {}).get(k) for k in ("n_pairs", *HEADLINE)}
             for name, row in self.rows.items()}, orient="index")

    def plot_dsr(self, backend: Backend = "matplotlib") -> Figure | go.Figure:
        """Image DSR per toxic scene and overall for every row, Wilson 95% intervals (``figures/tga_dsr``)."""
        from safety_probe.viz.evaluation import plot_tga_dsr  # results draw themselves (module docstring)

        return plot_tga_dsr(self.record, backend)

    def plot_shift(self, backend: Backend = "matplotlib") -> Figure | go.Figure:
        """cos(image mean, caption mean) per layer, before (dashed) and after each trained row (``figures/tga_shift``)."""
        from safety_probe.viz.evaluation import plot_tga_shift  # results draw themselves (module docstring)

        return plot_tga_shift(self.record, backend)

    def draw(self, out_dir: str | Path) -> list[Path]:
        """Write ``tga_dsr`` and ``tga_shift`` (PDF, PNG, HTML and the one ``plotly.min.js``) into ``out_dir``, as
        ``safety-probe tga`` does; nothing when the rows were not evaluated."""
        if not self.evaluated:
            return []
        from safety_probe.viz.evaluation import draw_tga  # results draw themselves (module docstring)

        return draw_tga(self.record, out_dir)

    def save(self, out_dir: str | Path, figures: bool = False) -> list[Path]:
        """Write ``compare.json`` (atomically) and, with ``figures``, what :meth:`draw` writes into ``figures/``: the
        files ``safety-probe tga --out`` writes besides the trained models and their responses."""
        out_dir = Path(out_dir)
        paths = [write_json(out_dir / "compare.json", self.record)]
        return paths + (self.draw(out_dir / "figures") if figures else [])
