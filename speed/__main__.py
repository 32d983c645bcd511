"""``python -m speed`` (``make bench``): every speed measurement into the results file, then the table of ratios.

    python -m speed --baseline 93a6382                  # recording, probe-layers, TGA steps (about 30 min on 2 cores)
    python -m speed --baseline /work/before --only probe,tga --rounds 5
    python -m speed --quick --baseline .                # tiny models, this checkout against itself (the test)

``--baseline``: the code before, as a git ref of this repository (checked out into a worktree once) or a folder.
No timing is asserted anywhere: the ratios are the output (docs/speed.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from safety_probe.core.errors import InputError
from speed import probe, run, tga_step
from speed.baseline import code_folder
from speed.results import DEFAULT_OUT, load, one_line_errors, store
from speed.tables import print_ratios

PARTS = ("recording", "probe", "tga")


def quick_cases(folder: Path) -> tuple[dict, dict]:
    """The probe-layers and TGA-step cases of ``--quick``: a tiny random LLaVA built into ``folder``."""
    from safety_probe.testing.tiny import build_tiny_vlm

    model = str(build_tiny_vlm("llava", folder / "tiny-llava", seed=0))
    step = tga_step.StepCase(model, {"stage": 1, "lr": 1e-3, "layers": "0-1", "guide_span": "tail", "batch_size": 2})
    return {"tiny": probe.ProbeCase(model, 6, 2)}, {"tiny": step}


def main(argv: list[str] | None = None) -> dict:
    from rich.console import Console

    p = argparse.ArgumentParser(prog="python -m speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="93a6382", help="the code before: a git ref of this repository or a folder")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of: {', '.join(PARTS)}")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of probe-layers and of the TGA steps")
    p.add_argument("--quick", action="store_true", help="tiny models, one round, short runs (for tests)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON (default speed/results.json)")
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    if set(parts) - set(PARTS):
        raise InputError(f"--only {sorted(set(parts) - set(PARTS))[0]}: use {', '.join(PARTS)}")
    if args.rounds < 1:
        raise InputError("--rounds must be >= 1")
    if {"probe", "tga"} & set(parts):
        code_folder(args.baseline)  # a bad baseline stops here, before any measurement
    out, console = Path(args.out), Console(width=170)
    with tempfile.TemporaryDirectory(prefix="safety-probe-speed-") as tmp:
        rounds, steps = (1, (1, 3)) if args.quick else (args.rounds, tga_step.STEPS)
        probe_cases, step_cases = quick_cases(Path(tmp)) if args.quick else (probe.CASES, tga_step.CASES)
        if "recording" in parts:
            quick = ["--quick", "--model-path", str(next(iter(step_cases.values())).model)] if args.quick else []
            run.main([*quick, "--out", str(out)])
        if "probe" in parts:
            store(out, "probe_layers", probe.run(args.baseline, list(probe_cases), rounds, console.print, probe_cases),
                  merge=True)
        if "tga" in parts:
            store(out, "tga_step", tga_step.run(args.baseline, list(step_cases), rounds, console.print, step_cases,
                                                steps=steps), merge=True)
    results = load(out)
    print_ratios(results, console)
    console.print(f"results -> {out}")
    return results


if __name__ == "__main__":
    sys.exit(one_line_errors(main))
