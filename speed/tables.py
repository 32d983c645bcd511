"""The speed harness's tables, from the records of the results file (:mod:`speed.results`): the table of ratios
``make bench`` ends with (:func:`ratio_rows`), the recording measurement's rich tables on the console (``python -m
speed.run``), and the Markdown of docs/speed.md (``python -m speed.report``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.05  # recording all layers should cost at most this multiple of the bare forward


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_tables(results: dict[str, Any], console) -> None:
    from rich.table import Table

    for label, res in results["models"].items():
        methods = list(res["cases"][0]["median_ms"])
        tl_note = "" if res["tl_mode"] == "bridge" else f"  [yellow]{res['tl_mode']}[/]"
        t = Table(title=f"{label}: time ÷ bare forward (median of per-round ratios){tl_note}", title_justify="left")
        for col in ("run", "B", "T", "forward ms", *methods[1:]):
            t.add_column(col, justify="right")
        for c in res["cases"]:
            cells = []
            for m in methods[1:]:
                r = c["ratio_to_forward"][m]
                style = ("green" if r <= TARGET else "red") if m == "record" else ""  # the target is the default's
                cells.append(f"[{style}]{r:.3f}[/]" if style else f"{r:.3f}")
            t.add_row(c["run"], str(c["batch_size"]), str(c["seq_len"]), f"{c['median_ms']['forward']:.1f}", *cells)
        console.print(t)
        t = Table(
            title=f"{label}: peak memory above baseline, MiB ({res['cases'][0]['memory_how']})",
            title_justify="left",
        )
        for col in ("run", "B", "T", *methods):
            t.add_column(col, justify="right")
        for c in res["cases"]:
            t.add_row(
                c["run"],
                str(c["batch_size"]),
                str(c["seq_len"]),
                *(f"{c['peak_mb'][m]:.1f}" for m in methods),
            )
        console.print(t)
    t = Table(title="summary", title_justify="left")
    for col in (
        "model",
        "record ÷ forward (worst)",
        "by backend (worst)",
        "record ÷ trunk (worst)",
        "RSS first → last MiB (batches)",
        "slope KiB/batch",
        "settled Δ KiB/batch",
        "flat",
        "bytes/pair (T_img)",
        "full cache bytes/pair",
        "bytes equal",
    ):
        t.add_column(col, justify="right")
    for label, res in results["models"].items():
        leak, bpp = res["leak"], res["bytes_per_pair"]
        r = res["record_over_forward"]
        t.add_row(
            label,
            f"[{'green' if r <= TARGET else 'red'}]{r:.3f}[/]",
            by_backend(res),
            f"{res.get('record_over_trunk', float('nan')):.3f}",
            f"{leak['first_mb']:.1f} → {leak['last_mb']:.1f} ({leak['batches']})",
            f"{leak['slope_kb_per_batch']:.1f}",
            f"{leak['settled_growth_kb_per_batch']:.2f}",
            "yes" if leak["flat"] else "[red]NO[/]",
            ", ".join(f"{fmt_bytes(row['bytes_per_pair'])} ({row['seq_image']})" for row in bpp["rows"]),
            ", ".join(fmt_bytes(row["full_cache_bytes_per_pair"]) for row in bpp["rows"]),
            "yes" if bpp["independent_of_seq_len"] else "[red]NO[/]",
        )
    console.print(t)


def by_backend(res: dict[str, Any]) -> str:
    """``hooks 0.98, nnsight 1.15, ...``: each backend's worst ratio to the bare forward."""
    return ", ".join(f"{b} {r:.3f}" for b, r in res.get("record_over_forward_by_backend", {}).items())


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def recording_markdown(results: dict[str, Any]) -> str:
    """The Markdown of the ``recording`` record."""
    meta = results["meta"]
    out = [
        f"Measured {meta['date_utc']} on {meta['device']} ({meta['cpu_count']} cores, "
        f"{meta['torch_threads']} torch thread(s), {meta['dtype']}); load average "
        f"{meta['load_avg_start'][0]:.1f} → {meta['load_avg_end'][0]:.1f}; whole run {meta['wall_s']:.0f} s. "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        "",
    ]
    for label, res in results["models"].items():
        methods = list(res["cases"][0]["median_ms"])
        note = "" if res["tl_mode"] == "bridge" else f" — **{res['tl_mode']}**"
        out += [
            f"#### {label}: {res['n_layers']} blocks, d={res['d_model']}, {res['n_params'] / 1e6:.1f} M parameters{note}",
            "",
            f"Notes: {'; '.join(res['notes'])}.",
            "",
            f"Time ÷ bare forward (median of per-round ratios; `record` = the default backend, "
            f"{res.get('default_backend', 'nnsight')}; bold: `record` above the 1.05 target):",
            "",
            _row(["run", "B", "T", "rounds", "forward ms", *methods[1:]]),
            _row(["---"] * (len(methods) + 4)),
        ]
        for c in res["cases"]:
            cells = []
            for m in methods[1:]:
                r = c["ratio_to_forward"][m]
                cells.append(f"**{r:.3f}**" if m == "record" and r > TARGET else f"{r:.3f}")
            out.append(
                _row([c["run"], str(c["batch_size"]), str(c["seq_len"]), str(c["rounds"]),
                      f"{c['median_ms']['forward']:.1f}", *cells])
            )  # fmt: skip
        out += [
            "",
            f"Peak memory above baseline, MiB ({res['cases'][0]['memory_how']}):",
            "",
            _row(["run", "B", "T", *methods]),
            _row(["---"] * (len(methods) + 3)),
        ]
        for c in res["cases"]:
            out.append(_row([c["run"], str(c["batch_size"]), str(c["seq_len"]),
                             *(f"{c['peak_mb'][m]:.1f}" for m in methods)]))  # fmt: skip
        out.append("")
    out += [
        "#### Summary",
        "",
        _row(["model", "record ÷ forward (worst / median)", "by backend (worst)", "record ÷ trunk (worst)",
              "RSS first → last MiB", "raw slope KiB/batch", "settled Δ KiB/batch", "live objects Δ", "flat",
              "bytes/pair at T_img", "full-cache bytes/pair"]),
        _row(["---"] * 11),
    ]  # fmt: skip
    for label, res in results["models"].items():
        leak, rows = res["leak"], res["bytes_per_pair"]["rows"]
        out.append(
            _row([
                label,
                f"{res['record_over_forward']:.3f} / {res['record_over_forward_median']:.3f}",
                by_backend(res),
                f"{res.get('record_over_trunk', float('nan')):.3f}",
                f"{leak['first_mb']:.1f} → {leak['last_mb']:.1f} ({leak['batches']} batches)",
                f"{leak['slope_kb_per_batch']:.1f}",
                f"{leak['settled_growth_kb_per_batch']:.2f}",
                f"{leak['live_objects_after'] - leak['live_objects_before']:+d}",
                "yes" if leak["flat"] else "**no**",
                ", ".join(f"{fmt_bytes(r['bytes_per_pair'])} at {r['seq_image']}" for r in rows),
                ", ".join(fmt_bytes(r["full_cache_bytes_per_pair"]) for r in rows),
            ])
        )  # fmt: skip
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Side by side with the baseline: probe-layers and the TGA step
# ---------------------------------------------------------------------------------------------------------


def _seconds(x: float) -> str:
    return f"{x:.1f} s" if x >= 1 else f"{x * 1e3:.0f} ms"


def ratio_rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per ratio of the results file: [what, model, ratio, old, new, note]. probe-layers and TGA steps are
    this checkout ÷ the baseline; recording is ÷ the bare forward (worst case, target ≤ 1.05)."""
    rows = []
    for model, c in results.get("probe_layers", {}).get("cases", {}).items():
        same = (
            "same safety layers"
            if c["same_safety_layers"]
            else f"LAYERS DIFFER {c['safety_layers_old']} / {c['safety_layers_new']}"
        )
        rows.append(
            [
                "probe-layers end to end",
                model,
                f"{c['new_over_old']:.3f}",
                _seconds(c["median_s"]["old"]),
                _seconds(c["median_s"]["new"]),
                f"{same}, max |Δ layers.csv| {c['max_abs_diff_layers_csv']:.1e}",
            ]
        )
    for model, c in results.get("tga_step", {}).get("cases", {}).items():
        for row in c["rows"]:
            old = row["step_s"].get("old")
            note = "" if row["compared_with"] == row["variant"] else f"÷ the baseline's {row['compared_with']} step"
            rows.append(
                [
                    f"TGA step: {row['variant']}",
                    model,
                    f"{row['new_over_old']:.3f}",
                    _seconds(old) if old is not None else "",
                    _seconds(row["step_s"]["new"]),
                    note,
                ]
            )
    for model, res in results.get("recording", {}).get("models", {}).items():
        rows.append(
            ["record ÷ bare forward (worst)", model, f"{res['record_over_forward']:.3f}", "", "", f"target ≤ {TARGET}"]
        )
    return rows


RATIO_HEADER = ["what", "model", "ratio", "old", "new", "note"]


def print_ratios(results: dict[str, Any], console) -> None:
    """The table of ratios ``make bench`` ends with."""
    from rich.table import Table

    t = Table(
        title="speed: this checkout ÷ the baseline, recording ÷ the bare forward (medians of per-round ratios)",
        title_justify="left",
    )
    for col in RATIO_HEADER:
        t.add_column(col, justify="left" if col in ("what", "model", "note") else "right")
    for row in ratio_rows(results):
        t.add_row(*row)
    console.print(t)


def _meta_line(meta: dict[str, Any]) -> str:
    return (
        f"measured {meta['date_utc']} ({meta['cpu_count']} cores, {meta['threads']} thread; load average "
        f"{meta['load_avg_start'][0]:.1f} → {meta['load_avg_end'][0]:.1f}; {meta['wall_s'] / 60:.0f} min), "
        f"baseline `{meta['baseline']}` ({meta['old']}) against `{meta['new']}`; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + "."
    )


def ratios_markdown(results: dict[str, Any]) -> str:
    """The table of ratios (:func:`ratio_rows`) as Markdown."""
    rows = [_row(RATIO_HEADER), _row(["---"] * len(RATIO_HEADER)), *(_row(r) for r in ratio_rows(results))]
    return "\n".join(rows) + "\n"


def probe_markdown(record: dict[str, Any]) -> str:
    """The Markdown of the ``probe_layers`` record: wall times, ratios and checks; this checkout's phases."""
    phases = list(next(iter(record["cases"].values()))["new_phases_s"])
    out = [
        *(f"- {model}: {_meta_line(c['meta'])}" for model, c in record["cases"].items()),
        "",
        _row(
            [
                "model",
                "pairs (patched)",
                "rounds",
                "old s",
                "new s",
                "new ÷ old",
                "same layers",
                "max abs Δ layers.csv",
                *(f"{p} s" for p in phases),
                "rest s",
            ]
        ),
        _row(["---"] * (9 + len(phases))),
    ]
    for model, c in record["cases"].items():
        out.append(
            _row(
                [
                    model,
                    f"{c['case']['n']} ({c['case']['patch_pairs']})",
                    str(c["rounds"]),
                    f"{c['median_s']['old']:.1f}",
                    f"{c['median_s']['new']:.1f}",
                    f"{c['new_over_old']:.3f}",
                    "yes" if c["same_safety_layers"] else "**no**",
                    f"{c['max_abs_diff_layers_csv']:.1e}",
                    *(f"{c['new_phases_s'][p]:.1f}" for p in phases),
                    f"{c['new_rest_s']:.1f}",
                ]
            )
        )
    return "\n".join(out) + "\n"


def tga_markdown(record: dict[str, Any]) -> str:
    """The Markdown of the ``tga_step`` record: step times and ratios per model and variant."""
    out = [
        *(f"- {model}: {_meta_line(c['meta'])}" for model, c in record["cases"].items()),
        "",
        _row(["model", "variant", "rounds", "old step", "new step", "new ÷ old", "compared with"]),
        _row(["---"] * 7),
    ]
    for model, c in record["cases"].items():
        for row in c["rows"]:
            old = row["step_s"].get("old")
            out.append(
                _row(
                    [
                        model,
                        row["variant"],
                        str(c["rounds"]),
                        _seconds(old) if old is not None else "",
                        _seconds(row["step_s"]["new"]),
                        f"**{row['new_over_old']:.3f}**",
                        f"the baseline's {row['compared_with']}",
                    ]
                )
            )
    return "\n".join(out) + "\n"


def markdown(results: dict[str, Any]) -> str:
    """The Markdown of every record of a results file, with the table of ratios first."""
    out = ["### Ratios", "", ratios_markdown(results)]
    if "probe_layers" in results:
        out += ["### probe-layers end to end", "", probe_markdown(results["probe_layers"])]
    if "tga_step" in results:
        out += ["### TGA step", "", tga_markdown(results["tga_step"])]
    if "recording" in results:
        out += ["### Recording every block", "", recording_markdown(results["recording"])]
    return "\n".join(out)


def _rendered(part: Callable[[dict[str, Any]], str]) -> Callable[[list[str]], str]:
    """A renderer of experiments/render_tables.py: ``part`` of the results file named first in its sources."""
    return lambda sources: part(json.loads((ROOT / sources[0]).read_text()))


RESULTS = "speed/results.json"
TABLES = {
    "speed_ratios": ([RESULTS], _rendered(ratios_markdown)),
    "speed_probe": ([RESULTS], _rendered(lambda r: probe_markdown(r["probe_layers"]))),
    "speed_tga": ([RESULTS], _rendered(lambda r: tga_markdown(r["tga_step"]))),
    "speed_recording": ([RESULTS], _rendered(lambda r: recording_markdown(r["recording"]))),
}
"""docs/speed.md's tables by name, rendered from the committed results file (``make docs-check``)."""
