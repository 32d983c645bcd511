"""Corrupt the captions (``image_caption``, the guide loss's target C) of a TGA data file of the organism's world.

    python experiments/reviewers/noisy_captions.py --data runs/tga13/data/tga.json --rate 0.3 --out DIR/tga.json

``round(rate * n)`` image rows get a wrong caption: half of them a wrong object (another object of the world,
drawn uniformly from every other object, toxic or benign; colour, count and background kept), half a wrong
attribute (the colour changed to another of the world's colours, or the count to another of 1-3, in turn).
Only the caption changes: the answer (the conversation) and the retrieved text R stay as they were, as when a
captioner's output is used for C beside ground-truth answers. A corrupted caption never equals R (R must differ
from C). The rows are chosen by one seeded permutation, so the rows corrupted at 10% are also corrupted at 30%
and 50%, with the same error. Images are referenced by paths relative to the output file. Every corrupted row
records ``caption_noise``: the error type and the clean caption. Prints a summary as JSON (also written beside
the output as ``noise.json``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from safety_probe.data.pairs import normalise_text
from safety_probe.organism import vocab


def caption_index() -> dict[str, tuple[str, str, int, str]]:
    """Every caption the world's words can write (any colour on any object) -> (object, colour, count, background)."""
    out: dict[str, tuple[str, str, int, str]] = {}
    for obj in vocab.NOUNS:
        for colour in vocab.COLOURS:
            for count in (1, 2, 3):
                for bg in vocab.BACKGROUNDS:
                    cap = vocab.make_caption(obj, colour, count, bg)
                    if cap in out:
                        raise RuntimeError(f"caption {cap!r} is ambiguous")
                    out[cap] = (obj, colour, count, bg)
    return out


def corrupt(rng: np.random.Generator, parsed: tuple[str, str, int, str], kind: str) -> str:
    """A caption with one error of ``kind`` (object, colour or count)."""
    obj, colour, count, bg = parsed
    if kind == "object":
        obj = str(rng.choice([o for o in vocab.NOUNS if o != obj]))
    elif kind == "colour":
        colour = str(rng.choice([c for c in vocab.COLOURS if c != colour]))
    elif kind == "count":
        count = int(rng.choice([c for c in (1, 2, 3) if c != count]))
    else:
        raise ValueError(kind)
    return vocab.make_caption(obj, colour, count, bg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="clean TGA data file (tga.json of the organism's world)")
    ap.add_argument("--rate", type=float, required=True, help="share of image rows whose caption is corrupted")
    ap.add_argument("--seed", type=int, default=9090, help="seed of the row choice and of the errors")
    ap.add_argument("--out", required=True, help="output tga.json")
    args = ap.parse_args()
    src, dst = Path(args.data), Path(args.out)
    rows = json.loads(src.read_text())
    index = caption_index()
    image_rows = [i for i, r in enumerate(rows) if "image" in r and r.get("image_caption")]
    rng = np.random.default_rng([args.seed, 1])
    order = [image_rows[i] for i in rng.permutation(len(image_rows))]
    # one error type per position in the order: even positions a wrong object, odd ones a wrong attribute
    # (colour and count in turn), so every prefix of the order is half object, half attribute errors
    kinds = ["object" if k % 2 == 0 else ("colour" if k % 4 == 1 else "count") for k in range(len(order))]
    n_bad = round(args.rate * len(image_rows))
    err_rng = np.random.default_rng([args.seed, 2])
    errors = {}
    for k, i in enumerate(order):  # every row's error is drawn (so a prefix is the same at every rate)
        row = rows[i]
        parsed = index[row["image_caption"]]
        kind = kinds[k]
        for attempt in range(50):
            cap = corrupt(err_rng, parsed, kind if attempt < 25 or kind == "object" else "object")
            if normalise_text(cap) != normalise_text(row.get("retrieved_caption") or ""):
                break
        else:
            raise RuntimeError(f"no corrupted caption for {row['id']} different from its R")
        errors[i] = (kind if attempt < 25 else "object", cap)
    dst.parent.mkdir(parents=True, exist_ok=True)
    out = []
    summary = {"source": str(src), "rate": args.rate, "seed": args.seed, "image_rows": len(image_rows),
               "corrupted": n_bad, "by_type": {"object": 0, "colour": 0, "count": 0},
               "object_errors_changing_toxicity": 0, "toxic_rows_corrupted": 0}
    chosen = set(order[:n_bad])
    for i, row in enumerate(rows):
        row = dict(row)
        if "image" in row and not os.path.isabs(row["image"]):
            row["image"] = os.path.relpath((src.parent / row["image"]).resolve(), dst.parent.resolve())
        if i in chosen:
            kind, cap = errors[i]
            clean = row["image_caption"]
            row["image_caption"] = cap
            row["caption_noise"] = {"type": kind, "clean": clean}
            summary["by_type"][kind] += 1
            toxic_before = index[clean][0] not in vocab.BENIGN_OBJECTS
            summary["toxic_rows_corrupted"] += int(toxic_before)
            if kind == "object" and toxic_before != (index[cap][0] not in vocab.BENIGN_OBJECTS):
                summary["object_errors_changing_toxicity"] += 1
        out.append(row)
    tmp = dst.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(dst)
    (dst.parent / "noise.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
