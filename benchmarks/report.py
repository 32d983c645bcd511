"""Render ``benchmarks/results.json`` as the Markdown tables of docs/benchmarks.md.

python -m benchmarks.report [benchmarks/results.json] > tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.run import DEFAULT_OUT, TARGET, _fmt_bytes


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
            "Time ÷ bare forward (median of per-round ratios; bold: `record` above the 1.05 target):",
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
        _row(["model", "record ÷ forward (worst / median)", "record ÷ trunk (worst)", "RSS first → last MiB",
              "raw slope KiB/batch", "settled Δ KiB/batch", "live objects Δ", "flat", "bytes/pair at T_img",
              "full-cache bytes/pair"]),
        _row(["---"] * 10),
    ]  # fmt: skip
    for label, res in results["models"].items():
        leak, rows = res["leak"], res["bytes_per_pair"]["rows"]
        out.append(
            _row([
                label,
                f"{res['record_over_forward']:.3f} / {res['record_over_forward_median']:.3f}",
                f"{res.get('record_over_trunk', float('nan')):.3f}",
                f"{leak['first_mb']:.1f} → {leak['last_mb']:.1f} ({leak['batches']} batches)",
                f"{leak['slope_kb_per_batch']:.1f}",
                f"{leak['settled_growth_kb_per_batch']:.2f}",
                f"{leak['live_objects_after'] - leak['live_objects_before']:+d}",
                "yes" if leak["flat"] else "**no**",
                ", ".join(f"{_fmt_bytes(r['bytes_per_pair'])} at {r['seq_image']}" for r in rows),
                ", ".join(_fmt_bytes(r["full_cache_bytes_per_pair"]) for r in rows),
            ])
        )  # fmt: skip
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT_OUT
    sys.stdout.write(markdown(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
