"""The results file of the speed harness (``speed/results.json``): one record per measurement, written under its key
so that the measurements can be run and refreshed one at a time, each with the ``meta`` of the run that measured it
(date, machine, load at start and end, versions; per case for the side-by-side ones).

- ``recording``: recording every block against the bare forward (:mod:`speed.run`);
- ``probe_layers``: probe-layers end to end against the baseline (:mod:`speed.probe`);
- ``tga_step``: a TGA step against the baseline (:mod:`speed.tga_step`).
"""

from __future__ import annotations

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
