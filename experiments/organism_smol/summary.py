"""Tabulate organism-smol's measurements (experiments/organism_smol/measure.sh) as the markdown of
docs/organism-smol.md, every share with its Wilson 95% interval and n, and copy the small result files.

    python experiments/organism_smol/summary.py runs/organism-smol [--copy experiments/organism_smol/results]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safety_probe.analysis.scores import wilson_interval

METRICS = (("text_dsr", "n_harmful"), ("image_dsr", "n_harmful"), ("text_benign_refusal", "n_benign"),
           ("image_benign_refusal", "n_benign"), ("text_task_accuracy", "n_benign"), ("image_task_accuracy", "n_benign"),
           ("image_harmful_recognition", None))  # over the answered harmful pairs, whose count is not recorded
ALIGNMENTS = ("tga", "tga_tail", "tga_patching", "tga_tail_centred", "tga_paper_defaults150")  # measure.sh's runs
KEPT = ("eval/metrics.json", "probe/layers.json", "probe/layers.csv", "probe/figures/patching.pdf",
        "probe/figures/locate.pdf", "probe/figures/shift.pdf", *(f"{a}/compare.json" for a in ALIGNMENTS))


def share(metrics: dict, key: str, count: str) -> str:
    """``p [lo, hi]`` of one metric (— where undefined; ``p`` alone where its n is not recorded)."""
    p, n = metrics.get(key), metrics.get(count) if count else None
    if p is None:
        return "—"
    if not n:
        return f"{p:.3f}"
    lo, hi = wilson_interval(p, n)
    return f"{p:.3f} [{float(lo):.2f}, {float(hi):.2f}]"


def table(rows: dict[str, dict]) -> list[str]:
    """One markdown row per named metrics block."""
    head = "| | n (harmful / benign) | " + " | ".join(k for k, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['n_harmful']} / {m['n_benign']} | "
                     + " | ".join(share(m, k, c) for k, c in METRICS) + " |")
    return lines


def probe_lines(layers: dict) -> list[str]:
    """Where Algorithm 1 fires, the band, and the per-block curves the docs quote."""
    a1, scores = layers["algorithm1"], layers["scores"]
    per_layer = {k: scores[k]["per_layer"] for k in ("refusal_prob", "cos_matched", "cos_mismatched", "cos_gap",
                                                    "patching_gain", "tail_patching_gain") if k in scores}
    lines = [f"safety layers: {layers['safety_layers']} (rule {layers['safety_layer_rule']}); support {layers['support']}",
             f"refusal tokens K: {json.dumps(layers['refusal_tokens'])}",
             f"text-run refusal: {json.dumps(layers['text_run_refusal'])}",
             f"Algorithm 1 histogram: {json.dumps(layers['histogram'])}; share found {a1.get('share_found')}; "
             f"benign false positive {json.dumps(a1.get('benign_false_positive'))}",
             "", "| block | " + " | ".join(per_layer) + " |", "|" + "---|" * (len(per_layer) + 1)]
    for block in sorted(next(iter(per_layer.values())), key=int):
        lines.append(f"| {block} | " + " | ".join(f"{per_layer[k][block]:.3f}" for k in per_layer) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--copy", type=Path, default=None, help="copy the small result files here")
    args = parser.parse_args()
    out = []
    metrics = json.loads((args.run / "eval" / "metrics.json").read_text())
    out += ["## held-out evaluation (seed 9090)", "", *table({"overall": metrics["overall"], **metrics["per_scene"]})]
    out += ["", "## probing", "", *probe_lines(json.loads((args.run / "probe" / "layers.json").read_text()))]
    for name in ALIGNMENTS:
        path = args.run / name / "compare.json"
        if path.is_file():
            compare = json.loads(path.read_text())
            out += ["", f"## {name}: layers {compare['safety_layers']}", "",
                    *table({row: r["overall"] for row, r in compare["rows"].items()})]
    print("\n".join(out))
    if args.copy:
        for rel in KEPT:
            if (args.run / rel).is_file():
                (args.copy / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(args.run / rel, args.copy / rel)
        (args.copy / "summary.md").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
