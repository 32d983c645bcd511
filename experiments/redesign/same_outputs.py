"""probe-layers' outputs before and after the redesign (issues 23-25), side by side: the code before (a git ref or a
folder, default 93a6382) and this checkout run ``probe-layers`` on the same pairs, this checkout locating with the
rule of the code before (``speed.probe.AS_BEFORE``), and every common tensor of ``states.safetensors``, the safety
layers and every common column of ``layers.csv`` are compared.

    python experiments/redesign/same_outputs.py      # the organism demo (make demo's run) and a tiny model of
                                                      # every family on 8 pairs; about 10 minutes on one core
Writes experiments/redesign/results/same_outputs.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from safetensors.torch import load_file  # noqa: E402

from safety_probe.core.files import write_json  # noqa: E402
from safety_probe.testing.tiny import TINY_FAMILIES, build_tiny_vlm  # noqa: E402
from speed.baseline import code_env, code_folder, describe  # noqa: E402
from speed.probe import AS_BEFORE, compare_runs  # noqa: E402


def probe(code: Path, given: list[str], out: Path, extra: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # run outside this checkout's folder: -m puts the working directory before PYTHONPATH
    done = subprocess.run([sys.executable, "-m", "safety_probe", "probe", *given, "--device", "cpu", "--out", str(out),
                           *extra], env=code_env(code), capture_output=True, text=True, cwd=out.parent)
    if done.returncode:
        raise SystemExit(f"probe-layers on {code} failed: {done.stderr.strip().splitlines()[-1]}")


def compare_states(old: Path, new: Path) -> dict:
    """Largest absolute and relative (Frobenius) difference of every tensor both ``states.safetensors`` hold."""
    a, b = (load_file(str(run / "states.safetensors")) for run in (old, new))
    common = sorted(set(a) & set(b))
    return {"tensors": {k: {"max_abs": float((a[k].float() - b[k].float()).abs().max()),
                            "relative": float((a[k].float() - b[k].float()).norm() / a[k].float().norm())}
                        for k in common},
            "only_old": sorted(set(a) - set(b)), "only_new": sorted(set(b) - set(a))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="93a6382")
    p.add_argument("--out", type=Path, default=ROOT / "experiments/redesign/results/same_outputs.json")
    args = p.parse_args()
    old = code_folder(args.baseline)
    results = {"baseline": describe(old), "checkout": describe(ROOT), "new_locate_options": AS_BEFORE, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="same-outputs-") as tmp:
        work = Path(tmp)
        pairs = work / "pairs"
        subprocess.run([sys.executable, "-m", "safety_probe", "data", "organism", "--seed", "5151", "--n", "8",
                        "--out", str(pairs)], env=code_env(ROOT), check=True, capture_output=True, cwd=work)
        cases = {"organism (make demo's default run)": []}
        for family in TINY_FAMILIES:
            folder = build_tiny_vlm(family, work / "models" / family, seed=0)
            cases[f"tiny {family} (8 pairs)"] = ["--model", str(folder), "--pairs", str(pairs / "pairs.jsonl")]
        for i, (name, given) in enumerate(cases.items()):
            runs = work / str(i)
            probe(old, given, runs / "old", [])
            probe(ROOT, given, runs / "new", AS_BEFORE)
            results["runs"][name] = {**compare_runs(runs / "old", runs / "new"),
                                     "states": compare_states(runs / "old", runs / "new")}
            print(name, json.dumps({k: v for k, v in results["runs"][name].items() if k != "columns_only_new"}),
                  flush=True)
    write_json(args.out, results)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
