"""The model pass and the pure analysis on a tiny LLaVA: logit lens, attention mass, patching, each run encoded once,
probe-layers end to end, and the band re-chosen by `safety-probe locate` without the model."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from safety_probe.analysis.analyze import analyze
from safety_probe.analysis.results import LayerAnalysis
from safety_probe.cli import main, probe_layers_main
from safety_probe.data.pairs import load_pairs
from safety_probe.models.hooks import Trace
from safety_probe.models.load import load_vlm
from safety_probe.models.spans import aligned_tails
from safety_probe.models.vlm import VLM
from safety_probe.probe.config import LocateOptions, MeasureOptions
from safety_probe.probe.lens import lens_logprobs
from safety_probe.probe.measure import Measurements, measure
from safety_probe.probe.patching import block_outputs, final_state, patch_caption, patch_tail
from safety_probe.probe.record import PairStates, record
from safety_probe.testing.tiny import TINY_FAMILIES


@pytest.fixture(scope="module")
def vlm(tiny_model_dir):
    return load_vlm(tiny_model_dir("llava"))


def test_lens_of_last_block_is_the_models_next_token_distribution(vlm, pairs_file):
    pairs = load_pairs(pairs_file)
    states = record(vlm, pairs, progress=False)
    batch = vlm.encode(pairs, "text")
    with torch.no_grad():
        logits = vlm.model(**batch.inputs).logits[torch.arange(len(pairs)), batch.last_index]
    lens = lens_logprobs(vlm, states.caption_last)
    assert lens.shape == (len(pairs), vlm.n_layers, logits.shape[-1])
    torch.testing.assert_close(lens[:, -1], torch.log_softmax(logits, -1), rtol=1e-4, atol=1e-4)


def test_measured_attention_matches_eager_attention(vlm, pairs_file):
    pairs = load_pairs(pairs_file)
    _, m = measure(vlm, pairs, MeasureOptions(patch_pairs=0), batch_size=2, progress=False)
    assert m.attention.shape == (len(pairs), vlm.n_layers)
    assert vlm.model.config._attn_implementation != "eager", "the eager switch must be undone"
    vlm.model.set_attn_implementation("eager")
    try:
        batch = vlm.encode(pairs[:1], "text")
        with torch.no_grad():
            attn = vlm.model(**batch.inputs, output_attentions=True).attentions
    finally:
        vlm.model.set_attn_implementation("sdpa")
    caption = batch.caption_mask[0]
    expected = torch.stack([a[0, :, -1, caption].sum(-1).mean() for a in attn])
    torch.testing.assert_close(m.attention[0], expected, rtol=1e-5, atol=1e-6)
    assert ((m.attention > 0) & (m.attention < 1)).all()


def _refusal(vlm: VLM, final: torch.Tensor, ids: list[int]) -> torch.Tensor:
    return lens_logprobs(vlm, final)[..., ids].exp().sum(-1)


def test_patching_known_answers(vlm, pairs_file):
    pairs = load_pairs(pairs_file)
    states = record(vlm, pairs, progress=False)
    batch = vlm.encode(pairs, "image")
    ids, layers = [5, 6, 7], list(range(vlm.n_layers))
    below = block_outputs(vlm, batch)
    base = _refusal(vlm, final_state(vlm, batch), ids)
    torch.testing.assert_close(base, _refusal(vlm, states.image_last[:, -1], ids), rtol=1e-4, atol=1e-7)
    # Moving the image tokens onto their own mean changes nothing.
    same = _refusal(vlm, patch_caption(vlm, batch, below, states.image_mean, layers, "shift"), ids)
    torch.testing.assert_close(same, base[:, None].expand_as(same), rtol=1e-4, atol=1e-7)
    # Patching the caption's state changes the output, except at the last block: the last prompt token's
    # output there is already computed when image positions change (causal attention).
    moved = _refusal(vlm, patch_caption(vlm, batch, below, states.caption_mean, layers, "replace"), ids)
    torch.testing.assert_close(moved[:, -1], base, rtol=1e-5, atol=1e-7)
    assert (moved[:, 0] - base).abs().max() > 1e-6
    # Running only the blocks above the patched one gives what a whole forward with the patch gives.
    for layer in layers:
        def replace(_: int, hidden: torch.Tensor, layer: int = layer) -> torch.Tensor:
            return torch.where(batch.image_mask.unsqueeze(-1), states.caption_mean[:, layer].unsqueeze(1), hidden)

        with torch.no_grad(), Trace(vlm.layers, [layer], retain=False, edit_output=replace), \
                Trace(vlm.layers, [vlm.n_layers - 1]) as read:
            vlm.model(**batch.inputs)
        whole = read.outputs[vlm.n_layers - 1][torch.arange(len(pairs)), batch.last_index]
        torch.testing.assert_close(_refusal(vlm, whole, ids), moved[:, layer], rtol=1e-5, atol=1e-7)


def test_tail_patching_known_answers(vlm, pairs_file):
    pairs = load_pairs(pairs_file)
    image, text = vlm.encode(pairs, "image"), vlm.encode(pairs, "text")
    image_tail, text_tail = aligned_tails(image.image_mask, image.last_index, text.caption_mask, text.last_index)
    ids, layers = [5, 6, 7], list(range(vlm.n_layers))
    source = {l: h[text_tail] for l, h in block_outputs(vlm, text).items()}
    base = _refusal(vlm, final_state(vlm, image), ids)
    patched = _refusal(vlm, patch_tail(vlm, image, block_outputs(vlm, image), image_tail, source, layers), ids)
    text_prob = _refusal(vlm, final_state(vlm, text), ids)
    # At the last block the last prompt position's state is the readout: patching the tail there gives the text run's
    # answer exactly; at block 0 the tail still attends to the image, so the answer moves but not all the way.
    torch.testing.assert_close(patched[:, -1], text_prob, rtol=1e-4, atol=1e-7)
    assert (patched[:, 0] - base).abs().max() > 1e-6
    assert (patched[:, 0] - text_prob).abs().max() > 1e-6


def test_measure_encodes_each_run_once_and_records_what_record_records(vlm, pairs_file, monkeypatch):
    pairs = load_pairs(pairs_file)
    calls: list[tuple[str, int]] = []
    encode = VLM.encode

    def counted(self, batch_pairs, run, *args, **kwargs):
        calls.append((run, len(batch_pairs)))
        return encode(self, batch_pairs, run, *args, **kwargs)

    monkeypatch.setattr(VLM, "encode", counted)
    states, m = measure(vlm, pairs, MeasureOptions(patch_pairs=2), batch_size=2, progress=False)
    monkeypatch.undo()
    for run in ("image", "text"):
        assert sum(n for r, n in calls if r == run) == len(pairs), calls  # every pair's run encoded exactly once
    alone = record(vlm, pairs, batch_size=2, progress=False)
    torch.testing.assert_close(states.image_mean, alone.image_mean)
    torch.testing.assert_close(states.caption_mean, alone.caption_mean, rtol=1e-5, atol=1e-5)  # eager vs sdpa
    assert m.patched == [0, 3] and m.patch["caption"].shape == (2, vlm.n_layers, len(m.pool))
    assert len(m.responses.texts) == len(pairs) and m.labels[0] == "harmful"


def test_analysis_is_a_pure_function_of_what_was_saved(vlm, pairs_file, tmp_path):
    pairs = load_pairs(pairs_file)
    states, m = measure(vlm, pairs, MeasureOptions(patch_pairs=2), progress=False)
    m.save(tmp_path, key="k")
    states.save(tmp_path / "states.safetensors")
    again = Measurements.load(tmp_path)
    options = LocateOptions(min_support=1, safety_layers="0-1")
    first = analyze(states, m, options)
    second = analyze(PairStates.load(tmp_path / "states.safetensors"), again, options)
    pd.testing.assert_frame_equal(first.frame(), second.frame())
    assert first.summary() == second.summary()
    first.save(tmp_path)
    loaded = LayerAnalysis.load(tmp_path)
    assert loaded.safety_layers == first.safety_layers and loaded.refusal_tokens.ids == first.refusal_tokens.ids
    pd.testing.assert_frame_equal(loaded.frame(), first.frame(), check_dtype=False, atol=1e-6)
    assert len(repr(loaded)) < 1000


def test_probe_layers_end_to_end_and_redraw(tiny_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir("llava")), "--pairs", str(pairs_file), "--out", str(out),
            "--batch-size", "3", "--safety-layers", "0-1"]
    assert probe_layers_main(argv) == 0
    states = PairStates.load(out / "states.safetensors")
    assert states.image_mean.shape[:2] == (5, 2) and states.layers == [0, 1]
    layers = json.loads((out / "layers.json").read_text())
    assert layers["safety_layers"] == [0, 1]
    assert len(layers["algorithm1"]["per_pair"]) == 3  # the harmful pairs, in file order
    assert layers["harmful_pairs"] == [0, 3, 4]
    assert layers["refusal_tokens"]["source"] in ("generated", "phrases")
    assert all(isinstance(int(k), int) for k in layers["refusal_tokens"]["tokens"])
    assert layers["benign_pairs"] == [1, 2] and len(layers["algorithm1"]["benign_per_pair"]) == 2
    fp = layers["algorithm1"]["benign_false_positive"]
    assert fp["n"] == 2 and fp["lower"] <= fp["share"] <= fp["upper"]
    frame = pd.read_csv(out / "layers.csv")
    assert list(frame.columns[:3]) == ["layer", "hook", "safety_layer"] and len(frame) == 2
    assert {"alg1_benign_count", "alg1_fire_share_benign_mean", "cos_tail_mean"} <= set(frame.columns)
    assert frame["alg1_benign_count"].sum() == sum(v is not None for v in layers["algorithm1"]["benign_per_pair"])
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["batch_size"] == 3 and "torch" in run["versions"]
    assert run["config"]["prompts"]["text_template"] == "caption"
    stems = {p.stem for p in (out / "figures").iterdir() if p.name != "plotly.min.js"}
    assert {"shift", "locate", "locators"} <= stems
    for stem in stems:
        for ext in ("pdf", "png", "html"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 1000
    # Redraw from saved results only.
    for f in (out / "figures").iterdir():
        f.unlink()
    assert main(["figures", str(out)]) == 0
    assert {p.suffix for p in (out / "figures").iterdir()} == {".pdf", ".png", ".html", ".js"}
    assert main(["figures", str(tmp_path)]) == 2
    assert "no layers.csv" in capsys.readouterr().err


def test_locate_rechooses_the_band_without_the_model(tiny_model_dir, pairs_file, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("llava"), model)
    out = tmp_path / "run"
    assert probe_layers_main(["--model", str(model), "--pairs", str(pairs_file), "--out", str(out),
                              "--figures", "false", "--safety-layers", "0"]) == 0
    assert json.loads((out / "layers.json").read_text())["safety_layers"] == [0]
    shutil.rmtree(model)  # the rest happens without the model
    assert main(["locate", str(out), "--safety-layers", "1", "--figures", "false"]) == 0
    layers = json.loads((out / "layers.json").read_text())
    assert layers["safety_layers"] == [1] and layers["safety_layer_rule"] == "override"
    assert main(["locate", str(out), "--band-share", "0"]) == 2
    assert "--band-share" in capsys.readouterr().err
    assert main(["locate", str(tmp_path)]) == 2
    assert "no states.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_patching_from_the_patched_block_equals_a_whole_patched_forward(family, tiny_model_dir, pairs_file):
    vlm = load_vlm(tiny_model_dir(family))
    pairs = load_pairs(pairs_file)
    image, text = vlm.encode(pairs, "image"), vlm.encode(pairs, "text")
    image_tail, text_tail = aligned_tails(image.image_mask, image.last_index, text.caption_mask, text.last_index)
    below, above = block_outputs(vlm, image), block_outputs(vlm, text)
    source = {l: h[text_tail] for l, h in above.items()}
    layers = list(range(vlm.n_layers))
    fast = patch_tail(vlm, image, below, image_tail, source, layers)
    for layer in layers:
        def put(_: int, hidden: torch.Tensor, layer: int = layer) -> torch.Tensor:
            hidden = hidden.clone()
            hidden[image_tail] = source[layer].to(hidden.dtype)
            return hidden

        with torch.no_grad(), Trace(vlm.layers, [layer], retain=False, edit_output=put), \
                Trace(vlm.layers, [vlm.n_layers - 1]) as read:
            vlm.model(**image.inputs)
        whole = read.outputs[vlm.n_layers - 1][torch.arange(len(pairs)), image.last_index]
        torch.testing.assert_close(fast[:, layer], whole.float(), rtol=1e-5, atol=1e-5)


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_result_saves_the_folder_probe_layers_writes_and_draws_itself(vlm, tiny_model_dir, pairs_file, tmp_path):
    from matplotlib.figure import Figure

    from safety_probe.cli.probe import RUN_FILES

    out = tmp_path / "command"
    assert probe_layers_main(["--model", str(tiny_model_dir("llava")), "--pairs", str(pairs_file), "--out", str(out),
                              "--device", "cpu"]) == 0
    states, measurements = measure(vlm, load_pairs(pairs_file), progress=False)
    result = analyze(states, measurements)
    paths = result.save(tmp_path / "python", figures=True)
    assert _files(tmp_path / "python") == _files(out)  # exactly the command's files
    assert sorted(str(p.relative_to(tmp_path / "python")) for p in paths) == _files(out)
    assert {p for p in _files(out) if "/" not in p} == set(RUN_FILES)
    assert json.loads((tmp_path / "python" / "layers.json").read_text()) == json.loads((out / "layers.json").read_text())
    run = json.loads((tmp_path / "python" / "run.json").read_text())
    assert run["config"]["model"] == vlm.name and run["run_key"] == measurements.run_key
    assert run["config"]["analysis"]["locate"]["band_share"] == 0.5 and run["n_layers"] == vlm.n_layers
    # A second save keeps the states of the same run (no rewrite), and a loaded folder analyses the same.
    before = (tmp_path / "python" / "states.safetensors").stat().st_mtime_ns
    result.save(tmp_path / "python")
    assert (tmp_path / "python" / "states.safetensors").stat().st_mtime_ns == before
    again = analyze(PairStates.load(out / "states.safetensors"), Measurements.load(out))
    assert again.summary() == result.summary()
    # Figures with everything the result knows: three locate panels with their n, the shift with its n.
    locate = result.plot_locate()
    assert isinstance(locate, Figure) and len(locate.axes) == 3
    legends = [t.get_text() for ax in locate.axes for t in ax.get_legend().get_texts()]
    assert any(f"(n={result.support['harmful']})" in t for t in legends)
    assert "n = 3 harmful pairs" in result.plot_shift().axes[-1].get_xlabel()
    assert result.plot_patching(backend="plotly").data and result.plot_locators() and result.plot_last_token()
    assert repr(result).startswith(f"LayerAnalysis({vlm.name}: 3 harmful / 2 benign pairs, 2 blocks")
    assert len(repr(result)) <= 1000 and "states" not in repr(result)
    assert "<table" in result._repr_html_() and "P(refuse)" in result._repr_html_()


def test_repr_is_short_whatever_the_warnings():
    from safety_probe.probe.refusal import RefusalTokens

    result = LayerAnalysis(40, [], "default", {}, RefusalTokens({1: "ĠSorry"}, "generated", {1: " Sorry"}), [0],
                           warnings=[f"warning {i}: " + "x" * 400 for i in range(30)])
    text = repr(result)
    assert len(text) <= 1000 and "K = 'Sorry'" in text and "more warning(s)" in text
    assert all(len(line) <= 180 for line in text.splitlines())


def test_progress_ticks_block_runs_inside_each_batch_so_patching_keeps_the_eta(vlm, pairs_file, monkeypatch):
    from safety_probe.core import batches
    from safety_probe.eval.evaluate import evaluate

    settled = []
    real_settle = batches.Ticks.settle

    def settle(self, start: int, stop: int) -> None:
        settled.append((self.unit, start, stop, self._in_batch, self.cost(start, stop)))
        real_settle(self, start, stop)

    monkeypatch.setattr(batches.Ticks, "settle", settle)
    pairs = load_pairs(pairs_file)  # harmful: 0, 3, 4
    measure(vlm, pairs, MeasureOptions(patch_pairs=2), batch_size=2, progress=False)
    n = vlm.n_layers
    assert [(start, stop, cost) for _, start, stop, _, cost in settled] == [
        (0, 2, 6 * n + n * (n - 1)), (2, 4, 6 * n + n * (n - 1)), (4, 5, 3 * n)]  # pairs 0 and 3 patched
    assert all(ticked == cost for _, _, _, ticked, cost in settled)  # every unit ticked inside its batch
    settled.clear()
    evaluate(vlm, pairs, batch_size=2, max_new_tokens=2, progress=False)
    assert [(unit, ticked, cost) for unit, _, _, ticked, cost in settled] == [
        ("answer", 4, 4), ("answer", 4, 4), ("answer", 2, 2)]  # one tick per run answered
