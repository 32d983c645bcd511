"""Figures: written in every format, TrueType fonts in the PDF, PNG at column width, offline HTML with the data and one
shared plotly.js per folder; every statistic against its own null, absolute scales, bands and zero lines visible."""

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
    "cka_null",
    "cka_debiased",
    "cka_debiased_null",
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
        [f"{s}.{ext}" for s in stems for ext in ("pdf", "png", "html")] + ["plotly.min.js"]
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


def test_html_is_offline_shares_one_plotly_js_and_carries_the_numbers(drawn):
    out, _, scores = drawn
    html = (out / "shift.html").read_text(encoding="utf-8")
    assert re.search(r'<script[^>]*src="https?://', html) is None  # nothing fetched from a CDN
    assert '<script charset="utf-8" src="plotly.min.js">' in html and "Plotly.newPlot" in html
    assert len(html) < 100_000  # plotly.js is not inline: the folder's one copy serves every figure
    from plotly.offline import get_plotlyjs

    assert (out / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()
    total = sum(p.stat().st_size for p in out.iterdir() if p.suffix in (".html", ".js"))
    assert total < 6_000_000
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
    assert sorted(p.name for p in paths) == ["plotly.min.js", "shift.html", "shift.pdf", "shift.png"]


def test_each_cka_is_drawn_against_its_own_null_in_its_own_panel():
    fig = plot_shift(_scores(), [3])
    panels = {ax.get_ylabel(): [line.get_label() for line in ax.get_lines()] for ax in fig.axes}
    assert panels["linear CKA"] == ["CKA across pairs", "its permutation null"]
    assert panels["debiased CKA"] == ["debiased CKA", "its permutation null"]
    scores = _scores()
    null = {ax.get_ylabel(): ax.get_lines()[1].get_ydata() for ax in fig.axes if ax.get_ylabel().endswith("CKA")}
    np.testing.assert_allclose(null["debiased CKA"], scores["cka_debiased_null"].mean)
    np.testing.assert_allclose(null["linear CKA"], scores["cka_null"].mean)


def test_locators_are_on_one_absolute_scale_with_block_0_filled():
    scores = _scores()
    fig = plot_locators(scores, HISTOGRAM, [6, 7], backend="plotly")
    heat = fig.data[0]
    assert (heat.zmin, heat.zmax) == (-1.0, 1.0) and heat.colorbar.title.text == "probability or share"
    rows = list(heat.y)
    z = np.asarray(heat.z, dtype=float)
    rise = np.diff(scores["refusal_prob"].mean, prepend=0.0)
    np.testing.assert_allclose(z[rows.index("ΔP(refusal)")], rise)  # block 0: its rise from 0, not blank
    np.testing.assert_allclose(z[rows.index("patching gain")], scores["patching_gain"].mean)  # as measured
    np.testing.assert_allclose(z[rows.index("refusal dir. 2·AUROC−1")], 2 * scores["refusal_direction_auroc"].mean - 1)
    share = np.asarray(HISTOGRAM["counts"]) / (sum(HISTOGRAM["counts"]) + HISTOGRAM["n_none"])
    np.testing.assert_allclose(z[rows.index("Alg. 1 layer")], share)
    mpl = plot_locators(scores, HISTOGRAM, [6, 7])
    image = mpl.axes[0].get_images()[0]
    assert image.get_clim() == (-1.0, 1.0)


def test_the_band_of_the_last_layer_is_whole():
    last = N_LAYERS - 1
    for fig in (plot_shift(_scores(), [last - 1, last], backend="plotly"),
                plot_locate(_scores()["refusal_prob"], HISTOGRAM, [last], backend="plotly")):
        assert tuple(fig.layout.xaxis.range) == (-0.5, last + 0.5)
    fig = plot_shift(_scores(), [last])
    assert fig.axes[0].get_xlim() == (-0.5, last + 0.5)


def test_over_refusal_lines_at_zero_are_drawn_above_the_axis():
    from safety_probe.viz.bars import BarPanel, Bars, BarSpec, Baseline, render_bars

    panel = BarPanel("t", "DSR", ["a", "all"], [Bars("image run", [0.5, 0.2], "#000000")],
                     [Baseline("image run: benign over-refusal (n=3)", 0.0, "#D55E00")])
    fig = render_bars(BarSpec("t", [panel]), "matplotlib")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] < 0
    line = next(l for l in ax.get_lines() if l.get_label().startswith("image run: benign"))
    assert list(line.get_ydata()) == [0, 0] and line.get_zorder() > 1
    html = render_bars(BarSpec("t", [panel]), "plotly")
    assert html.layout.yaxis.range[0] < 0
