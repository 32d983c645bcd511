"""Locators on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safety_probe.analysis.locate import (
    LensStats,
    attention_mass_scores,
    choose_safety_layers,
    code_start_end,
    layer_histogram,
    lens_stats,
    patching_gain_scores,
    refusal_direction,
    refusal_prob_scores,
)
from safety_probe.analysis.scores import LayerScores, bootstrap_mean_band, paired_exact_test, scores_frame
from safety_probe.probe.lens import trace_of
from safety_probe.probe.refusal import TextRunResponses, fallback_refusal_tokens, refusal_tokens_from_responses

REFUSAL = 7
N_LAYERS, VOCAB = 6, 12


def _lens(boosts: list[dict[int, float]]) -> torch.Tensor:
    """Lens log-probs [n, 6, 12] with refusal token 7 boosted per pair at the given blocks.

    Without a boost, a sink token 0 loses mass block by block to six filler tokens 1-6 (so they lead
    both D_l and p_l − p_{l−1}), while token 7 and tokens 8-11 stay negligible.
    """
    layer = torch.arange(N_LAYERS, dtype=torch.float32)
    base = torch.full((N_LAYERS, VOCAB), -10.0)
    base[:, 0] = 10 - 2 * layer
    for k in range(1, 7):
        base[:, k] = (0.1 + 0.01 * k) * layer
    logits = base.repeat(len(boosts), 1, 1)
    for i, boost in enumerate(boosts):
        for at, amount in boost.items():
            logits[i, at, REFUSAL] += amount
    return torch.log_softmax(logits, dim=-1)


# pair 0: refusal from block 3 on; pair 1: never; pair 2: only at blocks 2-3; pair 3: a jump in
# log-probability at block 2 that leaves token 7 improbable (Algorithm 1 fires, the top-5 rule does
# not), then refusal from block 4 on.
BOOSTS = [
    {3: 30.0, 4: 30.0, 5: 30.0},
    {},
    {2: 30.0, 3: 30.0},
    {2: 5.0, 3: 5.0, 4: 30.0, 5: 30.0},
]


def _stats(lp: torch.Tensor, k: set[int], **kwargs) -> LensStats:
    """Locator statistics of lens log-probs ``lp`` (every token in the pool, every token a candidate)."""
    return lens_stats(trace_of(lp, range(VOCAB), top=VOCAB), k, **kwargs)


def test_algorithm1_first_layer_with_refusal_argmax():
    assert LensStats.as_layers(_stats(_lens(BOOSTS), {REFUSAL}).alg1) == [3, None, 2, 2]


def test_code_start_end_per_pair_and_means():
    stats = _stats(_lens(BOOSTS), {REFUSAL})
    assert LensStats.as_layers(stats.code_start) == [3, None, 2, 4]
    assert LensStats.as_layers(stats.code_end) == [5, None, 3, 5]
    summary = code_start_end(stats)
    assert summary["start_mean"] == pytest.approx(3.0) and summary["start_n"] == 3
    assert summary["end_mean"] == pytest.approx(13 / 3) and summary["end_n"] == 3


def test_refusal_probability_is_mass_on_k():
    lp = _lens(BOOSTS)
    stats = _stats(lp, {REFUSAL, 0})
    np.testing.assert_allclose(
        stats.refusal_prob, (lp[..., REFUSAL].exp() + lp[..., 0].exp()).numpy(), rtol=1e-5
    )
    assert stats.refusal_prob.shape == (4, N_LAYERS)
    scores = refusal_prob_scores(_stats(lp, {REFUSAL}).refusal_prob)
    assert scores.mean[5] > 0.4 and scores.mean[1] < 0.01


def test_lens_stats_batches_concatenate_to_the_full_result():
    lp = _lens(BOOSTS)
    full = _stats(lp, {REFUSAL})
    parts = LensStats.concat([_stats(lp[:3], {REFUSAL}), _stats(lp[3:], {REFUSAL})])
    for name in LensStats.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(parts, name), getattr(full, name))


def test_lens_stats_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        _stats(torch.zeros(2, 1, VOCAB), {1})
    with pytest.raises(ValueError, match="not in the measured pool"):
        lens_stats(trace_of(torch.zeros(2, 3, VOCAB), [1, 2]), {3})
    with pytest.raises(ValueError, match="n_runs, n_layers, vocab"):
        trace_of(torch.zeros(3, VOCAB), [1])
    with pytest.raises(ValueError, match="exceeds the 5 lens tokens"):
        lens_stats(trace_of(torch.zeros(2, 3, VOCAB), [1], top=5), {1}, candidates=10)


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "<unk>",
        "▁Sorry",
        "Sorry",
        "▁sorry",
        "▁I",
        "▁cannot",
        "▁unable",
        "▁As",
        "▁hello",
        "▁Hello",
        "▁there",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>"), {
        w: i for i, w in enumerate(words)
    }


def test_refusal_token_ids_from_a_sentencepiece_style_tokenizer():
    tokenizer, ids = _tiny_tokenizer()
    k = fallback_refusal_tokens(tokenizer).ids
    expected = {"▁Sorry", "Sorry", "▁sorry", "▁cannot", "▁unable"}  # never a bare "I"
    assert set(k.values()) == expected
    assert set(k) == {ids[w] for w in expected}
    assert ids["<unk>"] not in k and ids["▁hello"] not in k
    assert ids["▁Hello"] in fallback_refusal_tokens(tokenizer, ["Hello there"]).ids
    assert ids["▁I"] in fallback_refusal_tokens(tokenizer, ["I cannot do that."]).ids  # the model's own words


def test_refusal_token_ids_keep_whole_words_only_in_a_small_bpe():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = ["Sorry, I cannot help you.", "a cup on a table", "an apple and a ball"] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    pieces = {t.lstrip("Ġ") for t in fallback_refusal_tokens(tokenizer).ids.values()}
    assert pieces == {"Sorry", "cannot"}, pieces  # no "I", no first bytes of apologize / Unfortunately / unable


def test_layer_scores_band_and_frame():
    per_pair = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])
    s = LayerScores.from_pairs("x", per_pair, layers=[4, 5, 6])
    np.testing.assert_allclose(s.mean, [1.0, 2.0, 3.0])
    assert np.all(s.lower <= s.mean) and np.all(s.mean <= s.upper)
    frame = s.to_frame()
    assert list(frame.columns) == ["layer", "x_mean", "x_lower", "x_upper"]
    back = LayerScores.from_frame(scores_frame([s]), "x")
    assert back.layers == [4, 5, 6]
    np.testing.assert_allclose(back.upper, s.upper)
    with pytest.raises(ValueError, match="3 layer columns"):
        LayerScores.from_pairs("x", per_pair, layers=[0, 1])


def test_paired_exact_test_counts_discordant_items_only():
    # 10 items: both defend 3, neither 2; first only 4, second only 1 -> p = 2 * (1 + 5) / 32
    first = [True] * 3 + [False] * 2 + [True] * 4 + [False]
    second = [True] * 3 + [False] * 2 + [False] * 4 + [True]
    assert paired_exact_test(first, second) == {"first_only": 4, "second_only": 1, "p": 0.375}
    assert paired_exact_test(second, first)["p"] == 0.375
    assert paired_exact_test([True, False], [True, False])["p"] == 1.0  # no discordant item
    assert paired_exact_test([True] * 12, [False] * 12)["p"] == 2 / 2**12
    with pytest.raises(ValueError):
        paired_exact_test([True], [True, False])


def test_bootstrap_band_degenerate_cases():
    const = np.ones((5, 3))
    lower, upper = bootstrap_mean_band(const)
    np.testing.assert_allclose(lower, 1.0) and np.testing.assert_allclose(upper, 1.0)
    lower, upper = bootstrap_mean_band(np.array([[2.0, 3.0]]))
    np.testing.assert_allclose(lower, [2.0, 3.0])
    # The band narrows as pairs are added.
    rng = np.random.default_rng(0)
    small = np.subtract(*bootstrap_mean_band(rng.normal(size=(20, 1)))[::-1])
    large = np.subtract(*bootstrap_mean_band(rng.normal(size=(2000, 1)))[::-1])
    assert large[0] < small[0] / 4


def test_attention_and_patching_scores():
    att = attention_mass_scores(torch.tensor([[0.1, 0.5], [0.3, 0.7]]))
    np.testing.assert_allclose(att.mean, [0.2, 0.6])
    assert att.name == "attention_mass"
    gain = patching_gain_scores(np.array([[0.5, 0.9], [0.2, 0.4]]), np.array([0.5, 0.2]))
    np.testing.assert_allclose(gain.per_pair, [[0.0, 0.4], [0.0, 0.2]])
    with pytest.raises(ValueError, match="baseline"):
        patching_gain_scores(np.zeros((2, 3)), np.zeros(3))


def test_refusal_direction_separates_where_the_means_differ():
    gen = torch.Generator().manual_seed(0)
    n, n_layers, d, shift_layer = 40, 5, 16, 3
    shift = torch.zeros(d)
    shift[2] = 3.0
    harmful = torch.randn(n, n_layers, d, generator=gen)
    benign = torch.randn(n, n_layers, d, generator=gen)
    harmful[:, shift_layer] += shift
    scores, directions = refusal_direction(harmful, benign)
    assert directions.shape == (n_layers, d)
    assert scores.mean[shift_layer] > 0.95
    others = np.delete(scores.mean, shift_layer)
    assert np.all(np.abs(others - 0.5) < 0.25)
    cos = torch.nn.functional.cosine_similarity(directions[shift_layer], shift, dim=0)
    assert cos > 0.9
    assert scores.lower[shift_layer] <= scores.mean[shift_layer] <= scores.upper[shift_layer]
    with pytest.raises(ValueError, match="at least 2"):
        refusal_direction(harmful[:1], benign)


def test_choose_safety_layers_rules():
    fires = np.zeros((4, 8), dtype=bool)
    fires[:, 3] = True          # every refusing pair: K rises the most at block 3
    fires[:3, 4] = True         # three of four at block 4
    fires[:1, 6] = True         # one of four at block 6: not a majority
    assert choose_safety_layers(8, fires) == [3, 4]
    assert choose_safety_layers(8, fires, band_share=0.2) == [3, 4, 6]  # a band need not be contiguous
    start = [2, 3, None]  # mean 2.5 rounds half up to 3
    end = [7, 7, 6, -1]  # mean 6.67 → 7
    assert choose_safety_layers(8, fires, start, end, rule="code") == [3, 4, 5, 6, 7]
    assert choose_safety_layers(8, override=[3, 1, 2, 3]) == [1, 2, 3]


def test_choose_safety_layers_errors():
    with pytest.raises(ValueError, match=r"layer 40 is out of range.*\(0-31\)"):
        choose_safety_layers(32, override=[10, 40])
    with pytest.raises(ValueError, match="unknown safety-layer rule"):
        choose_safety_layers(32, np.ones((2, 32), bool), [1], [1], rule="median")
    with pytest.raises(ValueError, match="no pair has a code_start layer"):
        choose_safety_layers(32, None, [None, -1], [3], rule="code")
    with pytest.raises(ValueError, match="no layer fires for 50% of the refusing pairs"):
        choose_safety_layers(8, np.eye(4, 8, dtype=bool))
    with pytest.raises(ValueError, match="no refusing pair"):
        choose_safety_layers(8, np.zeros((0, 8), bool))


def test_a_block_that_changes_nothing_never_fires():
    lp = _lens(BOOSTS)
    lp[:, 4] = lp[:, 3]  # block 4 copies block 3's output exactly
    stats = _stats(lp, {REFUSAL})
    assert not stats.fires[:, 4].any()
    # a constant boost rises only where it starts: pair 0 at 3, pair 2 at 2, pair 3 at 2 and again at 5
    assert LensStats.as_layers(stats.decision_end) == [3, None, 2, 5]


def test_candidate_floor_ignores_a_rare_tokens_jump():
    lp = _lens(BOOSTS)
    # token 11 jumps by 40 nats at block 3 in every pair (more than the refusal's 30) but stays below 1e-6:
    # the paper's verbatim argmax takes it
    logits = lp.clone()
    logits[:, :3, 11] -= 40.0
    lp = torch.log_softmax(logits, dim=-1)
    stats = _stats(lp, {REFUSAL}, candidates=5)
    assert LensStats.as_layers(stats.alg1_paper) == [None, None, 2, 2]
    assert LensStats.as_layers(stats.alg1) == [3, None, 2, 4]
    assert lp[:, 3, 11].exp().max() < 1e-6
    assert LensStats.as_layers(_stats(lp, {REFUSAL}, candidates=0).alg1) == [None, None, 2, 2]


def test_refusal_tokens_from_responses_counts_refusals_and_answers():
    tokenizer, ids = _tiny_tokenizer()
    first = [[ids["▁Sorry"]], [ids["▁I"]], [ids["▁I"]], [ids["▁hello"]], []]
    names = {i: w for w, i in ids.items()}

    def responses(refused: list[bool]) -> TextRunResponses:
        return TextRunResponses(list(range(5)), [""] * 5, first, refused)

    k = refusal_tokens_from_responses(responses([True, True, False, False, True]), [True] * 5, names)
    assert k.source == "generated" and set(k.ids) == {ids["▁Sorry"], ids["▁I"]}
    assert k.refusals == {ids["▁Sorry"]: 1, ids["▁I"]: 1} and k.answers == {ids["▁I"]: 1}
    assert refusal_tokens_from_responses(responses([False] * 5), [True] * 5, names) is None


def test_layer_histogram():
    hist = layer_histogram([3, None, 3, 1, -1], n_layers=5)
    assert hist == {"counts": [0, 1, 0, 2, 0], "n_none": 2}
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        layer_histogram([5], n_layers=5)


def test_patching_band_reads_the_blocks_a_patching_curve_restores():
    from safety_probe.analysis.locate import patching_band

    gain = {"0": 0.0, "1": 0.2, "2": 0.5, "3": 0.6, "4": 0.9}  # block 4 is the readout: left out
    layers = {"n_layers": 5, "scores": {"tail_patching_gain": {"per_layer": gain},
                                        "patching_gain": {"per_layer": {"0": 0.4, "1": 0.1, "2": 0.0, "3": 0.0,
                                                                        "4": 0.0}}}}
    assert patching_band(layers) == [2, 3]
    assert patching_band(layers, "caption") == [0]
    with pytest.raises(ValueError):
        patching_band({"n_layers": 5, "scores": {}})


def test_organism_smol_preset_reads_its_tail_blocks_off_a_probe_run():
    from pathlib import Path

    from safety_probe.cli.presets import TGA_RECIPE_SMOL, smol_layers

    committed = Path(__file__).resolve().parents[1] / "experiments/organism_smol/results/probe/layers.json"
    spec, note = smol_layers(str(committed), TGA_RECIPE_SMOL["guide_span"])
    assert spec == ",".join(map(str, range(16, 29))) and "tail patching" in note
    assert smol_layers(str(committed), "image") == (str(committed), None)  # paper TGA keeps the file's band
    assert smol_layers("16-28", "tail") == ("16-28", None)
