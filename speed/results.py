"""The results file of the speed harness (``speed/results.json``): one record per measurement, written under its key
so that the measurements can be run and refreshed one at a time, each with the ``meta`` of the run that measured it
(date, machine, load at start and end, versions; per case for the side-by-side ones).

- ``recording``: recording every block against the bare forward (:mod:`speed.run`);
- ``probe_layers``: probe-layers end to end against the baseline (:mod:`speed.probe`);
- ``tga_step``: a TGA step against the baseline (:mod:`speed.tga_step`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.core.files import write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
KEYS = ("recording", "probe_layers", "tga_step")


def load(path: Path) -> dict:
    """The records of a results file (an empty dict when there is none yet)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def store(path: Path, key: str, record: dict, merge: bool = False) -> None:
    """Write ``record`` under ``key`` of the results file ``path``, keeping its other records; with ``merge``, the
    record's ``cases`` replace only the cases of the same name (a case measured alone keeps the others')."""
    results = load(path)
    if merge and key in results:
        record = {**record, "cases": {**results[key].get("cases", {}), **record["cases"]}}
    write_json(path, {**results, key: record})


def one_line_errors(main: Callable[[], object]) -> int:
    """Run ``main``; a bad option (:class:`InputError`) is one line on stderr and exit status 2."""
    try:
        main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def measurement_main(argv: list[str] | None, prog: str, doc: str, key: str, cases: dict, run: Callable,
                     rounds_help: str) -> dict:
    """The command line of one side-by-side measurement (``python -m speed.probe``, ``python -m speed.tga_step``):
    ``run(baseline, models, rounds)`` on the chosen ``cases``, stored under ``key`` of the results file, replacing only
    the cases it ran."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--baseline", default="93a6382", help="the code before: a git ref of this repository or a folder")
    p.add_argument("--models", default=",".join(cases), help=f"comma list of: {', '.join(cases)}")
    p.add_argument("--rounds", type=int, default=3, help=rounds_help)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON (the cases run replace theirs)")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(cases))
    if unknown or args.rounds < 1:
        raise InputError(f"--models {unknown[0]}: use {', '.join(cases)}" if unknown else "--rounds must be >= 1")
    result = run(args.baseline, models, args.rounds)
    store(Path(args.out), key, result, merge=True)
    return result
