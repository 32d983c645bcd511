"""The commands as a user types them: one command family, the organism only by name, and no toy fallback."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from safety_probe.cli import main, probe_layers_main
from safety_probe.organism.preset import write_tga_data


def _one_line_error(capsys, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert "Traceback" not in err[0]


def test_tga_on_a_real_model_without_data_names_the_option(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    model = str(tiny_model_dir("llava"))
    capsys.readouterr()
    rc = main(["tga", "--model", model, "--layers", "0-1", "--out", str(out)])
    assert rc == 2
    _one_line_error(capsys, "--data")
    assert not (out / "model").exists() and not (out / "data").exists()


def test_tga_with_data_and_no_eval_pairs_trains_and_says_evaluation_was_skipped(tiny_model_dir, tmp_path, capsys):
    data = write_tga_data(seed=0, n=4, out_dir=tmp_path / "data", retrieval="world")
    out = tmp_path / "run"
    rc = main(["tga", "--model", str(tiny_model_dir("llava")), "--layers", "0-1", "--out", str(out),
               "--data", str(data), "--stage", "1", "--max-steps", "1", "--batch-size", "2", "--device", "auto",
               "--trust-remote-code", "false", "--baselines"])  # the model options of every command
    assert rc == 0
    printed = capsys.readouterr()
    assert "evaluation skipped: no --eval-pairs given" in printed.out + printed.err
    compare = json.loads((out / "compare.json").read_text())
    assert set(compare["rows"]) == {"tga"} and compare["eval_pairs"] == 0
    assert any("evaluation skipped" in n for n in compare["notes"])
    assert (out / "model" / "config.json").is_file()


def test_tga_baselines_need_their_data(tiny_model_dir, tmp_path, capsys):
    data = write_tga_data(seed=0, n=2, out_dir=tmp_path / "data", retrieval="world")
    base = ["tga", "--model", str(tiny_model_dir("llava")), "--data", str(data), "--out", str(tmp_path / "r")]
    capsys.readouterr()
    assert main([*base, "--baselines", "safety_ft"]) == 2
    _one_line_error(capsys, "--safety-ft-data")
    assert main([*base, "--baselines", "filter"]) == 2
    _one_line_error(capsys, "--clip")
    assert main([*base, "--baselines", "bogus"]) == 2
    _one_line_error(capsys, "unknown --baselines")
    assert not (tmp_path / "r").exists()


def test_tga_on_the_organism_defaults_to_the_documented_recipe():
    from safety_probe.cli import _parse
    from safety_probe.cli.presets import TGA_RECIPE
    from safety_probe.cli.tga import TGACommand
    from safety_probe.core.options import options_of

    for argv in (["--model", "organism"], []):  # organism is the default model, as for every command
        cfg = options_of(_parse(TGACommand, "safety-probe tga", [*argv, "--max-steps", "7"]))
        assert cfg["max_steps"] == 7  # the command line wins over the preset
        assert {k: cfg[k] for k in TGA_RECIPE if k != "max_steps"} == {k: v for k, v in TGA_RECIPE.items()
                                                                        if k != "max_steps"}
    real = _parse(TGACommand, "safety-probe tga", ["--model", "some/model"])
    assert real.compare.baselines == [] and real.compare.tga.method.stage == 2
    assert real.compare.tga.optim.max_steps is None and real.organism.train_n == 2000
    assert _parse(TGACommand, "safety-probe tga", ["--model", "organism", "--baselines", ""]).compare.baselines == [""]


def test_tga_options_reach_the_parts_that_hold_them():
    from safety_probe.cli import _parse
    from safety_probe.cli.tga import TGACommand

    cfg = _parse(TGACommand, "safety-probe tga", ["--model", "some/model", "--layers", "3,5", "--lr", "0.01",
                                                  "--stop-after", "2", "--system-prompt", "Be safe.", "--eval-n", "9",
                                                  "--device", "auto", "--device-map", "auto", "--trust-remote-code",
                                                  "true", "--text-template", "scene", "--filter-threshold", "0.7"])
    tga = cfg.compare.tga
    assert (tga.method.layers, tga.optim.lr, tga.run.stop_after) == ("3,5", 0.01, 2)
    assert (tga.prompts.system_prompt, tga.prompts.text_template) == ("Be safe.", "scene")
    assert (cfg.device, cfg.device_map, cfg.trust_remote_code) == ("auto", "auto", True)
    assert cfg.organism.eval_n == 9 and cfg.compare.filter_threshold == 0.7


def test_probe_is_probe_layers(tiny_model_dir, pairs_file, tmp_path):
    args = ["--model", str(tiny_model_dir("llava")), "--pairs", str(pairs_file), "--patch-pairs", "0",
            "--figures", "false", "--device", "cpu"]
    assert probe_layers_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main(["probe", *args, "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "layers.json").read_text()) for d in "ab")
    assert a == b


def test_python_dash_m_runs_every_command():
    for command in ("probe", "data", "eval", "tga", "defend", "figures"):
        done = subprocess.run([sys.executable, "-m", "safety_probe", command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr[-500:])
        usage = done.stdout.split("\n\n")[0]
        assert not re.findall(r"--\w*_\w*", usage), (command, re.findall(r"--\w*_\w*", usage))


def test_positional_arguments(tmp_path):
    from safety_probe.cli import _parse
    from safety_probe.cli.data import DataConfig
    from safety_probe.cli.figures import FiguresConfig

    assert _parse(DataConfig, "safety-probe data", ["organism", "--n", "3"]).world == "organism"
    assert _parse(FiguresConfig, "safety-probe figures", [str(tmp_path)]).run == str(tmp_path)


def test_data_convert_reads_every_benchmark_layout(tmp_path, capsys):
    import benchmark_fixtures as bf

    from safety_probe.data.benchmarks import FORMATS, read_benchmark
    from safety_probe.data.pairs import load_pairs

    for name, write in bf.WRITERS.items():
        root = write(tmp_path / name)
        out = tmp_path / f"{name}.jsonl"
        assert main(["data", "convert", "--root", str(root), "--out", str(out)]) == 0, name  # --format auto
        options = {"image_dir": tmp_path / "x"} if "image_dir" in FORMATS[name].options else {}
        assert len(load_pairs(out, require_caption=False)) == len(read_benchmark(name, root, **options))
    assert main(["data", "convert", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.jsonl")]) == 2
    capsys.readouterr()
    assert main(["data", "convert", "--format", "bogus", "--root", str(tmp_path), "--out", str(tmp_path / "p.jsonl")]) == 2
    _one_line_error(capsys, "unknown benchmark format 'bogus'")
