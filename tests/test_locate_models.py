"""Locating on tiny LLaVAs whose weights are set by hand, so the right answer is known.

* Two models whose greedy text-run answers are "I'm sorry." and "Sorry, I can't.": K is the first token of
  each model's own refusals.
* A model whose block 2 alone writes a refusal token's direction (every other block is silent) while a rare
  token's log-probability jumps even more at that block: Algorithm 1 with the candidate floor returns block 2
  (the paper's verbatim argmax returns nothing), and the band is block 2 alone, not the silent blocks above it
  nor the readout block.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_pairs_file

from safety_probe.analysis.analyze import analyze
from safety_probe.cli import main
from safety_probe.data.pairs import load_pairs
from safety_probe.models.load import load_vlm
from safety_probe.probe.config import LocateOptions, MeasureOptions
from safety_probe.probe.measure import measure
from safety_probe.testing.circuits import orthonormal, silence_blocks, spell, write_direction
from safety_probe.testing.tiny import TINY_FAMILIES, build_tiny_vlm

N_LAYERS, WRITER = 6, 2
ROWS = [(f"a {c} thing number {i}", "Describe this image.", label, "scene")
        for i, (c, label) in enumerate([("red", "harmful"), ("blue", "harmful"), ("green", "harmful"),
                                        ("black", "harmful"), ("white", "harmful"), ("pink", "harmful"),
                                        ("small", "benign"), ("large", "benign")])]


@pytest.fixture(scope="module")
def six_block_llava(tmp_path_factory):
    return build_tiny_vlm("llava", tmp_path_factory.mktemp("llava6"), seed=0, num_hidden_layers=N_LAYERS)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return load_pairs(write_pairs_file(tmp_path_factory.mktemp("pairs6"), ROWS))


def _last_prompt_token(vlm, pair) -> int:
    batch = vlm.encode([pair], "text")
    return int(batch.inputs["input_ids"][0, batch.last_index[0]])


@pytest.mark.parametrize("refusal", ["I'm sorry.", "Sorry, I can't."])
def test_refusal_tokens_are_the_first_tokens_of_the_models_own_refusals(six_block_llava, pairs, refusal):
    vlm = load_vlm(six_block_llava)
    silence_blocks(vlm)
    tokens = vlm.tokenizer.encode(refusal, add_special_tokens=False)
    spell(vlm, tokens, after=_last_prompt_token(vlm, pairs[0]))
    states, measurements = measure(vlm, pairs, MeasureOptions(patch_pairs=0), progress=False)
    result = analyze(states, measurements)
    assert measurements.responses.texts[0] == refusal
    assert result.refusal_tokens.source == "generated"
    assert list(result.refusal_tokens.ids) == [tokens[0]]
    bare_i = vlm.tokenizer.convert_tokens_to_ids("I")
    assert (bare_i in result.refusal_tokens.ids) == refusal.startswith("I")
    assert result.summary()["text_run_refusal"]["harmful"]["share"] == 1.0


def _writer_model(path):
    """Block WRITER adds c·u_s; the unembedding reads u_s as the refusal token s and −ê as a rare token r.

    Before the writer the lens is W_U·norm(ê) at every layer: s sits at chance (~1/V) and r near e^-25. The
    writer shrinks ê's share of the normed state, so r's log-probability rises ~9.4 nats while s's rises ~5.4
    and s becomes the top-1 (p ≈ 0.44), with r still below 1e-9.
    """
    vlm = load_vlm(path)
    silence_blocks(vlm)
    s, r = vlm.tokenizer.convert_tokens_to_ids(["Ġcannot", "Ġtable"])
    q_e, q_s = orthonormal(vlm.d_model, 2, seed=3)
    root_d = vlm.d_model ** 0.5
    with torch.no_grad():
        vlm.unembed.weight[s] = 0.94 * q_s
        vlm.unembed.weight[r] = -25.0 / root_d * q_e
    write_direction(vlm, WRITER, 1.33 * q_s)
    return vlm, s, r, q_e


def test_band_is_the_block_that_writes_the_refusal_and_a_rare_jump_does_not_hide_it(six_block_llava, pairs):
    vlm, s, r, q_e = _writer_model(six_block_llava)
    last = _last_prompt_token(vlm, pairs[0])
    with torch.no_grad():
        vlm.model.get_input_embeddings().weight[last] = q_e
    states, measurements = measure(vlm, pairs, MeasureOptions(patch_pairs=0, refusal_phrase="cannot"), progress=False)
    # this model refuses every run, benign ones too: no answered run to contrast with, so the default draws no band
    default = analyze(states, measurements)
    assert default.safety_layers == [] and any("no safety layers drawn" in w for w in default.warnings)
    result = analyze(states, measurements, LocateOptions(test="alg1", rule="share"))  # the earlier default
    # the premise: at the writer, r's log-probability jumps the most while s becomes the top-1
    lens = torch.log_softmax(vlm.logit_lens(states.caption_last[0]), -1)
    jump = lens[WRITER] - lens[WRITER - 1]
    assert int(jump.argmax()) == r and jump[r] > jump[s] > 3
    assert int(lens[WRITER].argmax()) == s and lens[WRITER, r].exp() < 1e-6
    assert list(result.refusal_tokens.ids) == [s]
    summary = result.summary()
    assert summary["algorithm1"]["paper_per_pair"] == [None] * 6   # the verbatim argmax never fires
    assert summary["algorithm1"]["per_pair"] == [WRITER] * 6
    assert result.safety_layers == [WRITER]                        # none of the silent blocks above
    assert summary["decision"]["end_per_pair"] == [WRITER] * 6
    # the released code's end rule runs to the readout block, where s is still the top-1
    code = analyze(states, measurements, LocateOptions(test="alg1", rule="code"))
    assert code.safety_layers == list(range(WRITER, N_LAYERS))
    # this model refuses everything, so Algorithm 1 flags every benign text run as well
    assert summary["algorithm1"]["benign_false_positive"]["share"] == 1.0


def test_probe_layers_on_two_pairs_writes_states_and_algorithm1(six_block_llava, tmp_path):
    pairs_file = write_pairs_file(tmp_path / "two", [ROWS[0], ROWS[6]])
    out = tmp_path / "out"
    assert main(["probe", "--model", str(six_block_llava), "--pairs", str(pairs_file), "--out", str(out),
                 "--figures", "false"]) == 0
    assert (out / "states.safetensors").is_file()
    layers = json.loads((out / "layers.json").read_text())
    assert len(layers["algorithm1"]["per_pair"]) == 1
    assert any("refusal direction skipped" in w for w in layers["warnings"])
    assert any("no safety layers drawn" in w for w in layers["warnings"])
    assert layers["safety_layers"] == [] and layers["support"]["band_drawn"] is False


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_probe_layers_with_the_scene_template_on_every_family(tiny_model_dir, pairs_file, family, tmp_path):
    out = tmp_path / family
    assert main(["probe", "--model", str(tiny_model_dir(family)), "--pairs", str(pairs_file), "--out", str(out),
                 "--text-template", "scene", "--patch-pairs", "1", "--figures", "false"]) == 0
    run = json.loads((out / "run.json").read_text())
    layers = json.loads((out / "layers.json").read_text())
    assert run["config"]["prompts"]["text_template"] == layers["settings"]["text_template"] == "scene"
    assert "benign_false_positive" in layers["algorithm1"]
