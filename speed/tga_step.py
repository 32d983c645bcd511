"""A TGA optimizer step, this checkout against a baseline, side by side: whole ``train()`` runs (one thread) of 12
and of 2 steps on the same data, the step time being their difference over 10 (model loading, accelerate's set-up
and the first steps' warm-up cancel), in interleaved rounds; each ratio is the median of the per-round ratios.

Variants on each model's TGA recipe (stage 1, its guide span and layers, plain prompts, toxic rows guide-only):

- ``plain``: the same step without the guide (λ = 0, the ce baseline's step);
- ``tga``: rows all new (one epoch: the recipes' case);
- ``tga, rows seen before``: data that repeats every two steps (later epochs: caption targets kept);
- this checkout only: ``tga, shortcuts off`` (``--shortcuts false``: what the exact shortcuts save) and ``tga, bf16
  autocast`` (``--mixed-precision bf16``: an approximation, its effect on training in docs/speed.md).

    python -m speed.tga_step --baseline 93a6382      # organism-smol (tail, blocks 16-28, batch 4) and the organism
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from speed.baseline import ROOT, code_env, code_folder, describe, finish, machine

WORKER = Path(__file__).resolve().parent / "tga_worker.py"
STEPS = (2, 12)


@dataclass(frozen=True)
class StepCase:
    """One model and its TGA recipe (flat option names) as the step is timed on it."""

    model: str
    options: dict = field(hash=False)

    @property
    def batch_size(self) -> int:
        return int(self.options["batch_size"])


_STAGE1 = {"stage": 1, "lr": 1e-3, "plain_share": 1.0, "guide_only_labels": ["harmful"]}
CASES = {
    "organism-smol": StepCase("organism-smol", {**_STAGE1, "layers": "16-28", "guide_span": "tail", "batch_size": 4}),
    "organism": StepCase("organism", {**_STAGE1, "layers": "4-6", "guide_span": "image", "batch_size": 16}),
}


@dataclass(frozen=True)
class Variant:
    """A way of training timed on every case: ``options`` over the recipe's, on data of ``rows`` batches (None: as
    many as the longest run takes, every row new), by the ``codes`` named."""

    name: str
    options: dict = field(default_factory=dict, hash=False)
    rows: int | None = None
    codes: tuple[str, ...] = ("old", "new")

    @property
    def precision(self) -> str:
        return self.options.get("mixed_precision", "no")


VARIANTS = (
    Variant("plain", {"guide_weight": 0.0}),
    Variant("tga"),
    Variant("tga, rows seen before", rows=2),
    Variant("tga, shortcuts off", {"shortcuts": False}, codes=("new",)),
    Variant("tga, bf16 autocast", {"mixed_precision": "bf16"}, codes=("new",)),
)


class Workers:
    """One :mod:`speed.tga_worker` process per code and mixed precision, started on first use."""

    def __init__(self, codes: dict[str, Path], logs: Path):
        self.codes, self.logs, self.procs = codes, logs, {}

    def train(self, code: str, precision: str, request: dict) -> dict:
        key = (code, precision)
        if key not in self.procs:
            log = (self.logs / f"worker-{code}-{precision}.log").open("w")
            self.procs[key] = subprocess.Popen([sys.executable, str(WORKER)], env=code_env(self.codes[code]),
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        proc = self.procs[key]
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {code} worker ({precision}) stopped; see {self.logs}/worker-{code}-{precision}.log")
        return json.loads(line)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stdin.close()
            proc.wait()


def _data(case: StepCase, rows: int, folder: Path) -> Path:
    from safety_probe.organism.preset import write_tga_data

    path = folder / f"rows{rows}" / "tga.json"
    return path if path.is_file() else write_tga_data(0, rows, path.parent, toxic_share=0.3, retrieval="world")


def measure_case(name: str, case: StepCase, workers: Workers, rounds: int, work: Path, variants: tuple[Variant, ...],
                 steps: tuple[int, int], log) -> dict:
    """``rounds`` interleaved rounds of every variant and code on ``case``: the step seconds and the ratios."""
    from safety_probe.models.load import resolve_model

    short, long = steps
    model = resolve_model(case.model)  # a folder: the baseline may not know the name
    runs = [(v, code, n) for v in variants for code in v.codes for n in steps]
    seconds = {(v.name, code, n): [] for v, code, n in runs}
    rng = random.Random(0)
    for r in range(rounds):
        rng.shuffle(runs)
        for v, code, n in runs:
            rows = case.batch_size * (v.rows or long)
            options = {**case.options, **v.options, "max_steps": 100, "stop_after": n, "save_every": 1000,
                       "threads": 1, "seed": 0}
            reply = workers.train(code, v.precision, {"model": model, "data": str(_data(case, rows, work / name)),
                                                      "options": options, "out": str(work / name / "run")})
            seconds[(v.name, code, n)].append(reply["seconds"])
        log(f"  {name} round {r + 1}/{rounds} done")
    step = {(v, code): [(b - a) / (long - short) for a, b in zip(seconds[(v, code, short)], seconds[(v, code, long)])]
            for v, code, n in seconds if n == short}
    rows = []
    for v in variants:
        row = {"variant": v.name, "options": v.options, "rows_repeat_every_steps": v.rows,
               "step_s": {code: statistics.median(step[(v.name, code)]) for code in v.codes}}
        old = step[(v.name, "old")] if "old" in v.codes else step[("tga", "old")]
        row["new_over_old"] = statistics.median(n / o for n, o in zip(step[(v.name, "new")], old))
        row["compared_with"] = v.name if "old" in v.codes else "tga"
        row["per_round_step_s"] = {code: step[(v.name, code)] for code in v.codes}
        rows.append(row)
    return {"case": asdict(case), "rounds": rounds, "steps": list(steps), "rows": rows}


def run(baseline: str, models: list[str], rounds: int, log=print, cases: dict[str, StepCase] = CASES,
        variants: tuple[Variant, ...] = VARIANTS, steps: tuple[int, int] = STEPS) -> dict:
    """The ``tga_step`` record of the results file (see the module docstring): per case its rows and its ``meta``
    (when, the load, the versions, both codes)."""
    codes = {"old": code_folder(baseline), "new": ROOT}
    results = {}
    with tempfile.TemporaryDirectory(prefix="safety-probe-speed-") as tmp:
        workers = Workers(codes, Path(tmp))
        try:
            for name in models:
                meta = machine(baseline=baseline, old=describe(codes["old"]), new=describe(ROOT), threads=1)
                results[name] = {"meta": meta,
                                 **measure_case(name, cases[name], workers, rounds, Path(tmp), variants, steps, log)}
                results[name]["meta"] = finish(meta)
        finally:
            workers.close()
    return {"cases": results}


def main(argv: list[str] | None = None) -> dict:
    from speed.results import measurement_main

    return measurement_main(argv, "python -m speed.tga_step", __doc__, "tga_step", CASES, run,
                            "interleaved rounds (each runs every variant once)")


if __name__ == "__main__":
    from speed.results import one_line_errors

    sys.exit(one_line_errors(main))
