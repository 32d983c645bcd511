"""TransformerLens / nnsight habits on the VLM, on a tiny model of every family: ``run_with_cache`` gives what a
``Trace`` of the same encoding reads (per-token states, masks, tokens) and what probe-layers pools from it;
``generate`` and ``to_tokens`` are the measurements' own."""

from __future__ import annotations

import pytest
import torch

from safety_probe.core.errors import InputError
from safety_probe.data.pairs import load_pairs
from safety_probe.models.generate import generate
from safety_probe.models.hooks import Trace
from safety_probe.models.load import load_vlm
from safety_probe.models.spans import aligned_tails, span_mean, tail_lengths
from safety_probe.probe.record import record
from safety_probe.testing.tiny import TINY_FAMILIES


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_run_with_cache_is_the_trace_of_the_same_encoding(family, tiny_model_dir, pairs_file):
    vlm = load_vlm(tiny_model_dir(family))
    pairs = load_pairs(pairs_file)[:2]
    states = record(vlm, pairs, progress=False)
    caches = {}
    for run, span, pooled in (("image", "image_mask", states.image_mean), ("text", "caption_mask", states.caption_mean)):
        batch = vlm.encode(pairs, run)
        with torch.no_grad(), Trace(vlm.layers, range(vlm.n_layers)) as trace:
            vlm.model(**batch.inputs, use_cache=False)
        cache = caches[run] = vlm.run_with_cache(pairs, run)
        assert list(cache.states) == [f"blocks.{l}.hook_resid_post" for l in range(vlm.n_layers)]
        assert cache.layers == list(range(vlm.n_layers))
        for layer in range(vlm.n_layers):
            assert cache[layer].shape == (2, batch.inputs["input_ids"].shape[1], vlm.d_model)
            torch.testing.assert_close(cache[vlm.hook_name(layer)], trace.outputs[layer])
            # what probe-layers records is the span mean of these states
            torch.testing.assert_close(span_mean(cache[layer], getattr(cache, span)), pooled[:, layer],
                                       rtol=1e-4, atol=1e-4)
        assert torch.equal(cache.tokens, batch.inputs["input_ids"]) and torch.equal(cache.tokens, vlm.to_tokens(pairs, run))
        assert torch.equal(cache.image_mask, batch.image_mask) and torch.equal(cache.caption_mask, batch.caption_mask)
        assert torch.equal(cache.attention_mask, batch.inputs["attention_mask"].bool())
        assert torch.equal(cache.tail_mask.sum(1), tail_lengths(cache.span, batch.last_index))
        assert not (cache.tail_mask & cache.span).any() and not (cache.tail_mask & ~cache.attention_mask).any()
        assert (cache.span.any(1)).all()
    image, text = vlm.encode(pairs, "image"), vlm.encode(pairs, "text")
    expected = aligned_tails(image.image_mask, image.last_index, text.caption_mask, text.last_index)
    for got, want in zip(caches["image"].aligned_tails(caches["text"]), expected):
        assert torch.equal(got, want)
    for got, want in zip(caches["text"].aligned_tails(caches["image"]), expected[::-1]):
        assert torch.equal(got, want)
    partial = vlm.run_with_cache(pairs[0], "image", layers=[vlm.n_layers - 1, 0])
    assert partial.layers == [0, vlm.n_layers - 1] and partial.tokens.shape[0] == 1
    assert len(repr(partial)) < 200 and "hook_resid_post" in repr(partial)
    assert vlm.generate(pairs, "text", max_new_tokens=3) == generate(vlm, pairs, "text", max_new_tokens=3)
    assert repr(vlm).startswith(f"VLM({vlm.name!r}: ") and f"{vlm.n_layers} blocks" in repr(vlm)


def test_cache_lookups_and_bad_runs_say_what_is_wrong(tiny_model_dir, pairs_file):
    vlm = load_vlm(tiny_model_dir("llava"))
    pairs = load_pairs(pairs_file)[:2]
    cache = vlm.run_with_cache(pairs, "text", layers=[1])
    with pytest.raises(KeyError, match="blocks.1.hook_resid_post"):
        cache[0]
    with pytest.raises(InputError, match="run must be one of image, text, got 'picture'"):
        vlm.run_with_cache(pairs, "picture")
    with pytest.raises(InputError, match="out of range"):
        vlm.run_with_cache(pairs, "image", layers=[vlm.n_layers])
    with pytest.raises(ValueError, match="image run and the text run"):
        cache.aligned_tails(cache)
    tokens = vlm.to_str_tokens(pairs[0], "text")
    assert "pistol" in "".join(tokens) and not any("Ġ" in t or "▁" in t for t in tokens)
