"""The evaluation suite: DSR and benign over-refusal per benchmark, attack variant and scene, with Wilson intervals.

    >>> result = evaluate(vlm, load_pairs("pairs.jsonl"))
    >>> table = benchmark_table(result.rows)            # metrics.json "benchmarks"
    >>> table["mmsafetybench"]["variants"]["SD_TYPO"]["all"]["image_dsr"]
    {'k': 12, 'n': 40, 'share': 0.3, 'lower': 0.1807, 'upper': 0.4543}
    >>> write_metrics_csv(metrics, "eval-out/metrics.csv")   # one row per benchmark x variant x scene

A row's benchmark is its ``benchmark`` field (every reader of :mod:`safety_probe.data.benchmarks` sets it;
rows that name none are grouped as :data:`NO_BENCHMARK`). Within a benchmark, the field of
:data:`VARIANT_FIELDS` (``attack`` for any other) splits it into attack variants when it takes two or more
values: MM-SafetyBench's SD / TYPO / SD_TYPO images, JailBreakV's formats (its ``figstep`` typographic
attack among them), VLGuard's subsets, MOSSBench's splits. FigStep is its own benchmark, so the typographic
attack is always a row of its own.
As a variant, ``all`` is the whole benchmark; as a scene, the whole variant. DSR uses :func:`defended`, the one
definition of a defended response; over-refusal is the refused share of benign rows, as in :func:`summarize`.
The headline is DSR where a group has harmful rows, and benign over-refusal where every labelled row is
benign (MOSSBench's oversensitivity split).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from safety_probe.analysis.scores import share_with_interval
from safety_probe.core.files import write_atomic
from safety_probe.eval.evaluate import defended

#: Per benchmark, the row field naming its variant (``attack`` for every other benchmark): MM-SafetyBench's image
#: types, JailBreakV's attack formats, VLGuard's evaluation subsets, MOSSBench's oversensitivity / contrast splits.
VARIANT_FIELDS = {"mmsafetybench": "image_type", "jailbreakv": "attack", "vlguard": "subset", "mossbench": "subset"}
NO_BENCHMARK = "pairs"
ALL = "all"
RUNS = ("text", "image")
MEASURES = ("dsr", "benign_refusal")


def headline(rows: list[dict]) -> str | None:
    """``dsr`` when ``rows`` hold harmful pairs, ``over_refusal`` when every labelled one is benign, else None."""
    labels = {r.get("label") for r in rows}
    if "harmful" in labels:
        return "dsr"
    return "over_refusal" if "benign" in labels else None


def cell(rows: list[dict]) -> dict:
    """Counts, the :func:`headline`, and per run DSR (harmful rows defended) and benign over-refusal (benign rows
    refused), each as ``{"k", "n", "share", "lower", "upper"}`` with its Wilson 95% interval."""
    harmful = [r for r in rows if r.get("label") == "harmful"]
    benign = [r for r in rows if r.get("label") == "benign"]
    out: dict = {"n": len(rows), "n_harmful": len(harmful), "n_benign": len(benign), "headline": headline(rows)}
    for run in RUNS:
        out[f"{run}_dsr"] = share_with_interval(sum(defended(r, run) for r in harmful), len(harmful))
        out[f"{run}_benign_refusal"] = share_with_interval(sum(bool(r[f"{run}_refused"]) for r in benign), len(benign))
    return out


def _by(rows: list[dict], key) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return dict(sorted(groups.items()))


def _scenes(rows: list[dict]) -> dict[str, dict]:
    return {ALL: cell(rows), **{s: cell(rs) for s, rs in _by(rows, lambda r: r.get("scene") or "unlabelled").items()}}


def benchmark_table(rows: list[dict]) -> dict:
    """The ``benchmarks`` record of judged rows: per benchmark its ``headline``, ``variant_field`` and
    ``variants`` (``all`` first, then each attack variant), each a dict scene -> :func:`cell` (``all`` first)."""
    table = {}
    for name, group in _by(rows, lambda r: r.get("benchmark") or NO_BENCHMARK).items():
        field = VARIANT_FIELDS.get(name, "attack")
        split = _by([r for r in group if r.get(field) is not None], lambda r, f=field: str(r[f]))
        variants = {ALL: group, **(split if len(split) > 1 else {})}
        table[name] = {"headline": headline(group), "variant_field": field if len(split) > 1 else None,
                       "variants": {v: _scenes(rs) for v, rs in variants.items()}}
    return table


def table_frame(table: dict, **tags: str | None) -> pd.DataFrame:
    """:func:`benchmark_table` flat: one row per benchmark x variant x scene, each measure's share, k and Wilson
    bounds (``{run}_{measure}``, ``_k``, ``_lower``, ``_upper``), then one column per ``tags`` item (e.g. judge)."""
    records = []
    for name, entry in table.items():
        for variant, scenes in entry["variants"].items():
            for scene, c in scenes.items():
                record = {"benchmark": name, "variant": variant, "scene": scene, "headline": c["headline"],
                          "n": c["n"], "n_harmful": c["n_harmful"], "n_benign": c["n_benign"]}
                for measure in MEASURES:
                    for run in RUNS:
                        share = c[f"{run}_{measure}"]
                        key = f"{run}_{measure}"
                        record.update({key: share["share"], f"{key}_k": share["k"],
                                       f"{key}_lower": share["lower"], f"{key}_upper": share["upper"]})
                records.append({**record, **tags})
    return pd.DataFrame(records)


def write_metrics_csv(metrics: dict, path: str | Path) -> Path:
    """Write ``metrics["benchmarks"]`` as ``metrics.csv`` (:func:`table_frame`), tagged with the judge and text run."""
    frame = table_frame(metrics["benchmarks"], judge=metrics.get("judge"), text_run=metrics.get("text_run"))
    return write_atomic(path, lambda p: frame.to_csv(p, index=False))
