"""The recording measurement's tables: rich tables on the console (``python -m speed.run``) and the Markdown of
docs/speed.md (``python -m speed.report``), both from a results dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
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
        t = Table(
            title=f"{label}: time ÷ bare forward (median of per-round ratios){tl_note}", title_justify="left"
        )
        for col in ("run", "B", "T", "forward ms", *methods[1:]):
            t.add_column(col, justify="right")
        for c in res["cases"]:
            cells = []
            for m in methods[1:]:
                r = c["ratio_to_forward"][m]
                style = ("green" if r <= TARGET else "red") if m == "record" else ""  # the target is the default's
                cells.append(f"[{style}]{r:.3f}[/]" if style else f"{r:.3f}")
            t.add_row(
                c["run"], str(c["batch_size"]), str(c["seq_len"]), f"{c['median_ms']['forward']:.1f}", *cells
            )
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


def markdown(results: dict[str, Any]) -> str:
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
            f"### {label}: {res['n_layers']} blocks, d={res['d_model']}, {res['n_params'] / 1e6:.1f} M parameters{note}",
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
        "### Summary",
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


