"""Compare two TGA runs that differ only in precision (experiments/organism_smol/bf16.sh): the evaluation's metrics of
each, the harmful pairs whose image run one defends and the other does not (the same held-out pairs: an exact
two-sided McNemar test), the final log row, and the relative difference of every trained tensor.

    python experiments/organism_smol/bf16_compare.py runs/organism-smol-bf16/no runs/organism-smol-bf16/bf16 \
        --out experiments/organism_smol/results/bf16.json
"""

from __future__ import annotations

import argparse
import json
from math import comb
from pathlib import Path

from safetensors.torch import load_file

from safety_probe.core.files import write_json

METRICS = ("image_dsr", "text_dsr", "image_benign_refusal", "image_task_accuracy", "image_harmful_recognition")


def defended(run: Path) -> dict[int, bool]:
    """Harmful pair index → whether the trained model's image run refused it."""
    rows = [json.loads(line) for line in (run / "responses.jsonl").read_text().splitlines()]
    return {i: bool(r["image_refused"]) for i, r in enumerate(rows) if r.get("label") == "harmful"}


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value of b and c discordant pairs."""
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path, help="the float32 run's folder")
    p.add_argument("other", type=Path, help="the bf16 run's folder")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = {name: json.loads((run / "compare.json").read_text())["rows"]["tga"]
            for name, run in (("reference", args.reference), ("other", args.other))}
    a, b = defended(args.reference), defended(args.other)
    only_ref, only_other = sum(a[i] and not b[i] for i in a), sum(b[i] and not a[i] for i in a)
    ref_w, other_w = (load_file(str(run / "model" / "model.safetensors")) for run in (args.reference, args.other))
    trained = json.loads((args.reference / "train.json").read_text())["trainable"]
    # the trainable parameters' names as saved (transformers saves LLaVA's without the leading "model.")
    saved = {k: k if k in ref_w else k.removeprefix("model.") for k in trained}
    relative = {k: float((other_w[s].float() - ref_w[s].float()).norm() / ref_w[s].float().norm())
                for k, s in saved.items()}
    write_json(args.out, {
        "runs": {name: str(run) for name, run in (("reference", args.reference), ("other", args.other))},
        "metrics": {name: {m: row["overall"].get(m) for m in METRICS} for name, row in rows.items()},
        "final_log": {name: row["final_log"] for name, row in rows.items()},
        "harmful_pairs": len(a), "defended_by_reference_only": only_ref, "defended_by_other_only": only_other,
        "mcnemar_p": mcnemar(only_ref, only_other),
        "trained_tensors_relative_difference": relative, "max_relative_difference": max(relative.values()),
    })
    print(args.out.read_text())


if __name__ == "__main__":
    main()
