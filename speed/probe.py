"""probe-layers end to end, this checkout against a baseline, side by side: the wall time of the whole command
(``python -m safety_probe probe``, one thread, figures drawn) in interleaved rounds, the ratio new ÷ old as the
median of the per-round ratios, whether both runs chose the same safety layers, and the largest difference between
their ``layers.csv``. For this checkout also each phase of the model pass (``measurements.json`` ``settings.seconds``)
and the pure analysis (timed here on the run's files).

    python -m speed.probe --baseline 93a6382            # organism-smol (24 pairs, 8 patched) and the organism
    python -m speed.probe --baseline /work/before --models organism --rounds 5
"""

from __future__ import annotations

import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from speed.baseline import ROOT, code_env, code_folder, describe, finish, machine

CODES = ("old", "new")
AS_BEFORE = ["--test", "alg1", "--rule", "share", "--ambiguous", "keep"]
"""This checkout's locate options that choose the layers as the baseline did (issue 24 changed the defaults): the
same model pass, so the time is today's default's, and the layers and layers.csv compare like with like."""


@dataclass(frozen=True)
class ProbeCase:
    """One probe-layers run: the model, held-out pairs of the organisms' world (``n`` of world seed ``seed``), and how
    many harmful pairs are patched."""

    model: str
    n: int
    patch_pairs: int
    seed: int = 5151


CASES = {"organism-smol": ProbeCase("organism-smol", 24, 8), "organism": ProbeCase("organism", 400, 64)}


def _python(code: Path, args: list[str], log: Path) -> float:
    """Wall seconds of ``python args`` run on ``code`` (one thread); its output goes to ``log``."""
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, *args], env=code_env(code), stdout=out, stderr=subprocess.STDOUT,
                              cwd=log.parent)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:3])} on {code} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def _csv(path: Path) -> dict[str, list[str]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {k: [row[k] for row in rows] for k in rows[0]} if rows else {}


def compare_runs(old: Path, new: Path) -> dict:
    """Whether two probe-layers runs chose the same safety layers, and the largest absolute difference between the
    numbers of their ``layers.csv`` (over the columns both have)."""
    layers = [json.loads((run / "layers.json").read_text())["safety_layers"] for run in (old, new)]
    a, b = _csv(old / "layers.csv"), _csv(new / "layers.csv")
    diff = 0.0
    for column in set(a) & set(b):
        for x, y in zip(a[column], b[column]):
            try:
                diff = max(diff, abs(float(x) - float(y)))
            except ValueError:  # text columns (hook names, True/False) must be equal
                diff = diff if x == y else float("inf")
    return {"safety_layers_old": layers[0], "safety_layers_new": layers[1], "same_safety_layers": layers[0] == layers[1],
            "max_abs_diff_layers_csv": diff, "columns_only_old": sorted(set(a) - set(b)),
            "columns_only_new": sorted(set(b) - set(a))}


def analysis_seconds(run: Path, repeats: int = 3) -> float:
    """Median seconds of the pure analysis (locate + shift) of a finished run, from its files."""
    from safety_probe.analysis.analyze import analyze
    from safety_probe.probe.measure import Measurements
    from safety_probe.probe.record import PairStates

    states, measured = PairStates.load(run / "states.safetensors"), Measurements.load(run)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        analyze(states, measured)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_case(name: str, case: ProbeCase, codes: dict[str, Path], rounds: int, work: Path, log) -> dict:
    """``rounds`` interleaved rounds of probe-layers on ``case`` under each code (shuffled order each round)."""
    pairs = work / name / "pairs" / "pairs.jsonl"
    if not pairs.is_file():
        _python(ROOT, ["-m", "safety_probe", "data", "organism", "--seed", str(case.seed), "--n", str(case.n),
                       "--out", str(pairs.parent)], work / f"{name}-pairs.log")
    rng = random.Random(0)
    times: dict[str, list[float]] = {code: [] for code in codes}
    phases: list[dict[str, float]] = []
    for r in range(rounds):
        order = list(codes)
        rng.shuffle(order)
        for code in order:
            out = work / name / f"{code}-{r}"
            args = ["-m", "safety_probe", "probe", "--model", case.model, "--pairs", str(pairs), "--patch-pairs",
                    str(case.patch_pairs), "--device", "cpu", "--out", str(out), *(AS_BEFORE if code == "new" else [])]
            times[code].append(_python(codes[code], args, work / name / f"{code}-{r}.log"))
            if code == "new":
                phases.append(json.loads((out / "measurements.json").read_text())["settings"]["seconds"])
        log(f"  {name} round {r + 1}/{rounds}: " + ", ".join(f"{c} {times[c][-1]:.1f} s" for c in codes))
    last = rounds - 1
    ratios = [n / o for n, o in zip(times["new"], times["old"])]
    phase = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    phase["analysis"] = analysis_seconds(work / name / f"new-{last}")
    return {"case": asdict(case), "rounds": rounds, "seconds": times,
            "median_s": {c: statistics.median(t) for c, t in times.items()},
            "new_over_old": statistics.median(ratios), "per_round_ratio": ratios,
            "new_phases_s": phase, "new_rest_s": statistics.median(times["new"]) - sum(
                v for k, v in phase.items() if k != "analysis"),
            **compare_runs(work / name / f"old-{last}", work / name / f"new-{last}")}


def run(baseline: str, models: list[str], rounds: int, log=print, cases: dict[str, ProbeCase] = CASES) -> dict:
    """The ``probe_layers`` record of the results file (see the module docstring): per case its results and its
    ``meta`` (when, the load, the versions, both codes)."""
    codes = {"old": code_folder(baseline), "new": ROOT}
    results = {}
    with tempfile.TemporaryDirectory(prefix="safety-probe-speed-") as tmp:
        for name in models:
            meta = machine(baseline=baseline, old=describe(codes["old"]), new=describe(ROOT), threads=1)
            results[name] = {"meta": meta, **measure_case(name, cases[name], codes, rounds, Path(tmp), log)}
            results[name]["meta"] = finish(meta)
    return {"cases": results}


def main(argv: list[str] | None = None) -> dict:
    from speed.results import measurement_main

    return measurement_main(argv, "python -m speed.probe", __doc__, "probe_layers", CASES, run,
                            "interleaved rounds (each runs both codes once)")


if __name__ == "__main__":
    from speed.results import one_line_errors

    sys.exit(one_line_errors(main))
