"""What the commands print for people: per-layer and per-benchmark tables that keep every column, also in a log.

On a terminal the tables fit its width; when the output goes to a file or a pipe (a log, CI) they are written at
their full width, so no column or number is cut short.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from safety_probe.analysis.results import LAYER_COLUMNS, LayerAnalysis


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


#: The metrics of the evaluation tables, in their order.
METRIC_KEYS = ("text_dsr", "image_dsr", "text_benign_refusal", "image_benign_refusal", "image_task_accuracy",
               "image_harmful_recognition")


def print_metrics(metrics: dict) -> None:
    """The evaluation's table per scene, then per benchmark and variant with Wilson intervals."""
    table = Table(title=f"judge: {metrics['judge']}")
    table.add_column("scene")
    for k in ("n", *METRIC_KEYS):
        table.add_column(k, justify="right")
    groups = {"overall": metrics["overall"], **metrics["per_scene"]}
    for scene, m in groups.items():
        table.add_row(scene, str(m["n_pairs"]), *("-" if m[k] is None else f"{m[k]:.3f}" for k in METRIC_KEYS))
    console().print(table)
    print_benchmarks(metrics)
    if metrics["judges"]["harm"]:
        m = metrics["overall"]
        print(f"unreadable guard verdicts: text {m['text_harm_unparsed']}, image {m['image_harm_unparsed']}")


def print_benchmarks(metrics: dict, what: str = "") -> None:
    """The per-benchmark and per-variant table of ``metrics["benchmarks"]`` with Wilson 95% intervals."""
    shares = ("text_dsr", "image_dsr", "text_benign_refusal", "image_benign_refusal")
    suite = Table(title=f"{what}per benchmark and variant, Wilson 95% (per scene: metrics.csv); text run: "
                        f"{metrics['text_run']}")
    for column in ("benchmark", "variant", "headline", "n", *shares):
        suite.add_column(column, justify="right" if column == "n" or column in shares else "left")
    for name, entry in metrics["benchmarks"].items():
        for variant, scenes in entry["variants"].items():
            c = scenes["all"]
            suite.add_row(name, variant, str(c["headline"]), str(c["n"]), *("-" if c[k]["share"] is None else
                          f"{c[k]['share']:.3f} [{c[k]['lower']:.2f}, {c[k]['upper']:.2f}]" for k in shares))
    console().print(suite)


def print_comparison(plain: dict, defended: dict, name: str) -> None:
    """The undefended and the defended model's metrics on the same pairs side by side, with the difference (defended
    − plain), overall and per scene; a metric neither run has (no such pairs) is left out."""
    table = Table(title=f"plain vs {name} (judge: {defended['judge']})")
    for column in ("scene", "n", "metric", "plain", name, "difference"):
        table.add_column(column, justify="left" if column in ("scene", "metric") else "right", no_wrap=True)
    groups = {"overall": (plain["overall"], defended["overall"]),
              **{s: (plain["per_scene"].get(s, {}), m) for s, m in defended["per_scene"].items()}}
    for scene, (before, after) in groups.items():
        rows = [(k, before.get(k), after.get(k)) for k in METRIC_KEYS
                if before.get(k) is not None or after.get(k) is not None]
        for i, (k, a, b) in enumerate(rows):
            diff = "-" if a is None or b is None else f"{b - a:+.3f}"
            table.add_row(scene if i == 0 else "", str(after["n_pairs"]) if i == 0 else "", k,
                          "-" if a is None else f"{a:.3f}", "-" if b is None else f"{b:.3f}", diff,
                          end_section=i == len(rows) - 1)
    console().print(table)
