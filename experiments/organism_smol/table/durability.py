"""Tabulate the durability runs (rows/durability.sh) beside the best method before any later fine-tuning:

    python durability.py [--runs runs/smol-table] [--out experiments/organism_smol/results/table]

Scores ``RUNS/durability/<kind>_<variant>_<steps>/s<seed>/eval-test`` with score.py's metrics (test split) and writes
``OUT/durability.json``: step 0 is the best row's models of the same training seeds before fine-tuning, scored on
the same split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from score import metrics_spec, read_rows, row_summary

LABELS = {"toxic_plain": "toxic images, described (plain fine-tuning)",
          "toxic_guided": "toxic images, described, guide kept as a regulariser",
          "benign_plain": "benign images only (plain fine-tuning)",
          "benign_guided": "benign images only, guide kept as a regulariser"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/smol-table"))
    ap.add_argument("--out", type=Path, default=Path("experiments/organism_smol/results/table"))
    args = ap.parse_args()
    rows, spec, used = [], None, set()
    for name, label in LABELS.items():
        for folder in sorted((args.runs / "durability").glob(f"{name}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1])):
            seeds = {d.name[1:]: read_rows(d / "eval-test" / "responses.jsonl") for d in sorted(folder.glob("s*"))
                     if (d / "eval-test" / "responses.jsonl").is_file()}
            if not seeds:
                continue
            if spec is None:
                rows_any = next(iter(seeds.values()))
                spec = metrics_spec(sorted({r["toxic_scene"] for r in rows_any if r.get("toxic_scene")}))
            rows.append({"label": label, "steps": int(folder.name.rsplit("_", 1)[1]), "run": folder.name,
                         "summary": row_summary(seeds, spec)})
            used |= set(seeds)
    if not rows:
        raise SystemExit(f"no durability run is evaluated under {args.runs / 'durability'}")
    before = {s: read_rows(args.runs / "best" / f"s{s}" / "eval-test" / "responses.jsonl") for s in sorted(used)}
    rows.insert(0, {"label": "the design chosen on validation, before later fine-tuning", "steps": 0, "run": "best",
                    "summary": row_summary(before, spec)})
    path = args.out / "durability.json"
    path.write_text(json.dumps({"split": "test", "rows": rows}, indent=1) + "\n")
    for r in rows:
        s = r["summary"]
        print(f"{r['label']} {r['steps']}: dsr_toxic {s['mean']['dsr_toxic']} (seeds {','.join(s['seeds'])})")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
