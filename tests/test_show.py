"""What the commands print, read from a log: with the output redirected to a file (not a terminal), every table keeps
every column heading and every number whole, however wide."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from safety_probe.analysis.results import LAYER_COLUMNS
from safety_probe.cli import probe_layers_main


def _logged(args: list[str], log) -> str:
    """The standard output of ``python args`` written to the file ``log`` (a pipe is no terminal either)."""
    with open(log, "w") as f:
        subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.DEVNULL, check=True)
    return log.read_text()


def test_the_per_layer_table_keeps_every_column_and_number_in_a_log(tiny_model_dir, pairs_file, tmp_path):
    run = tmp_path / "run"
    assert probe_layers_main(["--model", str(tiny_model_dir("llava")), "--pairs", str(pairs_file), "--out", str(run),
                              "--figures", "false", "--device", "cpu"]) == 0
    log = _logged(["-m", "safety_probe", "locate", str(run), "--figures", "false"], tmp_path / "locate.log")
    frame = pd.read_csv(run / "layers.csv")
    columns = [c for c in LAYER_COLUMNS if c in frame]
    assert len(columns) >= 8
    header = next(line for line in log.splitlines() if "layer" in line and "P(refuse)" in line)
    assert all(LAYER_COLUMNS[c] in header for c in columns), header  # no heading cut to "P(re…"
    for _, row in frame.iterrows():
        line = next(line for line in log.splitlines() if line.split("│")[1:2] and
                    line.split("│")[1].strip().lstrip("*") == str(int(row["layer"])))
        cells = [cell.strip() for cell in line.split("│")[2:-1]]
        assert cells == [str(int(row[c])) if c == "alg1_count" else f"{row[c]:.3f}" for c in columns], line
    assert "…" not in log
    k = json.loads((run / "layers.json").read_text())["refusal_tokens"]["tokens"]
    assert all(repr(t["text"].strip() or t["text"]) in log for t in k.values())  # K decoded, as the model writes it


def test_the_evaluation_and_comparison_tables_keep_every_column_in_a_log(tmp_path):
    scenes = {f"a_scene_with_a_long_name_{i}": {"n_pairs": 12, "text_dsr": 0.123456, "image_dsr": 0.654321,
                                                "text_benign_refusal": None, "image_benign_refusal": None,
                                                "image_task_accuracy": None, "image_harmful_recognition": 0.5}
              for i in range(3)}
    overall = {"n_pairs": 36, "text_dsr": 0.9876, "image_dsr": 0.0123, "text_benign_refusal": 0.25,
               "image_benign_refusal": 0.125, "image_task_accuracy": 0.875, "image_harmful_recognition": 0.5}
    metrics = {"judge": "keyword", "overall": overall, "per_scene": scenes}
    defended = {**metrics, "overall": {**overall, "image_dsr": 0.9}}
    (tmp_path / "m.json").write_text(json.dumps([metrics, defended]))
    code = ("import json, sys; from safety_probe.cli.show import print_comparison; "
            "a, b = json.load(open(sys.argv[1])); print_comparison(a, b, 'hidden_detect:cosine')")
    log = _logged(["-c", code, str(tmp_path / "m.json")], tmp_path / "defend.log")
    assert "a_scene_with_a_long_name_2" in log and "image_harmful_recognition" in log and "…" not in log
    line = next(line for line in log.splitlines() if " image_dsr " in line)
    assert [c.strip() for c in line.split("│")[4:7]] == ["0.012", "0.900", "+0.888"]
