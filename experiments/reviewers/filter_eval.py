"""The compare harness's input-filter row on any pairs: the base model's judged responses (``safety-probe eval``'s
responses.jsonl) with the images the CLIP filter flags answered by the refusal (:func:`safety_probe.defenses.input_filter.filtered_metrics`).

    python experiments/reviewers/filter_eval.py --pairs DIR/pairs.jsonl --responses EVAL/responses.jsonl --out OUT

The filter is the one of ``safety-probe tga --model organism``'s ``filter`` row: the organism's CLIP, the
world's toxic and benign object nouns, every colour-and-background caption template, threshold 0.5. Writes
``OUT/metrics.json`` (the metrics.json record with its ``filter`` flag rates) and ``OUT/responses.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safety_probe.core.files import write_json, write_jsonl
from safety_probe.data.pairs import load_pairs
from safety_probe.data.prompts import DEFAULT_PROMPTS
from safety_probe.defenses.input_filter import filter_flags, filtered_metrics
from safety_probe.organism import CLIP_DIR, preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--responses", required=True, help="the base model's responses.jsonl on --pairs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--clip", default=str(CLIP_DIR))
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()
    pairs = load_pairs(args.pairs)
    rows = [json.loads(line) for line in Path(args.responses).read_text().splitlines() if line.strip()]
    if [r["image"] for r in rows] != [str(p.image) for p in pairs]:
        raise SystemExit(f"{args.responses} does not hold the responses to {args.pairs} in order")
    toxic, benign, templates = preset.filter_vocabulary()
    flags = filter_flags(pairs, args.clip, toxic, benign, templates, args.threshold)
    metrics = filtered_metrics(rows, flags, DEFAULT_PROMPTS)  # safety-probe eval's default prompts
    metrics["filter"]["flag_rate_all"] = round(sum(flags) / len(flags), 4)
    metrics["filter"]["flagged"] = int(sum(flags))
    out = Path(args.out)
    write_json(out / "metrics.json", metrics)
    write_jsonl(out / "responses.jsonl", [{**r, "filtered": f} for r, f in zip(rows, flags)])
    print(json.dumps({"overall": metrics["overall"], "filter": metrics["filter"]}))


if __name__ == "__main__":
    main()
