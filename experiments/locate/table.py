"""Collect every per-pair test's separation of refused from answered text runs (layers.json ``separation``) over the
runs of experiments/locate/run.sh into results/separation.json, and render its table into docs/science.md
(:func:`separation_table`, registered in experiments/render_tables.py).

    python experiments/locate/table.py runs/locate/runs --out experiments/locate/results
    python experiments/render_tables.py docs/science.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safety_probe.core.files import write_json

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("band", "refused located (in band)", "answered fired (in band)", "benign fired (in band)",
           "refused located (anywhere)", "answered fired (anywhere)", "pair AUROC")


def _share(cell: dict) -> str:
    return "—" if cell["share"] is None else f"{cell['share']:.3f} [{cell['lower']:.2f}, {cell['upper']:.2f}] (n={cell['n']})"


def collect(runs: Path) -> dict:
    """``{run: {"truth": blocks or None, "safety_layers", "support", "tests": {test: separation}}}`` of every run."""
    out = {}
    for folder in sorted(p for p in runs.iterdir() if (p / "layers.json").is_file()):
        layers = json.loads((folder / "layers.json").read_text())
        truth = json.loads((folder / "truth.json").read_text())["blocks"] if (folder / "truth.json").is_file() else None
        out[folder.name] = {"truth": truth, "safety_layers": layers["safety_layers"], "support": layers["support"],
                            "settings": {k: layers["settings"][k] for k in ("test", "rule", "margin", "ambiguous")},
                            "ambiguous_tokens": layers.get("ambiguous_tokens", {}),
                            "tests": {name: {k: v for k, v in sep.items() if k != "per_layer"}
                                      for name, sep in layers["separation"].items()}}
    return out


def separation_table(sources: list[str]) -> str:
    """One row per run and test of ``separation.json``: the band (✓/✗ against a planted model's truth), and the
    shares that fire in it and anywhere, with Wilson intervals and n, and the AUROC of each pair's best score."""
    results = json.loads((ROOT / sources[0]).read_text())
    lines = ["| run | test | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for run, r in results.items():
        for test, sep in r["tests"].items():
            band = str(sep["band"]) + ("" if r["truth"] is None else " ✓" if sep["band"] == r["truth"] else " ✗")
            auroc = sep["pair_auroc"]
            cells = [band, _share(sep["in_band"]["refused"]), _share(sep["in_band"]["answered"]),
                     _share(sep["in_band"]["benign"]), _share(sep["anywhere"]["refused"]),
                     _share(sep["anywhere"]["answered"]),
                     "—" if not auroc or auroc["auroc"] is None else f"{auroc['auroc']:.3f} [{auroc['lower']:.3f}, "
                                                                    f"{auroc['upper']:.3f}]"]
            lines.append(f"| {run} | {test} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=Path("experiments/locate/results"))
    args = parser.parse_args(argv)
    results = collect(args.runs)
    write_json(args.out / "separation.json", results)
    print(f"{len(results)} runs -> {args.out}/separation.json (python experiments/render_tables.py renders its table)")


if __name__ == "__main__":
    main()
