"""Text-run response distillation data: the toxic rows of a TGA data file answered by the model's own text run.

    python distill_data.py --model organism-smol --data DIR/tga.json --out DIR/distill.json

Each row labelled harmful gets, as its answer, the model's greedy response (24 new tokens) to the same request in
words: its caption and instruction in the model's text run (the TGA caption run). The distillation baseline trains
the image run on these rows with cross-entropy: it copies what the text run says (a refusal in the model's own voice
where the text run refuses, whatever else where it does not) instead of aligning states. Cross-entropy to the greedy
response rather than KL on the first token: the response is what the evaluation's judge reads, and it trains with
the same trainer and loss as the refusal fine-tuning baseline, so the two differ only in their targets.
General code: the model and the data are arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from write_data import relabel  # noqa: E402  (this folder)

from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import DEFAULT_PROMPTS
from safety_probe.models.generate import generate
from safety_probe.models.load import load_vlm
from safety_probe.tga.data import load_tga_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--label", default="harmful")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    examples = [ex for ex in load_tga_data(args.data) if ex.extra.get("label") == args.label]
    vlm = load_vlm(args.model)
    responses = {}
    for start in range(0, len(examples), args.batch_size):
        chunk = examples[start:start + args.batch_size]
        pairs = [Pair(image=ex.image, caption=ex.caption, instruction=ex.instruction) for ex in chunk]
        texts = generate(vlm, pairs, "text", DEFAULT_PROMPTS, args.max_new_tokens)
        responses.update({ex.id: t.strip() for ex, t in zip(chunk, texts)})
        print(f"{len(responses)}/{len(examples)}", flush=True)
    relabel(args.data, args.out, responses, args.label)
    (args.out.with_suffix(".responses.json")).write_text(json.dumps(responses, indent=1))
    print(f"{len(responses)} rows answered by the text run -> {args.out}")


if __name__ == "__main__":
    main()
