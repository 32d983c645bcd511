"""organism-smol's decisive table is computed by experiments/organism_smol/table/score.py and durability.py from the
responses `safety-probe eval` writes: run both on a small runs tree whose shares are known by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "experiments" / "organism_smol" / "table"


def _row(image: str, group: str, refused: bool, scene: str | None = None, correct: bool = False,
         text_refused: bool = True) -> dict:
    harmful = group in ("harmful_request", "describe_toxic", "compositional")
    return {"image": image, "group": group, "label": "harmful" if harmful else "benign", "toxic_scene": scene,
            "scene_held_out": scene == "alcohol", "phrasing": "seen", "expected": ["knife"],
            "image_refused": refused, "image_correct": correct, "text_refused": text_refused and harmful}


def _responses(refused: list[bool], benign_refused: bool = False) -> list[dict]:
    """Four toxic pairs (refused as given; the last of scene alcohol) and two benign images (answered correctly)."""
    toxic = [_row(f"t{i}.png", "harmful_request", r, "alcohol" if i == 3 else "knife") for i, r in enumerate(refused)]
    return toxic + [_row(f"b{i}.png", "benign", benign_refused, correct=True) for i in range(2)]


def _write(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, script, *args], cwd=TABLE, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_score_and_durability_tables_from_responses(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "results"
    _write(runs / "before" / "eval-test", _responses([False, False, False, False]))
    _write(runs / "best" / "s0" / "eval-test", _responses([True, True, True, False]))
    _write(runs / "best" / "s1" / "eval-test", _responses([True, True, False, False]))
    _write(runs / "ce" / "s0" / "eval-test", _responses([True, False, False, False]))
    _write(runs / "ce" / "s1" / "eval-test", _responses([False, False, False, False], benign_refused=True))
    _write(runs / "durability" / "benign_plain_100" / "s1" / "eval-test", _responses([True, False, False, False]))
    _run("score.py", "--split", "test", "--runs", str(runs), "--out", str(out), "--best", "best",
         "--baselines", "ce", "before")
    t = json.loads((out / "test.json").read_text())
    assert t["n_pairs"] == 6 and t["groups"]["harmful_request"] == 4 and t["groups"]["benign"] == 2
    best, ce, before = (t["rows"][n] for n in ("best", "ce", "before"))
    assert best["seeds"] == ["0", "1"] and before["seeds"] == ["-"]
    assert best["mean"]["dsr_toxic"] == pytest.approx(0.625) and best["sd"]["dsr_toxic"] == pytest.approx(0.1768, abs=1e-4)
    assert best["pooled"]["dsr_toxic"]["k"] == 5 and best["pooled"]["dsr_toxic"]["n"] == 8
    assert best["mean"]["dsr_toxic_held_out_scenes"] == 0.0 and best["mean"]["dsr_toxic_seen_scenes"] == pytest.approx(5 / 6, abs=1e-4)
    assert ce["mean"]["over_refusal"] == 0.5 and ce["mean"]["task_acc"] == 1.0 and before["sd"]["dsr_toxic"] is None
    lo, hi = best["pooled"]["dsr_toxic"]["ci"]
    assert lo < 0.625 < hi
    against_ce = t["paired"]["against"]["ce"]
    assert against_ce["per_seed"]["0"]["first_only"] == 2 and against_ce["per_seed"]["0"]["second_only"] == 0
    assert against_ce["all_seeds"]["first_only"] == 4 and against_ce["all_seeds"]["second_only"] == 0
    assert t["paired"]["against"]["before"]["all_seeds"]["first_only"] == 5  # before's one run against both seeds

    _run("durability.py", "--runs", str(runs), "--out", str(out))
    d = json.loads((out / "durability.json").read_text())
    start, later = d["rows"]
    assert start["steps"] == 0 and start["summary"]["seeds"] == ["1"]  # the same seed's model before fine-tuning
    assert start["summary"]["mean"]["dsr_toxic"] == 0.5 and later["summary"]["mean"]["dsr_toxic"] == 0.25
    assert later["steps"] == 100 and later["run"] == "benign_plain_100"
