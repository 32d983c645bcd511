"""Figures: written in every format, TrueType fonts in the PDF, PNG at column width, offline HTML with the data."""

from __future__ import annotations

import json
import re

import matplotlib
import numpy as np
import plotly.graph_objects as go
import pytest
from matplotlib.figure import Figure
from PIL import Image

from safety_probe.analysis.results import LayerAnalysis
from safety_probe.analysis.scores import LayerScores, scores_frame
from safety_probe.probe.refusal import RefusalTokens
from safety_probe.viz.layers import (
    draw_all,
    plot_last_token,
    plot_locate,
    plot_locators,
    plot_patching,
    plot_shift,
)
from safety_probe.viz.render import COLUMN_WIDTH_IN, PNG_DPI

N_LAYERS = 8
NAMES = (
    "cos_matched",
    "cos_mismatched",
    "cos_centred",
    "cka",
    "cos_last",
    "refusal_prob",
    "attention_mass",
    "refusal_direction_auroc",
    "patching_gain",
    "tail_patching_gain",
)


def _scores() -> dict[str, LayerScores]:
    rng = np.random.default_rng(0)
    return {
        name: LayerScores.from_pairs(name, rng.uniform(size=(6, N_LAYERS)) + i, n_boot=50)
        for i, name in enumerate(NAMES)
    }


HISTOGRAM = {"counts": [0, 1, 0, 2, 3, 0, 0, 0], "n_none": 1}


def _result(scores: dict[str, LayerScores], safety_layers: list[int]) -> LayerAnalysis:
    return LayerAnalysis(N_LAYERS, safety_layers, "default", scores, RefusalTokens({}, "none"), [],
                         locators={"histogram": HISTOGRAM})


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    scores = _scores()
    return out, draw_all(_result(scores, [3, 4, 5]), out), scores


def test_draw_all_writes_every_figure_in_three_formats(drawn):
    out, paths, _ = drawn
    stems = ("shift", "locate", "locators", "patching", "last_token")
    assert sorted(p.name for p in paths) == sorted(
        f"{s}.{ext}" for s in stems for ext in ("pdf", "png", "html")
    )
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_pdf_embeds_truetype_not_type3(drawn):
    _, paths, _ = drawn
    for path in (p for p in paths if p.suffix == ".pdf"):
        data = path.read_bytes()
        assert b"/FontType 3" not in data and b"/Subtype /Type3" not in data
        assert b"/CIDFontType2" in data or b"/Subtype /TrueType" in data


def test_png_is_column_width_at_300_dpi(drawn):
    _, paths, _ = drawn
    for path in (p for p in paths if p.suffix == ".png"):
        with Image.open(path) as img:
            assert img.size[0] == round(COLUMN_WIDTH_IN * PNG_DPI)
            assert 300 < img.size[1] < 1500


def test_html_is_offline_and_carries_the_numbers(drawn):
    out, _, scores = drawn
    html = (out / "shift.html").read_text(encoding="utf-8")
    assert re.search(r'<script[^>]*src="https?://', html) is None  # nothing fetched from a CDN
    assert len(html) > 1_000_000 and "Plotly.newPlot" in html  # plotly.js is inline
    assert json.dumps(float(scores["cos_matched"].mean[4])) in html
    assert json.dumps(float(scores["cka"].upper[2])) in html
    assert json.dumps(float(scores["refusal_prob"].mean[1])) in (out / "locate.html").read_text(
        encoding="utf-8"
    )


def test_plot_functions_return_figures_and_leave_rcparams_alone():
    before = dict(matplotlib.rcParams)
    scores = _scores()
    figs = [
        plot_shift(scores, [3]),
        plot_locate(scores["refusal_prob"], HISTOGRAM, [3, 4]),
        plot_locators(scores, HISTOGRAM, [2, 3, 6]),  # two separate safety runs
        plot_last_token(scores["cos_last"]),
        plot_patching(scores, [3], n_pairs=6),
        plot_patching({"tail_patching_gain": scores["tail_patching_gain"]}),  # either curve alone draws
    ]
    assert all(isinstance(f, Figure) for f in figs)
    assert isinstance(plot_shift(scores, backend="plotly"), go.Figure)
    assert dict(matplotlib.rcParams) == before
    with pytest.raises(ValueError, match="backend"):
        plot_last_token(scores["cos_last"], backend="svg")
    with pytest.raises(KeyError, match="cos_matched"):
        plot_shift({"cka": scores["cka"]})
    with pytest.raises(ValueError, match="patching_gain"):
        plot_patching({"cka": scores["cka"]})


def test_partial_results_draw_only_what_they_support(tmp_path):
    scores = _scores()
    # Only the shift scores saved: only the shift figure is drawn; layers.csv/json round-trip.
    frame = scores_frame([scores["cos_matched"]])
    frame.to_csv(tmp_path / "layers.csv", index=False)
    (tmp_path / "layers.json").write_text(json.dumps({"safety_layers": [2]}))
    paths = draw_all(LayerAnalysis.load(tmp_path), tmp_path / "b")
    assert sorted(p.name for p in paths) == ["shift.html", "shift.pdf", "shift.png"]
