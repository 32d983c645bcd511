"""probe-layers --plan: exact bytes of the safetensors a run writes, and a plan of a 7B-shaped model from its config alone."""

from __future__ import annotations

from safety_probe.cli import probe_layers_main
from safety_probe.data.pairs import load_pairs
from safety_probe.probe.config import MeasureOptions
from safety_probe.probe.plan import plan_run
from safety_probe.testing.tiny import build_tiny_vlm


def _planned(capsys) -> dict[str, int]:
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: int(line.split("(")[1].split()[0].replace(",", "")) for line in lines
            if ".safetensors" in line and "bytes)" in line}


def test_plan_gives_the_bytes_a_run_writes(tiny_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir("llava")), "--pairs", str(pairs_file), "--out", str(out),
            "--patch-pairs", "2", "--figures", "false", "--device", "cpu"]
    capsys.readouterr()
    assert probe_layers_main([*argv, "--plan"]) == 0
    planned = _planned(capsys)
    assert not out.exists(), "--plan writes nothing"
    assert probe_layers_main(argv) == 0
    assert planned == {name: (out / name).stat().st_size for name in planned}
    assert set(planned) == {"states.safetensors", "measurements.safetensors"}


def test_plan_of_a_7b_shape_needs_no_weights(tmp_path, pairs_file, capsys):
    folder = build_tiny_vlm("llava", tmp_path / "llava-7b", weights=False, hidden_size=4096, num_hidden_layers=32,
                            intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                            vocab_size=32000, image_size=336)
    assert not list(folder.glob("*.safetensors"))
    plan = plan_run(str(folder), load_pairs(pairs_file), MeasureOptions(patch_pairs=2), dtype="bfloat16")
    assert plan.facts["n_layers"] == 32 and plan.facts["d_model"] == 4096 and 6e9 < plan.facts["parameters"] < 8e9
    assert plan.files["states.safetensors"] > 4 * 5 * 32 * 4096 * 4
    assert plan.peak_bytes > 13e9 and all(seconds > 0 for seconds in plan.phases.values())
    assert plan.phases["patching (both)"] > plan.phases["image runs"]
    assert probe_layers_main(["--model", str(folder), "--pairs", str(pairs_file), "--plan", "--dtype", "bfloat16",
                              "--out", str(tmp_path / "o")]) == 0
    assert "peak memory" in capsys.readouterr().out
