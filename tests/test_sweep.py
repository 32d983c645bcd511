"""experiments/tga/sweep.py: runs a grid of `safety-probe tga` processes and tabulates their compare.json."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _sweep():
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "experiments" / "tga" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_runs_the_grid_and_tabulates_every_method(tmp_path, monkeypatch):
    sweep = _sweep()
    record = {"safety_layers": [2, 3], "rows": {
        "before": {"overall": {"text_dsr": 1.0, "image_dsr": 0.1, "image_task_accuracy": 0.9},
                   "shift": {"mean_cos_matched": 0.2}},
        "tga": {"overall": {"text_dsr": 1.0, "image_dsr": 0.4, "image_task_accuracy": 0.88},
                "shift": {"mean_cos_matched": 0.8}},
        "filter": {"overall": {"image_dsr": 0.9}}}}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "compare.json").write_text(json.dumps(record))
    # "b" stands for a run that failed before writing compare.json: it is left out, not an error
    monkeypatch.setattr(sweep, "run_one", lambda name, args, out: (name, 0 if name == "a" else 3, 0.0))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"common": ["--model", "organism"], "runs": {"a": ["--stage", "1"], "b": []}}))
    monkeypatch.setattr(sys, "argv", ["sweep", "--grid", str(grid), "--out", str(tmp_path)])
    sweep.main()
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(table["method"]) == ["before", "tga", "filter"] and set(table["run"]) == {"a"}
    tga = table[table["method"] == "tga"].iloc[0]
    assert tga["image_dsr"] == 0.4 and tga["cos_over_layers"] == 0.8 and tga["layers"] == "[2, 3]"


def test_run_one_reports_a_failing_run_and_keeps_its_log(tmp_path):
    name, rc, _ = _sweep().run_one("bad", ["--no-such-flag"], tmp_path)
    assert name == "bad" and rc != 0
    assert "no-such-flag" in (tmp_path / "bad.log").read_text()
