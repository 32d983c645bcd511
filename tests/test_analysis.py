"""Model-running parts of the analysis on a tiny LLaVA: logit lens, attention mass, patching, probe-layers end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from safety_probe.cli import main, probe_layers_main
from safety_probe.data.pairs import load_pairs
from safety_probe.models.load import load_vlm
from safety_probe.probe.lens import caption_attention_mass, lens_logprobs
from safety_probe.probe.patching import patch_caption_into_image, patch_text_tail_into_image
from safety_probe.probe.record import record


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


def test_attention_mass_matches_eager_attention(vlm, pairs_file):
    pairs = load_pairs(pairs_file)
    mass = caption_attention_mass(vlm, pairs, batch_size=2, progress=False)
    assert mass.shape == (len(pairs), vlm.n_layers)
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
    torch.testing.assert_close(mass[0], expected, rtol=1e-5, atol=1e-6)
    assert ((mass > 0) & (mass < 1)).all()


def test_patching_known_answers(vlm, pairs_file):
    pairs = load_pairs(pairs_file)
    states = record(vlm, pairs, progress=False)
    ids = [5, 6, 7]
    layers = range(vlm.n_layers)
    # Moving the image tokens onto their own mean changes nothing.
    base, same = patch_caption_into_image(vlm, pairs, states.image_mean, ids, layers, "shift", progress=False)
    torch.testing.assert_close(same, base[:, None].expand_as(same), rtol=1e-4, atol=1e-7)
    # Patching the caption's state changes the output, except at the last block: the last prompt token's
    # output there is already computed when image positions change (causal attention).
    base2, moved = patch_caption_into_image(vlm, pairs, states.caption_mean, ids, layers, "replace", progress=False)
    torch.testing.assert_close(base2, base)
    torch.testing.assert_close(moved[:, -1], base, rtol=1e-5, atol=1e-7)
    assert (moved[:, 0] - base).abs().max() > 1e-6


def test_tail_patching_known_answers(vlm, pairs_file):
    pairs = load_pairs(pairs_file)
    ids = [5, 6, 7]
    layers = list(range(vlm.n_layers))
    base, patched, text = patch_text_tail_into_image(vlm, pairs, ids, layers, batch_size=2, progress=False)
    _, unpatched = patch_caption_into_image(vlm, pairs, record(vlm, pairs, progress=False).image_mean, ids, [0],
                                            "shift", progress=False)
    torch.testing.assert_close(base, unpatched[:, 0], rtol=1e-4, atol=1e-7)
    # At the last block the last prompt position's state is the readout: patching the tail there gives the text run's
    # answer exactly; at block 0 the tail still attends to the image, so the answer moves but not all the way.
    torch.testing.assert_close(patched[:, -1], text, rtol=1e-4, atol=1e-7)
    assert (patched[:, 0] - base).abs().max() > 1e-6
    assert (patched[:, 0] - text).abs().max() > 1e-6


def test_probe_layers_end_to_end_and_redraw(tiny_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir("llava")), "--pairs", str(pairs_file), "--out", str(out),
            "--batch-size", "3", "--safety-layers", "0-1"]
    assert probe_layers_main(argv) == 0
    from safety_probe.probe.record import PairStates

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
    assert {"alg1_benign_count", "alg1_fire_share_benign_mean"} <= set(frame.columns)
    assert frame["alg1_benign_count"].sum() == sum(v is not None for v in layers["algorithm1"]["benign_per_pair"])
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["batch_size"] == 3 and "torch" in run["versions"]
    assert run["config"]["text_template"] == "caption"
    stems = {p.stem for p in (out / "figures").iterdir()}
    assert {"shift", "locate", "locators"} <= stems
    for stem in stems:
        for ext in ("pdf", "png", "html"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 1000
    # Redraw from saved results only.
    for f in (out / "figures").iterdir():
        f.unlink()
    assert main(["figures", str(out)]) == 0
    assert {p.suffix for p in (out / "figures").iterdir()} == {".pdf", ".png", ".html"}
    assert main(["figures", str(tmp_path)]) == 2
    assert "no layers.csv" in capsys.readouterr().err
