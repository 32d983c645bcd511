"""The speed harness runs end to end in --quick mode and writes results of the documented shape; bad options are
one line and exit 2; a baseline is a folder or a git ref.

No timing assertions: timing targets live in the harness's output (docs/speed.md), not in tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from safety_probe.core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `speed` is a top-level folder of the repo, not part of the package
    sys.path.insert(0, str(ROOT))

from speed import memory  # noqa: E402
from speed import run as bench  # noqa: E402
from speed.__main__ import main as speed_main  # noqa: E402
from speed.baseline import code_folder  # noqa: E402
from speed.results import one_line_errors  # noqa: E402


def test_peak_memory_sees_torch_cpu_allocations():
    size = 64 * 1024 * 1024
    got = memory.peak_memory(lambda: torch.ones(size // 4), "cpu")  # 64 MiB of float32, then freed
    assert got["peak_mb"] >= 60, got
    assert memory.slope([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.0)
    assert memory.slope([5.0] * 10) == 0.0


@pytest.mark.slow
def test_quick_recording_run_writes_results(tmp_path, tiny_model_dir):
    out = tmp_path / "results.json"
    bench.main(["--quick", "--model-path", str(tiny_model_dir("llava")), "--out", str(out)])
    data = json.loads(out.read_text())["recording"]

    assert data["meta"]["quick"] is True and data["meta"]["target_record_over_forward"] == bench.TARGET
    assert set(data["models"]) == {"organism", "small"}
    for name, res in data["models"].items():
        assert res["record_over_forward"] > 0 and isinstance(res["meets_target"], bool), name
        by_backend = res["record_over_forward_by_backend"]
        assert set(by_backend) == {"hooks", "nnsight", "transformerlens"} and res["default_backend"] == "hooks"
        assert by_backend["hooks"] == res["record_over_forward"]
        assert res["tl_mode"] == "bridge" or res["tl_mode"].startswith("hook_cache fallback"), res["tl_mode"]
        assert res["cases"], name
        for case in res["cases"]:
            ratios = case["ratio_to_forward"]
            assert ratios["forward"] == pytest.approx(1.0)
            assert {"trunk", "record", "record_nnsight", "record_transformerlens", "hidden_states"} <= set(ratios)
            assert ({"tl_resid", "tl_all"} <= set(ratios)) or "hook_cache" in ratios
            assert set(case["median_ms"]) == set(ratios) == set(case["peak_mb"])
            assert all(v > 0 for v in case["median_ms"].values())
            assert all(v >= 0 for v in case["peak_mb"].values())
            # every backend records exactly: pooled block outputs equal an independent full-output hook cache
            errs = case["max_rel_err_vs_hook_cache"]
            assert set(errs) == {"record", "record_nnsight", "record_transformerlens"} and max(errs.values()) < 1e-4
            assert case["rounds"] >= 2 and case["seq_len"] > 0
        leak = res["leak"]
        assert leak["batches"] == len(leak["series_mb"]) > 0
        assert {"first_mb", "last_mb", "slope_kb_per_batch", "settled_growth_kb_per_batch", "flat"} <= set(
            leak
        )

        # Stored bytes per pair do not depend on the sequence length; a full cache's do.
        rows = res["bytes_per_pair"]["rows"]
        assert len(rows) == 2 and rows[0]["seq_image"] < rows[1]["seq_image"]
        assert rows[0]["bytes_per_pair"] == rows[1]["bytes_per_pair"]
        assert (
            rows[0]["bytes_per_pair"] == 4 * res["n_layers"] * res["d_model"] * 4
        )  # 4 float32 [L, d] tensors
        assert rows[0]["full_cache_bytes_per_pair"] < rows[1]["full_cache_bytes_per_pair"]
        assert res["bytes_per_pair"]["independent_of_seq_len"] is True


@pytest.mark.slow
def test_quick_side_by_side_writes_ratios_and_checks(tmp_path):
    """probe-layers and TGA steps of this checkout against itself (a folder baseline) on a tiny model: every ratio
    and check of the documented shape, and the same safety layers and layers.csv from both codes."""
    out = tmp_path / "results.json"
    results = speed_main(["--quick", "--baseline", str(ROOT), "--only", "probe,tga", "--out", str(out)])
    assert results == json.loads(out.read_text()) and set(results) == {"probe_layers", "tga_step"}
    for record in results.values():
        for case in record["cases"].values():
            assert {"date_utc", "load_avg_start", "load_avg_end", "versions", "baseline", "old", "new"} <= set(case["meta"])
    probe = results["probe_layers"]["cases"]["tiny"]
    assert probe["same_safety_layers"] and probe["max_abs_diff_layers_csv"] == 0.0 and probe["new_over_old"] > 0
    assert set(probe["new_phases_s"]) == {"image_run", "text_run", "patch_caption", "patch_tail", "readouts",
                                          "analysis"}
    rows = {row["variant"]: row for row in results["tga_step"]["cases"]["tiny"]["rows"]}
    assert set(rows) == {"plain", "tga", "tga, rows seen before", "tga, shortcuts off", "tga, bf16 autocast"}
    assert set(rows["tga"]["step_s"]) == {"old", "new"} and set(rows["tga, bf16 autocast"]["step_s"]) == {"new"}
    assert rows["tga, bf16 autocast"]["compared_with"] == "tga"


@pytest.mark.parametrize("argv, needle", [
    (["--only", "bogus"], "--only bogus"),
    (["--rounds", "0"], "--rounds"),
    (["--baseline", "no-such-ref-or-folder"], "--baseline no-such-ref-or-folder"),
])
def test_bad_options_are_one_line(argv, needle, tmp_path, capsys):
    assert one_line_errors(lambda: speed_main([*argv, "--out", str(tmp_path / "r.json")])) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err and not (tmp_path / "r.json").exists()


def test_a_baseline_is_a_folder_or_a_git_ref(tmp_path, monkeypatch):
    """A folder holding safety_probe/ is taken as it is; a git ref is checked out once into a worktree."""
    import subprocess

    assert code_folder(str(ROOT)) == ROOT
    with pytest.raises(InputError, match="no safety_probe"):
        code_folder(str(tmp_path))
    repo = tmp_path / "repo"
    (repo / "safety_probe").mkdir(parents=True)
    (repo / "safety_probe" / "__init__.py").write_text('VERSION = "before"\n')
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    monkeypatch.setenv("SAFETY_PROBE_CACHE", str(tmp_path / "cache"))
    folder = code_folder("HEAD", repo)
    assert (folder / "safety_probe" / "__init__.py").read_text() == 'VERSION = "before"\n'
    assert folder.parent == tmp_path / "cache" / "speed" and code_folder("HEAD", repo) == folder
