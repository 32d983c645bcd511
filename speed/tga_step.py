"""Time of one TGA optimizer step over one plain alignment step (same data, λ = 0), on the organism.

``python -m speed.tga_step`` (also run by ``make bench``) prints the table and stores it under the key
``tga_step`` of ``speed/results.json``. Target: ≤ 1.25×. The TGA step adds the no-grad caption forward
(stopped after the deepest safety layer) and the pooled cosines; both steps put the retrieved text in context.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from safety_probe.core.files import write_json
from safety_probe.models.load import load_vlm
from safety_probe.organism import ORGANISM_DIR
from safety_probe.organism.preset import write_tga_data
from safety_probe.tga.batch import TGACollator
from safety_probe.tga.data import load_tga_data
from safety_probe.tga.params import setup_trainable
from safety_probe.tga.train import tga_loss

TARGET = 1.25
RESULTS = Path(__file__).resolve().parent / "results.json"


def step_times(model: str, layers: list[int], stage: int, batch_size: int, rounds: int) -> dict[str, list[float]]:
    """Interleaved timings (s) of one optimizer step with the guide loss (``tga``) and without (``plain``)."""
    vlm = load_vlm(ORGANISM_DIR if model == "organism" else model, device="cpu")
    setup_trainable(vlm, stage)
    params = [p for p in vlm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    with tempfile.TemporaryDirectory() as tmp:
        examples = load_tga_data(write_tga_data(0, batch_size, tmp, retrieval="world"))
        batches = {name: TGACollator(vlm, caption_run=name == "tga")(examples) for name in ("tga", "plain")}
    times: dict[str, list[float]] = {"tga": [], "plain": []}
    vlm.model.train()
    for r in range(rounds + 2):  # two warm-up rounds
        for name in ("tga", "plain") if r % 2 else ("plain", "tga"):
            t = time.perf_counter()
            loss, _ = tga_loss(vlm.model, vlm, batches[name], layers, 1.0 if name == "tga" else 0.0)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if r >= 2:
                times[name].append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="organism")
    ap.add_argument("--layers", default="3,4,5,6,7", help="safety layers J (0-based blocks)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    layers = [int(x) for x in args.layers.split(",")]
    rows = []
    for stage in (1, 2):
        t = step_times(args.model, layers, stage, args.batch_size, args.rounds)
        ratios = [a / b for a, b in zip(t["tga"], t["plain"])]
        rows.append({"stage": stage, "batch_size": args.batch_size, "layers": layers,
                     "tga_ms": round(1e3 * statistics.median(t["tga"]), 2),
                     "plain_ms": round(1e3 * statistics.median(t["plain"]), 2),
                     "tga_over_plain": round(statistics.median(ratios), 3), "rounds": args.rounds})
    print(f"TGA step ÷ plain alignment step ({args.model}, B={args.batch_size}, J={layers}; target ≤ {TARGET})")
    print(f"{'stage':>5} {'tga ms':>9} {'plain ms':>9} {'ratio':>7}")
    for r in rows:
        print(f"{r['stage']:>5} {r['tga_ms']:>9.1f} {r['plain_ms']:>9.1f} {r['tga_over_plain']:>7.3f}")
    result = {"target": TARGET, "rows": rows, "meets_target": all(r["tga_over_plain"] <= TARGET for r in rows)}
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    data["tga_step"] = result
    write_json(args.out, data)
    return result


if __name__ == "__main__":
    main()
