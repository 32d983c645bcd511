"""The docs site builds offline with no warnings, and the quickstart notebook executes on both organisms with its
figures and tables embedded, its results saving exactly the files the commands write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "site" / "outputs" / "index.html").is_file()


@pytest.mark.slow
def test_quickstart_notebook_executes_with_figures(tmp_path):
    from safety_probe.cli import probe_layers_main
    from safety_probe.organism import world

    nb = nbformat.read(ROOT / "docs" / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "image/png" in mimes, "matplotlib figures must be embedded"
    assert "application/vnd.plotly.v1+json" in mimes, "the plotly figure must be embedded"
    assert "text/html" in mimes, "results show as tables"
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    work = Path(printed.split("working folder: ", 1)[1].split("\n", 1)[0])
    for name in ("LayerAnalysis(organism: ", "LayerAnalysis(organism-smol: ", "EvalResult(organism: ",
                 "EvalResult(organism-smol: ", "VLM('organism-smol': LLaVA-1.5 (llava), 30 blocks",
                 "TokenCache(image run, 2 pairs", "TokenCache(text run, 2 pairs", "PairStates(2 pairs, blocks 0,15,29"):
        assert name in printed, name
    assert all(len(line) <= 1000 for line in printed.splitlines())  # short reprs
    # Both organisms' result.save(dir, figures=True) wrote exactly the files probe-layers --out writes.
    pairs = world.write_pairs(seed=7, n=6, out_dir=tmp_path / "pairs")
    assert probe_layers_main(["--model", "organism", "--pairs", str(pairs), "--out", str(tmp_path / "command"),
                              "--patch-pairs", "1", "--device", "cpu"]) == 0
    expected = _files(tmp_path / "command")
    assert "figures/locate.png" in expected and "measurements.json" in expected
    assert _files(work / "probe") == expected
    assert _files(work / "smol_probe") == expected
    assert _files(work / "eval") == sorted(["metrics.json", "metrics.csv", "responses.jsonl", "run.json",
                                            *(f"figures/eval_dsr.{ext}" for ext in ("pdf", "png", "html")),
                                            "figures/plotly.min.js"])
    figures = [cell for cell in nb.cells if cell.cell_type == "code" and ".plot_locate()" in cell.source]
    assert len(figures) == 2  # both organisms' locate figure: three panels and n, as PNG
    assert all(any("image/png" in o.get("data", {}) for o in cell.outputs) for cell in figures)
    assert all("with 3 Axes" in o["data"]["text/plain"] for cell in figures for o in cell.outputs if "data" in o)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_every_rendered_table_matches_its_result_files():
    """`make docs-check`: each marked results table of README.md and docs/ re-rendered from its committed sources by
    experiments/render_tables.py is what the document holds, and the check names every source it read."""
    result = subprocess.run([sys.executable, "experiments/render_tables.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for doc in ("README.md", "docs/organism-smol.md", "docs/tga.md", "docs/reviewers.md", "docs/defenses.md",
                "docs/science.md"):
        assert f"{doc}: " in result.stdout
    assert "<- experiments/organism_smol/results/eval/metrics.json" in result.stdout
