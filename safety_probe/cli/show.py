"""What the commands print for people: per-layer and per-benchmark tables that keep every column, also in a log.

On a terminal the tables fit its width; when the output goes to a file or a pipe (a log, CI) they are written at
their full width, so no column or number is cut short.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from safety_probe.analysis.results import LayerAnalysis

#: Columns of the per-layer table: layers.csv column -> heading.
LAYER_COLUMNS = {"refusal_prob_mean": "P(refuse)", "fires_refused_mean": "fires: refused",
                 "fires_answered_harmful_mean": "answered", "fires_benign_mean": "benign",
                 "contrast_lower": "contrast (low)", "patching_gain_mean": "patch",
                 "tail_patching_gain_mean": "tail patch", "cos_matched_mean": "cos", "cos_gap_mean": "cos gap",
                 "cos_tail_mean": "cos tail", "cka_debiased_mean": "CKA (deb.)"}


def console() -> Console:
    """A rich console at the terminal's width, or unlimited width when the output is not a terminal."""
    return Console() if sys.stdout.isatty() else Console(width=100_000, soft_wrap=True)


def print_layers(result: LayerAnalysis) -> None:
    """The per-layer table of a probe-layers result, safety layers starred, then the band and K in words."""
    frame = result.frame()
    cols = [c for c in LAYER_COLUMNS if c in frame]
    table = Table(title="per-layer results (* = safety layer)")
    table.add_column("layer", justify="right", no_wrap=True)
    for c in cols:
        table.add_column(LAYER_COLUMNS[c], justify="right", no_wrap=True)
    for _, row in frame.iterrows():
        mark = "*" if row["safety_layer"] else ""
        table.add_row(f"{mark}{int(row['layer'])}",
                      *(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    out = console()
    out.print(table)
    test = result.settings.get("test", "")
    out.print(f"safety layers: {result.safety_layers}  (test: {test}, rule: {result.rule}; "
              f"{result.support.get('refused', result.refusing)} refused / {result.support.get('answered', 0)} "
              f"answered text runs; tokens K ({result.refusal_tokens.source}): {result.refusal_tokens.label()})",
              soft_wrap=True)


def print_metrics(metrics: dict) -> None:
    """The evaluation's table per scene, then per benchmark and variant with Wilson intervals."""
    keys = ("text_dsr", "image_dsr", "text_benign_refusal", "image_benign_refusal", "image_task_accuracy",
            "image_harmful_recognition")
    table = Table(title=f"judge: {metrics['judge']}")
    table.add_column("scene")
    for k in ("n", *keys):
        table.add_column(k, justify="right")
    groups = {"overall": metrics["overall"], **metrics["per_scene"]}
    for scene, m in groups.items():
        table.add_row(scene, str(m["n_pairs"]), *("-" if m[k] is None else f"{m[k]:.3f}" for k in keys))
    console().print(table)
    shares = ("text_dsr", "image_dsr", "text_benign_refusal", "image_benign_refusal")
    suite = Table(title=f"per benchmark and variant, Wilson 95% (per scene: metrics.csv); text run: "
                        f"{metrics['text_run']}")
    for column in ("benchmark", "variant", "headline", "n", *shares):
        suite.add_column(column, justify="right" if column == "n" or column in shares else "left")
    for name, entry in metrics["benchmarks"].items():
        for variant, scenes in entry["variants"].items():
            c = scenes["all"]
            suite.add_row(name, variant, str(c["headline"]), str(c["n"]), *("-" if c[k]["share"] is None else
                          f"{c[k]['share']:.3f} [{c[k]['lower']:.2f}, {c[k]['upper']:.2f}]" for k in shares))
    console().print(suite)
    if metrics["judges"]["harm"]:
        m = metrics["overall"]
        print(f"unreadable guard verdicts: text {m['text_harm_unparsed']}, image {m['image_harm_unparsed']}")
