"""Run a grid of TGA settings in parallel processes and tabulate their compare.json rows.

    python experiments/tga/sweep.py --grid experiments/tga/sweep.json --out runs/tga-sweep --jobs 8

The grid file maps a run name to its ``safety-probe tga`` arguments (the flags shared by every run under
``"common"``). Each run is one process with ``--threads 1`` (a tiny model trains fastest one core each);
finished runs are skipped on a rerun (the TGA command resumes). Writes ``OUT/summary.csv``: one line per run
and method (before, tga, baselines) with DSR, over-refusal, task accuracy and the cosine over the layers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from safety_probe.core.files import read_json, write_atomic

METRICS = ("text_dsr", "image_dsr", "text_benign_refusal", "image_benign_refusal", "image_task_accuracy")


def run_one(name: str, args: list[str], out: Path) -> tuple[str, int, float]:
    """One ``python -m safety_probe tga`` process, logging to ``OUT/NAME.log``."""
    t = time.time()
    with open(out / f"{name}.log", "a") as log:
        rc = subprocess.call([sys.executable, "-m", "safety_probe", "tga", *args, "--threads", "1",
                              "--out", str(out / name)], stdout=log, stderr=subprocess.STDOUT)
    return name, rc, time.time() - t


def summary(out: Path, names: list[str]) -> pd.DataFrame:
    """One row per (run, method) from each run's compare.json."""
    lines = []
    for name in names:
        path = out / name / "compare.json"
        if not path.is_file():
            continue
        record = read_json(path, "compare file")
        for method, row in record["rows"].items():
            overall = row.get("overall", {})
            shift = row.get("shift", {})
            lines.append({"run": name, "method": method, "layers": str(record["safety_layers"]),
                          **{k: overall.get(k) for k in METRICS},
                          "cos_over_layers": shift.get("mean_cos_matched")})
    return pd.DataFrame(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=Path, required=True, help="JSON: {common: [...], runs: {name: [...]}}")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one core each)")
    args = ap.parse_args()
    grid = read_json(args.grid, "sweep grid")
    common, runs = grid.get("common", []), grid["runs"]
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, rc, seconds in pool.map(lambda kv: run_one(kv[0], [*common, *kv[1]], args.out), runs.items()):
            print(f"{name}: {'ok' if rc == 0 else f'exit {rc}'} in {seconds:.0f} s", flush=True)
    table = summary(args.out, list(runs))
    write_atomic(args.out / "summary.csv", lambda p: table.to_csv(p, index=False))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
