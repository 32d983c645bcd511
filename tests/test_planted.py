"""The planted models do what their ground truth says: greedy text runs refuse exactly the pairs marked, the refusal's
first token forms at the planted block, and each kind carries its difficulty."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from safety_probe.cli import main
from safety_probe.data.pairs import load_pairs
from safety_probe.models.generate import generate_encoded
from safety_probe.models.load import load_vlm
from safety_probe.probe.record import Recorder
from safety_probe.probe.refusal import is_refusal
from safety_probe.testing.planted import PLANTED_KINDS, build_planted


@pytest.fixture(scope="module", params=PLANTED_KINDS)
def planted(request, tmp_path_factory):
    m = build_planted(request.param, tmp_path_factory.mktemp(request.param), n_pairs=20, seed=3)
    vlm = load_vlm(m.folder)
    pairs = load_pairs(m.pairs)
    batch = vlm.encode(pairs, "text")
    lens = torch.log_softmax(vlm.logit_lens(Recorder(vlm, list(range(vlm.n_layers)))(batch, "caption")["last"]), -1)
    return m, vlm, pairs, [t for t, _ in generate_encoded(vlm, vlm.encode(pairs, "text", padding_side="left"), 16)], lens


def test_greedy_text_runs_refuse_exactly_the_pairs_marked(planted):
    m, _, pairs, texts, _ = planted
    assert [is_refusal(t) for t in texts] == list(m.refuses)
    assert all(t == m.refusal for t, r in zip(texts, m.refuses) if r)
    assert any(p.label == "harmful" and not r for p, r in zip(pairs, m.refuses))  # answered harmful runs exist


def test_the_refusal_token_forms_at_the_planted_block(planted):
    m, vlm, _, _, lens = planted
    (block,) = m.blocks
    k = vlm.tokenizer.encode(m.refusal, add_special_tokens=False)[0]
    refused = torch.tensor(m.refuses)
    rise = lens[:, 1:, k] - lens[:, :-1, k]  # [n, L-1]: rise into block l+1
    assert bool((rise[refused].argmax(1) + 1 == block).all())
    assert bool((lens[refused, block - 1, k].exp() < 0.05).all()) and bool((lens[refused, block, k].exp() > 0.3).all())


def test_each_kind_carries_its_difficulty(planted):
    m, vlm, pairs, texts, lens = planted
    (block,) = m.blocks
    if m.kind == "shared":  # some answers open with the refusal's first token, formed at the same block
        think = [i for i, (t, r) in enumerate(zip(texts, m.refuses)) if not r and t.startswith("I ")]
        assert think
        k = vlm.tokenizer.encode("I", add_special_tokens=False)[0]
        assert bool((lens[think, block, k] - lens[think, block - 1, k] > 3).all())
    if m.kind == "content":  # the trigger word's log-prob rises more than the refusal token's at the block
        k = vlm.tokenizer.encode(m.refusal, add_special_tokens=False)[0]
        for i, (p, r) in enumerate(zip(pairs, m.refuses)):
            if r:
                word = vlm.tokenizer.encode(" " + p.scene, add_special_tokens=False)[0]
                jump = lens[i, block] - lens[i, block - 1]
                assert jump[word] > jump[k] and int(lens[i, block].argsort(descending=True)[:10].eq(word).sum()) == 1


@pytest.mark.parametrize("kind", PLANTED_KINDS)
def test_probe_layers_locates_the_planted_block_and_no_answer(kind, tmp_path):
    """Issue 24's acceptance on every planted model: refused runs located >= 0.95, answered runs fired <= 0.05, the
    band the planted block alone (the default test, K and band rule; 120 pairs)."""
    m = build_planted(kind, tmp_path / kind, n_pairs=120, seed=2)
    out = tmp_path / f"{kind}-run"
    assert main(["probe", "--model", str(m.folder), "--pairs", str(m.pairs), "--out", str(out), "--device", "cpu",
                 "--patch-pairs", "0", "--figures", "false", "--refusal-phrase", m.refusal]) == 0
    layers = json.loads((out / "layers.json").read_text())
    assert layers["safety_layers"] == list(m.blocks), kind
    located = layers["separation"]["peak"]["in_band"]
    assert located["refused"]["share"] >= 0.95 and located["answered"]["share"] <= 0.05, (kind, located)
    assert set(layers["separation"]) == {"peak", "alg1", "paper", "gain", "entry", "direction"}
    if kind == "shared":  # "I" opens refusals and answers: its continuation tells them apart
        assert list(layers["ambiguous_tokens"].values()) == ["I"]
        answered_paper = layers["separation"]["paper"]["in_band"]["answered"]["share"]
        assert answered_paper > 0.3, "the paper's rule (its K: every 'I') fires on the answers opening with 'I' too"


def test_locate_rechooses_a_planted_band_after_the_model_is_gone(tmp_path):
    """Issue 23's acceptance: `safety-probe locate RUN --min-support 4` on a finished run whose model folder was
    deleted rewrites layers.json (a planted model deciding at block 3 of 8: [3])."""
    m = build_planted("plain", tmp_path / "planted", n_pairs=40, seed=3, layout=(8, 3))
    out = tmp_path / "run"
    assert main(["probe", "--model", str(m.folder), "--pairs", str(m.pairs), "--out", str(out), "--device", "cpu",
                 "--patch-pairs", "0", "--figures", "false", "--safety-layers", "6",
                 "--refusal-phrase", m.refusal]) == 0
    assert json.loads((out / "layers.json").read_text())["safety_layers"] == [6]
    shutil.rmtree(m.folder)
    assert main(["locate", str(out), "--min-support", "4"]) == 0
    assert json.loads((out / "layers.json").read_text())["safety_layers"] == [3]
    assert {p.suffix for p in (out / "figures").iterdir()} >= {".pdf", ".png", ".html"}
