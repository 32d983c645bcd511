"""What probe-layers learns per layer (:class:`LayerAnalysis`) and the one writer of its output folder: ``layers.json``
and ``layers.csv`` (read back and checked by :meth:`LayerAnalysis.load`), and beside them the states, measurements,
``run.json`` and figures, exactly the files ``probe-layers --out`` writes.

    >>> result = analyze(states, measurements)
    >>> result                                      # short: pairs, safety layers, K, warnings (a table in Jupyter)
    >>> result.safety_layers, result.frame()        # block indices; one row per layer, every metric
    >>> result.plot_locate(), result.plot_shift()   # figures with the histogram, support and n filled in
    >>> result.save("runs/llava", figures=True)     # what probe-layers --out runs/llava writes
    >>> LayerAnalysis.load("runs/llava").safety_layers

Results draw themselves: the methods that draw import :mod:`safety_probe.viz` inside themselves, the one import of a
later stage the package allows (``tests/test_design.py`` names this file), so importing a result never loads the
figure code.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from safety_probe.analysis.scores import LayerScores, scores_frame
from safety_probe.core.errors import InputError
from safety_probe.core.files import read_json, read_text, tensors_metadata, write_atomic, write_json
from safety_probe.core.runinfo import package_versions
from safety_probe.probe.refusal import RefusalTokens

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    from safety_probe.probe.measure import Measurements
    from safety_probe.probe.record import PairStates

LAYER_CONVENTION = "layer l = output of decoder block l (0-based) = TransformerLens blocks.{l}.hook_resid_post"
#: Per-layer count columns of layers.csv: pairs whose Algorithm-1 layer is the row's block.
COUNT_COLUMNS = ("alg1_count", "alg1_benign_count")
#: The per-layer table people read (the command's printout, the notebook's): layers.csv column -> heading.
LAYER_COLUMNS = {"refusal_prob_mean": "P(refuse)", "fires_refused_mean": "fires: refused",
                 "fires_answered_harmful_mean": "answered", "fires_benign_mean": "benign",
                 "contrast_lower": "contrast (low)", "patching_gain_mean": "patch",
                 "tail_patching_gain_mean": "tail patch", "cos_matched_mean": "cos", "cos_gap_mean": "cos gap",
                 "cos_tail_mean": "cos tail", "cka_debiased_mean": "CKA (deb.)"}
Backend = Literal["matplotlib", "plotly"]
#: The longest ``repr`` of a result: a notebook cell prints it whole.
REPR_CHARS = 1000


@dataclass
class LayerAnalysis:
    """Everything probe-layers learns per layer: the safety layers, every per-layer score with its band, and the
    per-pair locator records.

    ``scores``: metric name → :class:`~safety_probe.analysis.scores.LayerScores` (per-pair values only right after
    :func:`~safety_probe.analysis.analyze.analyze`; a loaded result has means and bands). ``locators``: the
    per-pair records of ``layers.json`` (``algorithm1``, ``histogram``, ``decision``, ``released_code``,
    ``text_run_refusal``). ``counts``: the per-layer count columns of ``layers.csv``. ``support``: how many harmful,
    benign and refusing pairs the numbers rest on. ``warnings``: what was asked for but skipped or is unreliable.
    ``states`` / ``measurements``: what :func:`~safety_probe.analysis.analyze.analyze` was given (None for a loaded
    result), kept so that :meth:`save` writes the whole run folder.
    """

    n_layers: int
    safety_layers: list[int]
    rule: str
    scores: dict[str, LayerScores]
    refusal_tokens: RefusalTokens
    harmful_index: list[int]
    benign_index: list[int] = field(default_factory=list)
    support: dict = field(default_factory=dict)
    locators: dict = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    states: PairStates | None = field(default=None, repr=False, compare=False)
    measurements: Measurements | None = field(default=None, repr=False, compare=False)

    def headline(self) -> str:
        """One line: the model, the pairs, the blocks, the safety layers and K."""
        model = f"{self.states.metadata['model']}: " if self.states is not None and self.states.metadata.get("model") \
            else ""
        harmful = self.support.get("harmful", len(self.harmful_index))
        return (f"{model}{harmful} harmful / {self.support.get('benign', len(self.benign_index))} benign pairs, "
                f"{self.n_layers} blocks; safety layers {self.safety_layers} (rule {self.rule}; {self.refusing} of "
                f"{harmful} harmful text runs refused); K = {self.refusal_tokens.label() or '-'}")

    def __repr__(self) -> str:
        return _short_repr(f"LayerAnalysis({self.headline()})", self.warnings)

    def _repr_html_(self) -> str:
        frame = self.frame()
        columns = {"layer": "layer", **{c: h for c, h in LAYER_COLUMNS.items() if c in frame}}
        table = frame[list(columns)].rename(columns=columns)
        table["layer"] = [f"{'*' if safe else ''}{int(l)}" for l, safe in zip(frame["layer"], frame["safety_layer"])]
        return _html(f"LayerAnalysis: {self.headline()}", self.warnings,
                     table.to_html(index=False, float_format="{:.3f}".format) + "<p>* = safety layer</p>")

    @property
    def refusing(self) -> int:
        """How many harmful text runs the model refused (the band's support)."""
        return int(self.support.get("refusing", 0))

    def frame(self) -> pd.DataFrame:
        """One row per layer: ``layer``, ``hook`` (TransformerLens name), ``safety_layer``, every metric's mean and 95%
        band, and the per-layer counts of the Algorithm-1 layer on harmful and benign text runs."""
        frame = scores_frame(self.scores.values())
        frame.insert(1, "hook", [f"blocks.{int(l)}.hook_resid_post" for l in frame["layer"]])
        frame.insert(2, "safety_layer", frame["layer"].isin(self.safety_layers))
        for column in COUNT_COLUMNS:
            if column in self.counts:
                frame[column] = [self.counts[column][int(l)] for l in frame["layer"]]
        return frame

    def summary(self) -> dict:
        """The ``layers.json`` record (all layer indices are 0-based block indices)."""
        return {
            "safety_layers": self.safety_layers,
            "safety_layer_rule": self.rule,
            "n_layers": self.n_layers,
            "layer_convention": LAYER_CONVENTION,
            "settings": self.settings,
            "refusal_tokens": self.refusal_tokens.summary(),
            "harmful_pairs": self.harmful_index,
            "benign_pairs": self.benign_index,
            "support": self.support,
            "notes": self.notes,
            "warnings": self.warnings,
            **self.locators,
            "scores": {name: {"description": s.description,
                              "per_layer": dict(zip(map(str, s.layers), np.round(s.mean, 6).tolist()))}
                       for name, s in self.scores.items()},
        }

    def save(self, out_dir: str | Path, figures: bool = False, *, run: dict | None = None) -> list[Path]:
        """Write the run folder ``probe-layers --out`` writes, atomically; returns the paths.

        ``states.safetensors``, ``measurements.safetensors`` and ``measurements.json`` when :func:`analyze` was given
        them (a file of the same run key already there is kept, not written again), ``layers.csv``, ``layers.json``,
        ``run.json`` (``run``, or :meth:`run_record`) and with ``figures`` every figure in ``figures/`` (PDF, PNG,
        HTML and the one ``plotly.min.js``).
        """
        out_dir = Path(out_dir)
        paths = []
        if self.states is not None:
            path = out_dir / "states.safetensors"
            paths.append(path if _same_run(path, self.states.metadata.get("run_key")) else self.states.save(path))
        if self.measurements is not None:
            kept = _same_run(out_dir / "measurements.safetensors", self.measurements.run_key) and \
                _same_run(out_dir / "measurements.json", self.measurements.run_key)
            if not kept:
                self.measurements.save(out_dir)
            paths += [out_dir / "measurements.safetensors", out_dir / "measurements.json"]
        paths.append(write_atomic(out_dir / "layers.csv", lambda p: self.frame().to_csv(p, index=False)))
        paths.append(write_json(out_dir / "layers.json", self.summary()))
        if figures:
            from safety_probe.viz.layers import draw_all  # results draw themselves (module docstring)

            paths += draw_all(self, out_dir / "figures")
        paths.append(write_json(out_dir / "run.json", self.run_record() if run is None else run))
        return paths

    def run_record(self) -> dict:
        """The ``run.json`` of a result saved from Python: the model, the pairs, the measure and locate settings and
        the package versions (the command line writes its own, with its command and timing)."""
        meta = self.states.metadata if self.states is not None else {}
        measured = self.measurements.settings if self.measurements is not None else {}
        options = {k: v for k, v in measured.items() if k not in ("prompts", "seconds")}  # seconds: not a setting
        return {"config": {"model": meta.get("model"), "prompts": measured.get("prompts"),
                           "analysis": {"measure": options or None,
                                        "locate": self.settings}},
                "command": "python: LayerAnalysis.save", "versions": package_versions(),
                "n_pairs": None if self.states is None else int(self.states.image_mean.shape[0]),
                "layers": None if self.states is None else self.states.layers, "model_family": meta.get("model_family"),
                "n_layers": self.n_layers, "prompts": measured.get("prompts"), "run_key": meta.get("run_key")}

    def plot_locate(self, backend: Backend = "matplotlib") -> Figure | go.Figure:
        """Where refusal appears (logit-lens P(refusal); the share of refused and benign text runs where K rises the
        most; the Algorithm-1 histogram), each panel's n in its legend."""
        return self._figure("locate", backend)

    def plot_shift(self, backend: Backend = "matplotlib") -> Figure | go.Figure:
        """The semantic shift per layer: cosines with their baselines, CKA and debiased CKA each against its own null."""
        return self._figure("shift", backend)

    def plot_patching(self, backend: Backend = "matplotlib") -> Figure | go.Figure:
        """The gain in the image run's P(refusal) from caption patching and tail patching, per layer."""
        return self._figure("patching", backend)

    def plot_locators(self, backend: Backend = "matplotlib") -> Figure | go.Figure:
        """Every locator side by side on one absolute colour scale."""
        return self._figure("locators", backend)

    def plot_last_token(self, backend: Backend = "matplotlib") -> Figure | go.Figure:
        """Cosine of the last prompt position, image run vs text run, per layer."""
        return self._figure("last_token", backend)

    def _figure(self, stem: str, backend: Backend) -> Figure | go.Figure:
        from safety_probe.viz.layers import result_figure  # results draw themselves (module docstring)

        return result_figure(self, stem, backend)

    @classmethod
    def load(cls, run_dir: str | Path) -> LayerAnalysis:
        """The result saved in ``run_dir`` (``layers.json`` and ``layers.csv``); a missing, empty, truncated or
        malformed file is an InputError naming it and the row or key at fault."""
        run_dir = Path(run_dir)
        json_path, csv_path = run_dir / "layers.json", run_dir / "layers.csv"
        meta = read_json(json_path, "layers.json (the safety layers beside layers.csv)")
        _check_meta(meta, json_path)
        frame = read_layers_csv(csv_path)
        if isinstance(meta.get("n_layers"), int) and len(frame) != meta["n_layers"]:
            raise InputError(f"{csv_path}: {len(frame)} layer rows, but {json_path.name} says n_layers "
                             f"{meta['n_layers']} (truncated?)")
        described = meta.get("scores") if isinstance(meta.get("scores"), dict) else {}
        columns = set(frame.columns)
        names = [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean")  # in the table's order
                 and {c[: -len("_mean")] + "_lower", c[: -len("_mean")] + "_upper"} <= columns]
        scores = {n: LayerScores.from_frame(frame, n, (described.get(n) or {}).get("description", "")) for n in names}
        tokens = meta.get("refusal_tokens")
        try:
            k = RefusalTokens.from_summary(tokens) if tokens else RefusalTokens({}, "unknown")
        except (KeyError, TypeError, AttributeError, ValueError):
            raise InputError(f"{json_path}: malformed 'refusal_tokens'") from None
        known = {"safety_layers", "safety_layer_rule", "n_layers", "layer_convention", "settings", "refusal_tokens",
                 "harmful_pairs", "benign_pairs", "support", "notes", "warnings", "scores"}
        return cls(
            n_layers=int(meta.get("n_layers") or len(frame)), safety_layers=list(meta["safety_layers"]),
            rule=str(meta.get("safety_layer_rule", "default")), scores=scores, refusal_tokens=k,
            harmful_index=list(meta.get("harmful_pairs") or []), benign_index=list(meta.get("benign_pairs") or []),
            support=dict(meta.get("support") or {}), locators={k: v for k, v in meta.items() if k not in known},
            counts={c: [int(v) for v in frame[c]] for c in COUNT_COLUMNS if c in frame},
            settings=dict(meta.get("settings") or {}), notes=list(meta.get("notes") or []),
            warnings=list(meta.get("warnings") or []))


def _same_run(path: Path, key: str | None) -> bool:
    """Whether ``path`` holds the output of run ``key`` already (its run key: the safetensors metadata or the JSON's)."""
    if key is None or not path.is_file():
        return False
    if path.suffix == ".json":
        try:
            stored = read_json(path, "run record")
        except InputError:
            return False
        return isinstance(stored, dict) and stored.get("run_key") == key
    return tensors_metadata(path).get("run_key") == key


def _short_repr(head: str, warnings: list[str]) -> str:
    """``head`` and the warnings under it, each cut to one line, the whole at most :data:`REPR_CHARS` characters."""
    lines = [head]
    for i, warning in enumerate(warnings):
        line = f"  warning: {warning if len(warning) <= 160 else warning[:157] + '...'}"
        more = f"  ... and {len(warnings) - i} more warning(s)"
        if sum(map(len, lines)) + len(lines) + len(line) + len(more) + 1 > REPR_CHARS:
            lines.append(more)
            break
        lines.append(line)
    return "\n".join(lines)[:REPR_CHARS]


def _html(head: str, warnings: list[str], body: str) -> str:
    """A result in Jupyter: its headline, its warnings, then ``body`` (an HTML table)."""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
    return (f"<p><b>{html.escape(head)}</b></p>" + (f"<p>warnings:</p><ul>{items}</ul>" if items else "") + body)


def _check_meta(meta: object, path: Path) -> None:
    """InputError naming ``path`` and the key at fault unless ``meta`` has the shape of a layers.json."""
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


def read_layers_csv(path: Path) -> pd.DataFrame:
    """The per-layer table ``layers.csv``, checked row by row (one row per block, numeric score columns)."""
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
