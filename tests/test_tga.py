"""TGA: the guide loss, its gradients, the early-stopping caption run, checkpoint/resume, saving, retrieval, data."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from safety_probe.core.errors import InputError
from safety_probe.data.prompts import PromptSettings
from safety_probe.models.hooks import Trace
from safety_probe.models.layers import resolve_layers
from safety_probe.models.load import load_vlm
from safety_probe.models.spans import aligned_tails, span_mean
from safety_probe.organism.preset import write_tga_data
from safety_probe.tga.batch import TGACollator
from safety_probe.tga.config import OptimConfig, RunConfig, TGAConfig, TGAMethod
from safety_probe.tga.data import load_tga_data
from safety_probe.tga.loss import anneal_weights, caption_targets, guide_loss, guide_states
from safety_probe.tga.params import setup_trainable, weights_hash
from safety_probe.tga.shortcuts import CaptionTargets, SharedPrefix, frozen_linears_in
from safety_probe.tga.train import guide_only_rows, plain_rows, tga_loss, train


@pytest.fixture(scope="module")
def tga_data(tmp_path_factory) -> Path:
    return write_tga_data(seed=0, n=6, out_dir=tmp_path_factory.mktemp("tga_data"), retrieval="world")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory, tiny_model_dir) -> Path:
    """A random-weight CLIPModel + processor sharing the tiny LLaVA's tokenizer."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    out = tmp_path_factory.mktemp("clip")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llava"))
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "max_position_embeddings": 64, "pad_token_id": tok.pad_token_id,
                         "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "image_size": 28, "patch_size": 14},
        projection_dim=16,
    )
    cfg.architectures = ["CLIPModel"]
    CLIPModel(cfg).save_pretrained(out)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------------------


def test_guide_loss_equals_hand_computation():
    # Two layers, two examples; cosines chosen by hand.
    i = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    r = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # example 0: cos(I,C) = 1/√2, cos(R,C) = 1/√2; example 1: cos(I,C) = 1, cos(R,C) = 0
    s = 1 / math.sqrt(2)
    per_layer = ((-s + math.log(2)) + (-1 + math.log1p(math.exp(-1)))) / 2
    loss, stats = guide_loss({3: i, 5: i}, {3: c, 5: c}, {3: r, 5: r})
    assert loss.item() == pytest.approx(2 * per_layer, abs=1e-6)
    assert stats["cos_ic"] == pytest.approx((s + 1) / 2, abs=1e-6)
    # exp form with the annealing weights at t = 0.5
    w1, w2 = anneal_weights(5, 10)
    assert (w1, w2) == pytest.approx((0.125, 0.025))
    exp_layer = (w1 * (math.exp(-s) + math.exp(-1)) + w2 * (math.exp(0) + math.exp(-1))) / 2
    loss, _ = guide_loss({0: i}, {0: c}, {0: r}, form="exp", weights=(w1, w2))
    assert loss.item() == pytest.approx(exp_layer, abs=1e-6)
    # the paper sums over J (above: 2 · per_layer); the released code's form averages over its layers
    loss, _ = guide_loss({3: i, 5: i}, {3: c, 5: c}, {3: r, 5: r}, form="exp", weights=(w1, w2))
    assert loss.item() == pytest.approx(exp_layer, abs=1e-6)


def test_unranked_rows_get_the_pull_term_only():
    i = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    r = torch.tensor([[0.0, 1.0]])  # R of row 1 only; row 0 was trained without R in its prompt
    s = 1 / math.sqrt(2)
    ranked = torch.tensor([False, True])
    loss, stats = guide_loss({2: i}, {2: c}, {2: r}, ranked=ranked)
    assert loss.item() == pytest.approx((-s - 1) / 2 + math.log1p(math.exp(-1)), abs=1e-6)
    assert stats["cos_rc"] == pytest.approx(0.0, abs=1e-6)
    loss, stats = guide_loss({2: i}, {2: c}, {2: r[:0]}, ranked=torch.tensor([False, False]))
    assert loss.item() == pytest.approx((-s - 1) / 2, abs=1e-6) and "cos_rc" not in stats


def test_centred_guide_compares_what_is_specific_to_each_caption():
    shared = torch.tensor([10.0, 0.0, 0.0])
    c = torch.stack([shared + torch.tensor([0.0, 1.0, 0.0]), shared + torch.tensor([0.0, -1.0, 0.0])])
    i = torch.stack([shared + torch.tensor([0.0, 0.0, 1.0]), shared + torch.tensor([0.0, 0.0, 1.0])])
    raw, stats = guide_loss({0: i}, {0: c}, {0: c[:0]}, ranked=torch.tensor([False, False]))
    assert stats["cos_ic"] > 0.98  # the shared component alone makes raw cosines high
    centred, stats = guide_loss({0: i}, {0: c}, {0: c[:0]}, ranked=torch.tensor([False, False]), centre=True)
    assert stats["cos_ic"] == pytest.approx(0.0, abs=1e-6) and centred.item() == pytest.approx(0.0, abs=1e-6)
    assert raw.item() < -0.98


def test_span_mean_ignores_padding():
    h = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    mask = torch.tensor([[False, True, True, False]])
    assert torch.allclose(span_mean(h, mask), h[0, 1:3].mean(0, keepdim=True))
    with pytest.raises(ValueError):
        span_mean(h, torch.zeros(1, 4, dtype=torch.bool))


def test_config_parts_are_set_by_their_option_names():
    cfg = TGAConfig.of(layers="9-17", stage=1, lr=1e-3, stop_after=2, system_prompt="Be safe.")
    assert cfg == TGAConfig(TGAMethod(layers="9-17", stage=1), OptimConfig(lr=1e-3), RunConfig(stop_after=2),
                            PromptSettings(system_prompt="Be safe."))
    assert cfg.replace(guide_weight=0.0).method.guide_weight == 0.0 and cfg.method.guide_weight == 1.0
    with pytest.raises(TypeError, match="bogus"):
        TGAConfig.of(bogus=1)
    assert cfg.replace(threads=1, save_every=3, resume=False).key_settings() == cfg.key_settings()  # how, not what
    assert cfg.replace(seed=1).key_settings() != cfg.key_settings()
    assert cfg.replace(text_template="scene").key_settings() != cfg.key_settings()


# ---------------------------------------------------------------------------------------------------------
# Model-level: spans, gradients, early stop
# ---------------------------------------------------------------------------------------------------------


def test_retrieved_span_from_offsets(tiny_model_dir, tga_data):
    vlm = load_vlm(tiny_model_dir("llava"))
    examples = load_tga_data(tga_data)[:3]
    batch = TGACollator(vlm)(examples)
    ids = batch.inputs["input_ids"]
    for row, ex in enumerate(examples):
        span = vlm.tokenizer.decode(ids[row][batch.retrieved_mask[row]])
        assert span.strip() == ex.retrieved.strip().rstrip(".")
        assert int(batch.image_mask[row].sum()) == int((ids[row] == vlm.image_token_id).sum()) > 0
        labelled = batch.inputs["labels"][row] != -100
        assert vlm.tokenizer.decode(ids[row][labelled], skip_special_tokens=True).strip() == ex.response
    assert batch.caption is not None and batch.caption.caption_mask.any(dim=1).all()


def test_guide_loss_alone_moves_only_the_projector(tiny_model_dir, tga_data):
    torch.manual_seed(0)
    vlm = load_vlm(tiny_model_dir("llava"))
    setup_trainable(vlm, stage=1)
    model = vlm.model
    batch = TGACollator(vlm)(load_tga_data(tga_data)[:3])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("multi_modal_projector" in n for n in trainable)
    loss, stats = tga_loss(model, vlm, batch, [0, 1], guide_weight=1.0, lm_weight=0.0)
    assert loss.item() == pytest.approx(stats["guide"])
    loss.backward()
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    for n, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        assert moved == (n in trainable), n


def test_plain_rows_have_no_retrieved_text_and_still_train(tiny_model_dir, tga_data):
    vlm = load_vlm(tiny_model_dir("llava"))
    examples = load_tga_data(tga_data)[:4]
    plain = plain_rows(examples, 0.5, seed=0)
    assert plain == plain_rows(examples, 0.5, seed=0) and plain_rows(examples, 0.0, 0) == frozenset()
    assert plain_rows(examples, 1.0, 0) == {ex.id for ex in examples}
    plain = frozenset({examples[0].id, examples[2].id})
    batch = TGACollator(vlm, plain_ids=plain)(examples)
    ids = batch.inputs["input_ids"]
    for row, ex in enumerate(examples):
        assert batch.retrieved_mask[row].any() == (ex.id not in plain)
        prompt = vlm.tokenizer.decode(ids[row])
        assert ("Retrieved Text" in prompt) == (ex.id not in plain)
    setup_trainable(vlm, stage=1)
    loss, stats = tga_loss(vlm.model, vlm, batch, [0, 1], guide_weight=1.0)
    loss.backward()
    assert "cos_rc" in stats
    projector = [p for p in vlm.model.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector)


def test_tail_guide_pairs_the_prompt_tokens_after_image_and_caption(tiny_model_dir, tga_data):
    vlm = load_vlm(tiny_model_dir("llava"))
    examples = load_tga_data(tga_data)[:3]
    batch = TGACollator(vlm)(examples)
    tok = vlm.tokenizer
    ids, cap = batch.inputs["input_ids"], batch.caption
    for row in range(len(examples)):  # the prompt ends where the answer starts, the tail is the instruction's
        last = int(batch.prompt_last[row])
        assert (batch.inputs["labels"][row, :last + 1] == -100).all() and batch.inputs["labels"][row, last + 1] != -100
        after_image = tok.decode(ids[row, int(batch.image_mask[row].nonzero().max()) + 1:last + 1])
        after_caption = tok.decode(cap.inputs["input_ids"][row, int(cap.caption_mask[row].nonzero().max()) + 1:
                                                            int(cap.last_index[row]) + 1])
        assert examples[row].instruction in after_image and after_caption.endswith(after_image[-20:])
    setup_trainable(vlm, stage=1)
    loss, stats = tga_loss(vlm.model, vlm, batch, [0, 1], guide_weight=1.0, lm_weight=0.0, span="tail")
    assert "cos_rc" not in stats  # the tail has no R term
    with torch.no_grad(), Trace(vlm.layers, [0, 1]) as cap_trace:
        vlm.model(**cap.inputs, use_cache=False)
    with torch.no_grad(), Trace(vlm.layers, [0, 1]) as img_trace:
        vlm.model(**batch.inputs, use_cache=False)
    a, b = aligned_tails(batch.image_mask, batch.prompt_last, cap.caption_mask, cap.last_index)
    expected = sum(-torch.nn.functional.cosine_similarity(img_trace.outputs[l][a], cap_trace.outputs[l][b]).mean()
                   for l in (0, 1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()  # the tail attends to the image: the projector gets a gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vlm.model.parameters() if p.requires_grad)


def test_last_span_guide_is_the_tail_at_the_last_prompt_token(tiny_model_dir, tga_data):
    vlm = load_vlm(tiny_model_dir("llava"))
    batch = TGACollator(vlm)(load_tga_data(tga_data)[:3])
    cap = batch.caption
    setup_trainable(vlm, stage=1)
    with torch.no_grad(), Trace(vlm.layers, [0, 1]) as cap_trace:
        vlm.model(**cap.inputs, use_cache=False)
    with torch.no_grad(), Trace(vlm.layers, [0, 1]) as img_trace:
        vlm.model(**batch.inputs, use_cache=False)
    rows = torch.arange(len(batch.prompt_last))
    for layer_mean, scale in ((False, 1.0), (True, 0.5)):
        loss, _ = tga_loss(vlm.model, vlm, batch, [0, 1], guide_weight=1.0, lm_weight=0.0, span="last",
                           layer_mean=layer_mean)
        expected = sum(-torch.nn.functional.cosine_similarity(img_trace.outputs[l][rows, batch.prompt_last],
                                                              cap_trace.outputs[l][rows, cap.last_index]).mean()
                       for l in (0, 1))
        assert loss.item() == pytest.approx(scale * expected.item(), rel=1e-5)
    tail = guide_states(batch, img_trace.outputs, caption_targets(cap_trace.outputs, cap, "tail"), "tail")
    last = guide_states(batch, img_trace.outputs, caption_targets(cap_trace.outputs, cap, "last"), "last")
    assert (last.position == 0).all() and len(last.owner) == len(rows)
    assert int((tail.position == 0).sum()) == len(rows) and int(tail.position.max()) > 0
    for l in (0, 1):  # the last span is the tail's rows at position 0
        assert torch.equal(last.image[l], tail.image[l][tail.position == 0])


def test_position_centring_centres_each_tail_position_on_its_own_mean():
    # two positions; position 1 shares a large offset that batch centring would leave in
    c = torch.tensor([[5.0, 1.0, 0.0], [5.0, -1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    i = c.clone()
    groups = torch.tensor([1, 1, 0, 0])
    loss, stats = guide_loss({0: i}, {0: c}, {}, centre="position", groups=groups)
    assert stats["cos_ic"] == pytest.approx(1.0, abs=1e-6)
    i2 = torch.tensor([[5.0, -1.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    _, batch_stats = guide_loss({0: i2}, {0: c}, {}, centre="batch")
    _, pos_stats = guide_loss({0: i2}, {0: c}, {}, centre="position", groups=groups)
    assert pos_stats["cos_ic"] == pytest.approx(-1.0, abs=1e-6)  # swapped within each position: opposite
    assert batch_stats["cos_ic"] > pos_stats["cos_ic"] + 0.5  # batch centring keeps position 1's shared offset
    with pytest.raises(ValueError):
        guide_loss({0: i}, {0: c}, {}, centre="position")


def test_guide_only_rows_have_no_answer_loss(tiny_model_dir, tga_data):
    vlm = load_vlm(tiny_model_dir("llava"))
    examples = load_tga_data(tga_data)[:3]
    examples[0] = replace(examples[0], extra={**examples[0].extra, "label": "harmful"})
    assert guide_only_rows(examples, ["harmful"]) == {examples[0].id}
    with pytest.raises(InputError, match="harmfull"):
        guide_only_rows(examples, ["harmfull"])
    batch = TGACollator(vlm, unsupervised_ids=guide_only_rows(examples, ["harmful"]))(examples)
    supervised = (batch.inputs["labels"] != -100).any(dim=1).tolist()
    assert supervised == [False, True, True]
    only = TGACollator(vlm, unsupervised_ids=frozenset({examples[0].id}))(examples[:1])
    setup_trainable(vlm, stage=1)
    loss, stats = tga_loss(vlm.model, vlm, only, [0, 1], guide_weight=1.0)
    assert stats["lm"] == 0.0 and loss.item() == pytest.approx(stats["guide"])
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vlm.model.parameters() if p.requires_grad)


def test_caption_target_comes_from_the_given_model(tiny_model_dir, tga_data, tmp_path):
    vlm = load_vlm(tiny_model_dir("llava"))
    frozen = load_vlm(tiny_model_dir("llava"))
    batch = TGACollator(vlm)(load_tga_data(tga_data)[:3])
    with torch.no_grad():
        same = tga_loss(vlm.model, vlm, batch, [1], guide_weight=1.0, caption_vlm=frozen)[1]
        for p in frozen.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        moved = tga_loss(vlm.model, vlm, batch, [1], guide_weight=1.0, caption_vlm=frozen)[1]
        own = tga_loss(vlm.model, vlm, batch, [1], guide_weight=1.0)[1]
    assert same["guide"] == pytest.approx(own["guide"]) and moved["lm"] == pytest.approx(own["lm"])
    assert moved["guide"] != pytest.approx(own["guide"])  # only the caption side changed
    cfg = TGAConfig.of(layers="1", stage=2, lr=1e-2, max_steps=2, batch_size=2, caption_target="frozen",
                       plain_share=0.5)
    result = train(load_vlm(tiny_model_dir("llava")), cfg, load_tga_data(tga_data), tmp_path / "frozen")
    assert result.steps == 2 and all(np.isfinite(row["guide"]) for row in result.log)


def test_caption_forward_stops_after_deepest_safety_layer(tmp_path):
    from safety_probe.testing.tiny import build_tiny_vlm

    vlm = load_vlm(build_tiny_vlm("llava", tmp_path / "m4", num_hidden_layers=4))
    inputs = vlm.tokenizer(["a red cup on a table"], return_tensors="pt")
    calls = [0] * vlm.n_layers
    handles = [b.register_forward_hook(lambda m, a, o, k=k: calls.__setitem__(k, calls[k] + 1))
               for k, b in enumerate(vlm.layers)]
    try:
        with torch.no_grad(), Trace(vlm.layers, [0, 1], stop=True) as trace:
            vlm.model(**inputs)
    finally:
        for h in handles:
            h.remove()
    assert calls == [1, 1, 0, 0]
    assert not trace.outputs[1].requires_grad
    full = vlm.model(**inputs, output_hidden_states=True).hidden_states
    assert torch.allclose(trace.outputs[1], full[2], atol=1e-6)  # block l output = hidden_states[l + 1]
    with Trace(vlm.layers, [2]) as trace:
        vlm.model(**inputs)
    assert torch.allclose(trace.outputs[2], full[3], atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Training: resume, save, load
# ---------------------------------------------------------------------------------------------------------


def test_resume_matches_uninterrupted_and_model_loads(tiny_model_dir, tga_data, tmp_path):
    examples = load_tga_data(tga_data)
    cfg = TGAConfig.of(layers="0-1", stage=2, lr=1e-3, max_steps=3, batch_size=2, save_every=1)
    model = tiny_model_dir("llava")
    full = train(load_vlm(model), cfg, examples, tmp_path / "full")
    part = train(load_vlm(model), cfg.replace(stop_after=1), examples, tmp_path / "part")
    assert part.model_dir is None and part.steps == 1
    ckpt = tmp_path / "part" / "checkpoints" / "step_1"
    assert (ckpt / "model.safetensors").is_file()
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "model.safetensors"))
    assert saved and not any("vision_tower" in k for k in saved)  # trainable parameters only
    resumed = train(load_vlm(model), cfg, examples, tmp_path / "part")
    assert resumed.steps == 3
    assert resumed.weights_hash == full.weights_hash
    vlm = load_vlm(resumed.model_dir)
    assert weights_hash(vlm.model) == full.weights_hash
    before = load_vlm(model)
    assert weights_hash(before.model) != full.weights_hash
    vt = dict(before.model.named_parameters())
    for n, p in vlm.model.named_parameters():
        if "vision_tower" in n:
            assert torch.equal(p, vt[n]), n  # the vision tower stays frozen


def test_training_without_nan_fills_is_bitwise_and_leaves_torch_as_found(tiny_model_dir, tga_data, tmp_path,
                                                                         monkeypatch):
    from safety_probe.tga import train as training

    examples = load_tga_data(tga_data)
    cfg = TGAConfig.of(layers="0-1", stage=1, lr=1e-2, max_steps=2, batch_size=4, guide_span="tail")
    model = tiny_model_dir("llava")
    found = (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)
    fast = train(load_vlm(model), cfg, examples, tmp_path / "fast")
    assert (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory) == found
    monkeypatch.setattr(training, "FILL_NEW_TENSORS", True)
    filled = train(load_vlm(model), cfg, examples, tmp_path / "filled")
    assert fast.weights_hash == filled.weights_hash


def test_shortcuts_train_to_the_same_weights_and_resume_bitwise(tiny_model_dir, tga_data, tmp_path):
    """Stage 1 for four epochs (caption targets kept from the second on) with a guide-only row and a system turn (a
    shared prefix): the weights of training without the shortcuts to float rounding; stopped mid-run and resumed
    (the kept targets recomputed in other batches), those of the uninterrupted run to float rounding, and bit for bit
    without the shortcuts."""
    from safetensors.torch import load_file

    examples = load_tga_data(tga_data)
    cfg = TGAConfig.of(layers="0-1", stage=1, lr=1e-2, max_steps=6, batch_size=4, guide_span="tail", plain_share=0.5,
                       system_prompt="You are a careful assistant.", save_every=3)
    model, only = tiny_model_dir("llava"), frozenset({examples[0].id})
    fast = train(load_vlm(model), cfg, examples, tmp_path / "fast", guide_only_ids=only)
    whole = train(load_vlm(model), cfg.replace(shortcuts=False), examples, tmp_path / "whole", guide_only_ids=only)
    a, b = (load_file(str(r.model_dir / "model.safetensors")) for r in (fast, whole))
    assert all((a[k] - b[k]).norm() <= 1e-5 * b[k].norm() for k in b)
    assert [r["loss"] for r in fast.log] == pytest.approx([r["loss"] for r in whole.log], rel=1e-5)
    for name, run in (("part", cfg), ("part_whole", cfg.replace(shortcuts=False))):
        train(load_vlm(model), run.replace(stop_after=3), examples, tmp_path / name, guide_only_ids=only)
        resumed = train(load_vlm(model), run, examples, tmp_path / name, guide_only_ids=only)
        if run.run.shortcuts:
            c = load_file(str(resumed.model_dir / "model.safetensors"))
            assert all((c[k] - a[k]).norm() <= 1e-5 * a[k].norm() for k in a)
        else:
            assert resumed.weights_hash == whole.weights_hash


def test_caption_targets_are_kept_until_their_last_use(tiny_model_dir, tga_data):
    """Rows that come again are kept until their last use, within the budget; the targets (the shared prefix
    skipped) equal the whole caption run's to float rounding."""
    vlm = load_vlm(tiny_model_dir("llava"))
    setup_trainable(vlm, stage=1)
    examples = load_tga_data(tga_data)[:3]
    batch = TGACollator(vlm, PromptSettings(system_prompt="You are a careful assistant."))(examples)
    ids = [ex.id for ex in examples]
    kept = CaptionTargets(vlm, [0, 1], "tail", SharedPrefix(vlm), Counter(ids * 2), budget_mb=1.0)
    first = kept(batch)
    assert kept.computed == 3 and set(kept.kept) == set(ids)
    again = kept(batch)
    assert kept.computed == 3 and not kept.kept and kept.kept_bytes == 0  # the last use drops them
    assert all(torch.equal(x[l], y[l]) for x, y in zip(first, again) for l in (0, 1))
    whole = CaptionTargets(vlm, [0, 1], "tail")(batch)
    assert all(torch.allclose(x[l], y[l], rtol=1e-5, atol=1e-5) for x, y in zip(first, whole) for l in (0, 1))
    tight = CaptionTargets(vlm, [0, 1], "tail", None, Counter(ids * 2), budget_mb=0.0)
    tight(batch)
    tight(batch)
    assert tight.computed == 6 and not tight.kept  # nothing fits: every use recomputes


def test_mixed_precision_casts_frozen_linear_weights_once_with_autocasts_bits(tiny_model_dir, tga_data):
    """Under bf16 autocast, frozen linear weights held in bf16 give autocast's own loss and gradients bit for bit, and
    are float32 again afterwards."""
    vlm = load_vlm(tiny_model_dir("llava"))
    setup_trainable(vlm, stage=1)
    batch = TGACollator(vlm)(load_tga_data(tga_data)[:3])
    got = []
    for dtype in (None, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16), frozen_linears_in(vlm.model, dtype):
            assert any(p.dtype == torch.bfloat16 for p in vlm.model.parameters()) == (dtype is not None)
            loss = vlm.model(**batch.inputs).loss
        loss.backward()
        got.append((loss.detach(), [p.grad.clone() for p in vlm.model.parameters() if p.requires_grad]))
        vlm.model.zero_grad(set_to_none=True)
    assert torch.equal(got[0][0], got[1][0]) and all(torch.equal(a, b) for a, b in zip(got[0][1], got[1][1]))
    assert all(p.dtype == torch.float32 for p in vlm.model.parameters())


def test_lora_stage2_trains_and_merges(tiny_model_dir, tga_data, tmp_path):
    cfg = TGAConfig.of(layers="1", stage=2, lora=True, lora_r=2, lr=1e-2, max_steps=1, batch_size=2)
    result = train(load_vlm(tiny_model_dir("llava")), cfg, load_tga_data(tga_data), tmp_path / "lora")
    vlm = load_vlm(result.model_dir)
    assert not any("lora" in n for n, _ in vlm.model.named_parameters())
    assert weights_hash(vlm.model) != weights_hash(load_vlm(tiny_model_dir("llava")).model)


# ---------------------------------------------------------------------------------------------------------
# Retrieval, data
# ---------------------------------------------------------------------------------------------------------


def test_retrieval_excludes_the_caption(tiny_clip):
    from PIL import Image

    from safety_probe.models.clip import Retriever

    r = Retriever(tiny_clip)
    images = [Image.new("RGB", (28, 28), c) for c in ("red", "blue", "green")]
    captions = ["a red cup on a table", "a blue ball", "a green tree"]
    corpus = captions + ["A red cup on a table.", "two red cups on a table", "a blue car"]
    found = r.retrieve(images, captions, corpus, k=2)
    for caption, texts in zip(captions, found):
        assert len(texts) == 2
        assert all(t.lower().rstrip(".") != caption for t in texts)
    assert r.retrieve(images[:1], ["a"], ["a", "b"])[0] == ["b"]
    probs = r.zero_shot(images, ["a gun", "a cup"])
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3))


def _entry(**kw) -> dict:
    base = {"id": "1", "image": "images/t00000.png",
            "conversations": [{"from": "human", "value": "<image>\nDescribe this image."},
                              {"from": "gpt", "value": "A cup."}],
            "image_caption": "a cup", "retrieved_caption": "two cups"}
    return {**base, **kw}


@pytest.mark.parametrize("bad, needle", [
    ("not json", "malformed JSON"),
    ("{}", "non-empty JSON list"),
    ([_entry(image_caption="")], "image_caption"),
    ([_entry(conversations=[{"from": "human", "value": "no image here"}, {"from": "gpt", "value": "x"}])], "<image>"),
    ([_entry(conversations=[{"from": "gpt", "value": "<image>\nx"}])], "conversations"),
    ([_entry(conversations=[{"from": "human", "value": "<image>\nx"}, {"from": "human", "value": "y"}])],
     "conversations[1]"),
    ([_entry(conversations=[{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"},
                            {"from": "human", "value": "z"}])], "in pairs"),
    ([_entry(conversations=[{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"},
                            {"from": "human", "value": "<image>\nz"}, {"from": "gpt", "value": "w"}])],
     "first human turn only"),
    ([{"id": "1", "conversations": [{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}]}],
     "without 'image'"),
    ([_entry(conversations=[{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": " "}])], "empty"),
    ([_entry(image="images/missing.png")], "image not found"),
    ([_entry(retrieved_caption="A cup.")], "retrieved_caption"),
    ([_entry(), _entry()], "duplicate id"),
])
def test_loader_rejects_malformed_files(tga_data, bad, needle):
    path = tga_data.parent / "bad.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(InputError) as err:
        load_tga_data(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and needle in message
    if not isinstance(bad, str) and isinstance(bad, list):
        assert "entry" in message


def test_writer_round_trips(tga_data):
    examples = load_tga_data(tga_data, require_retrieved=True)
    assert len(examples) == 6
    raw = json.loads(tga_data.read_text())
    assert {"id", "image", "conversations", "image_caption", "retrieved_caption"} <= set(raw[0])
    assert all(ex.retrieved != ex.caption and ex.image.is_file() for ex in examples)
    again = write_tga_data(seed=0, n=6, out_dir=tga_data.parent / "again", retrieval="world")
    assert json.loads(again.read_text()) == raw


def test_run_compare_writes_compare_and_model(tiny_model_dir, tiny_clip, pairs_file, tmp_path):
    from safety_probe.compare import CompareConfig, CompareResult, run_compare

    data = write_tga_data(seed=0, n=4, out_dir=tmp_path / "data", retrieval="clip", clip=tiny_clip)
    cfg = CompareConfig.of(layers="1", out=str(tmp_path / "run"), data=str(data), clip=str(tiny_clip),
                           eval_pairs=str(pairs_file), stage=1, lr=1e-3, max_steps=1, batch_size=2,
                           baselines=["filter"], max_new_tokens=2, filter_toxic=["pistol", "knife"],
                           filter_benign=["cup", "ball"])
    result = run_compare(str(tiny_model_dir("llava")), cfg)
    out = Path(cfg.out)
    compare = result.record
    assert json.loads((out / "compare.json").read_text()) == json.loads(json.dumps(compare))
    assert set(compare["rows"]) == {"before", "tga", "filter"}
    assert compare["safety_layers"] == [1]
    for row in ("before", "tga"):
        assert compare["rows"][row]["overall"]["n_pairs"] == 5
        shift = compare["rows"][row]["shift"]
        assert set(shift["cos_matched"]) == {"0", "1"}  # every block; the mean_* fields average over J
        assert shift["mean_cos_matched"] == pytest.approx(shift["cos_matched"]["1"], abs=1e-5)
    assert compare["rows"]["filter"]["filter"]["flag_rate_benign"] is not None
    for row in ("before", "tga", "filter"):  # per benchmark and scene, as safety-probe eval's metrics.json
        table = compare["rows"][row]["benchmarks"]
        whole = next(iter(table.values()))["variants"]["all"]["all"]
        assert whole["image_dsr"]["share"] == pytest.approx(compare["rows"][row]["overall"]["image_dsr"])
    rows = json.loads(data.read_text())
    assert all(d["retrieved_caption"] != d["image_caption"] for d in rows)
    assert load_vlm(out / "model").n_layers == 2
    # the result saves and draws itself: compare.json and the figures the command draws, a short repr, a table
    loaded = CompareResult.load(out)
    assert loaded.record == json.loads(json.dumps(compare)) and loaded.evaluated
    assert len(repr(loaded)) <= 1000 and "before" in repr(loaded) and "tga" in repr(loaded)
    assert list(loaded.table().index) == ["before", "tga", "filter"]
    saved = loaded.save(tmp_path / "copy", figures=True)
    assert {p.name for p in saved} >= {"compare.json", "tga_dsr.pdf", "tga_dsr.png", "tga_dsr.html", "tga_shift.pdf",
                                       "tga_shift.png", "tga_shift.html", "plotly.min.js"}
    assert json.loads((tmp_path / "copy" / "compare.json").read_text()) == loaded.record
    assert len(loaded.plot_dsr().axes) >= 1 and loaded.plot_shift(backend="plotly").data
    with pytest.raises(InputError, match="no compare.json"):
        CompareResult.load(tmp_path / "data")


def test_compare_shift_is_the_probe_layers_shift(tiny_model_dir, pairs_file):
    """compare.json's shift and probe-layers' come from one definition (shift.semantic_shift)."""
    from safety_probe.analysis.shift import semantic_shift
    from safety_probe.compare import layer_shift
    from safety_probe.data.pairs import load_pairs
    from safety_probe.probe.record import record

    vlm = load_vlm(tiny_model_dir("llava"))
    pairs = load_pairs(pairs_file)
    shift = layer_shift(vlm, pairs, [1])
    states = record(vlm, pairs, progress=False)
    scores = semantic_shift({"image_mean": states.image_mean, "caption_mean": states.caption_mean}).scores
    for name in ("cos_matched", "cos_mismatched", "cos_centred"):
        assert [shift[name][str(l)] for l in (0, 1)] == pytest.approx(scores[name].mean.tolist(), abs=1e-5)


def test_resolve_layers_from_json_and_spec(tmp_path):
    path = tmp_path / "layers.json"
    path.write_text(json.dumps({"safety_layers": [5, 3, 4]}))
    assert resolve_layers(str(path), 8) == [3, 4, 5]
    assert resolve_layers("2-4", 8) == [2, 3, 4]
    path.write_text(json.dumps({"safety_layers": [9]}))
    with pytest.raises(InputError, match="out of range"):
        resolve_layers(str(path), 8)
    path.write_text(json.dumps({"layers": [1]}))
    with pytest.raises(InputError, match="safety_layers"):
        resolve_layers(str(path), 8)
