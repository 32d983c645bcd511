"""Tabulate `safety-probe defend` runs (experiments/defenses/organism.sh): one row per run folder, plus the plain
model's row, as summary.csv and a markdown table on stdout.

    python experiments/defenses/summary.py runs/defenses-organism [--copy experiments/defenses/results]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

COLUMNS = ("text_dsr", "image_dsr", "text_benign_refusal", "image_benign_refusal", "text_task_accuracy",
           "image_task_accuracy")
KEPT = ("metrics.json", "metrics_plain.json", "run.json", "state/state.json", "state/state.safetensors")


def row(name: str, metrics: dict) -> dict:
    out = {"row": name, "n_pairs": metrics["overall"]["n_pairs"], **{k: metrics["overall"][k] for k in COLUMNS}}
    cost = metrics.get("cost")
    out["cost_ratio"] = cost["ratio"] if cost else 1.0
    settings = metrics.get("defense", {}).get("settings", {})
    out["strength"] = settings.get("strength")
    image = metrics.get("auroc", {}).get("image")
    out["image_auroc"] = f"{image['auroc']} [{image['lower']}, {image['upper']}]" if image else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--copy", type=Path, default=None, help="copy each run's small result files here")
    args = parser.parse_args()
    runs = sorted(p.parent for p in args.runs.glob("*/metrics.json"))
    rows = [row("before (plain)", json.loads((runs[0] / "metrics_plain.json").read_text()))]
    rows += [row(run.name, json.loads((run / "metrics.json").read_text())) for run in runs]
    frame = pd.DataFrame(rows)
    if args.copy:
        for run in runs:
            for name in KEPT:
                target = args.copy / run.name / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(run / name, target)
        frame.to_csv(args.copy / "summary.csv", index=False)
    print("| " + " | ".join(frame.columns) + " |")
    print("|" + "---|" * len(frame.columns))
    for values in frame.itertuples(index=False):
        print("| " + " | ".join("—" if v is None or v != v else str(v) for v in values) + " |")


if __name__ == "__main__":
    main()
