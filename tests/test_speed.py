"""The speed harness runs end to end in --quick mode and writes results of the documented shape.

No timing assertions: timing targets live in the harness's output (docs/speed.md), not in tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `speed` is a top-level folder of the repo, not part of the package
    sys.path.insert(0, str(ROOT))

from speed import memory  # noqa: E402
from speed import run as bench  # noqa: E402


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
    data = json.loads(out.read_text())

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
