"""The docs site builds offline with no warnings, and the quickstart notebook executes with its figures embedded."""

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
    nb = nbformat.read(ROOT / "docs" / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "image/png" in mimes, "matplotlib figures must be embedded"
    assert "application/vnd.plotly.v1+json" in mimes, "the plotly figure must be embedded"


def test_every_rendered_table_matches_its_result_files():
    """`make docs-check`: each marked results table of README.md and docs/ re-rendered from its committed sources by
    experiments/render_tables.py is what the document holds, and the check names every source it read."""
    result = subprocess.run([sys.executable, "experiments/render_tables.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for doc in ("README.md", "docs/organism-smol.md", "docs/tga.md", "docs/reviewers.md", "docs/defenses.md"):
        assert f"{doc}: " in result.stdout
    assert "<- experiments/organism_smol/results/eval/metrics.json" in result.stdout
