"""What probe-layers learns per layer (:class:`LayerAnalysis`) and the one owner of its files, ``layers.json`` and
``layers.csv``: written by :meth:`LayerAnalysis.save`, read back and checked by :meth:`LayerAnalysis.load`.

    >>> result = analyze(states, measurements)
    >>> result.safety_layers, result.frame()        # block indices; one row per layer, every metric
    >>> result.save("runs/llava")                   # layers.json + layers.csv
    >>> LayerAnalysis.load("runs/llava").safety_layers
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from safety_probe.analysis.scores import LayerScores, scores_frame
from safety_probe.core.errors import InputError
from safety_probe.core.files import read_json, read_text, write_atomic, write_json
from safety_probe.probe.refusal import RefusalTokens

LAYER_CONVENTION = "layer l = output of decoder block l (0-based) = TransformerLens blocks.{l}.hook_resid_post"
#: Per-layer count columns of layers.csv: pairs whose Algorithm-1 layer is the row's block.
COUNT_COLUMNS = ("alg1_count", "alg1_benign_count")


@dataclass
class LayerAnalysis:
    """Everything probe-layers learns per layer: the safety layers, every per-layer score with its band, and the
    per-pair locator records.

    ``scores``: metric name → :class:`~safety_probe.analysis.scores.LayerScores` (per-pair values only right after
    :func:`~safety_probe.analysis.analyze.analyze`; a loaded result has means and bands). ``locators``: the
    per-pair records of ``layers.json`` (``algorithm1``, ``histogram``, ``decision``, ``released_code``,
    ``text_run_refusal``). ``counts``: the per-layer count columns of ``layers.csv``. ``support``: how many harmful,
    benign and refusing pairs the numbers rest on. ``warnings``: what was asked for but skipped or is unreliable.
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

    def __repr__(self) -> str:
        k = self.refusal_tokens.label() or "-"
        warned = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (f"LayerAnalysis({self.support.get('harmful', len(self.harmful_index))} harmful / "
                f"{self.support.get('benign', len(self.benign_index))} benign pairs, {self.n_layers} blocks; "
                f"safety layers {self.safety_layers} (rule {self.rule}, {self.support.get('refusing', 0)} refusing); "
                f"K = {k}{warned})")

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

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``layers.json`` and ``layers.csv`` atomically."""
        out_dir = Path(out_dir)
        csv_path = write_atomic(out_dir / "layers.csv", lambda p: self.frame().to_csv(p, index=False))
        return write_json(out_dir / "layers.json", self.summary()), csv_path

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
