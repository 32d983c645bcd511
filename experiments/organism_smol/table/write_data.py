"""The alignment data of one training seed of organism-smol's decisive table (experiments/organism_smol/table):

    python write_data.py --seed 0 --out DIR          # DIR/tga.json and DIR/refusal.json
    python write_data.py --split validation|test --out DIR   # the evaluation split (pairs.jsonl)

- ``tga.json``: the recipe's data (2,400 rows, 30% toxic images described under a neutral instruction, the rest
  benign rows of every kind), with the held-out scenes (alcohol, explosives) left out of the toxic rows and of the
  retrieval corpus (:data:`safety_probe.organism.splits.HELD_OUT_SCENES`).
- ``refusal.json``: the same rows, the toxic rows answered by organism-smol's own refusal sentence (the refusal
  fine-tuning baseline trains them supervised).
- the splits: validation = world seed 6803, test = world seed 6804 (used nowhere before), 280 pairs each, the same
  composition (:mod:`safety_probe.organism.splits`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from safety_probe.cli.presets import refusal_phrase
from safety_probe.organism import preset, splits

SPLITS = {"validation": 6803, "test": 6804}
SPLIT_N = 280
TRAIN_N, TOXIC_SHARE = 2400, 0.3


def relabel(data: Path, out: Path, responses: dict[str, str], label: str = "harmful") -> Path:
    """A copy of the TGA data file ``data`` whose rows labelled ``label`` answer ``responses[id]`` (image paths relative
    to ``out``'s folder, so the runs folder can move)."""
    rows = json.loads(data.read_text())
    for row in rows:
        row["image"] = os.path.relpath((data.parent / row["image"]).resolve(), out.parent.resolve())
        if row.get("label") == label:
            row["conversations"][1]["value"] = responses[row["id"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int)
    ap.add_argument("--split", choices=list(SPLITS))
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    if args.split:
        path = splits.write_split(SPLITS[args.split], args.out, SPLIT_N)
        print(f"{args.split} split (world seed {SPLITS[args.split]}, {SPLIT_N} pairs) -> {path}")
        return
    if args.seed is None:
        raise SystemExit("give --seed (training data) or --split")
    tga = args.out / "tga.json"
    if not tga.is_file():
        preset.write_tga_data(args.seed, TRAIN_N, args.out, toxic_share=TOXIC_SHARE, scenes=splits.alignment_scenes())
    rows = json.loads(tga.read_text())
    refusal = refusal_phrase("organism-smol")
    relabel(tga, args.out / "refusal.json", {r["id"]: refusal for r in rows if r.get("label") == "harmful"})
    print(f"seed {args.seed}: {tga}, {args.out / 'refusal.json'}")


if __name__ == "__main__":
    main()
