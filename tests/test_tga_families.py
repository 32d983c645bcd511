"""TGA on every supported family (tiny random models): spans, labels, two training steps per stage, the saved
model; LLaVA mix665k-shaped data (text-only and multi-turn rows); the `safety-probe tga` command on Qwen2-VL."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from safety_probe.cli import main
from safety_probe.core.errors import InputError
from safety_probe.data.pairs import Pair, load_image, load_pairs
from safety_probe.data.prompts import PromptSettings
from safety_probe.models.generate import generate
from safety_probe.models.hooks import Trace
from safety_probe.models.load import load_vlm
from safety_probe.organism.preset import write_tga_data
from safety_probe.testing.tiny import TINY_FAMILIES
from safety_probe.tga.batch import TGACollator
from safety_probe.tga.config import TGAConfig
from safety_probe.tga.data import TGAExample, load_tga_data, row_counts
from safety_probe.tga.params import find_projector, setup_trainable
from safety_probe.tga.shortcuts import PREFIX_FAMILIES, Shortcuts
from safety_probe.tga.train import tga_loss, train

# What each tiny family's chat template writes after an answer (LLaVA-1.5's writes a space only: eos is added).
END_OF_TURN = {"llava": "</s>", "llava_next": "</s>", "qwen2_vl": "<|im_end|>", "qwen2_5_vl": "<|im_end|>",
               "idefics3": "<end_of_utterance>", "gemma3": "<end_of_turn>"}


@pytest.fixture(scope="module")
def two_rows(tmp_path_factory) -> Path:
    return write_tga_data(seed=0, n=2, out_dir=tmp_path_factory.mktemp("tga_two"), retrieval="world")


def _turns(image: str | None, *exchanges: tuple[str, str]) -> list[dict]:
    conv = []
    for k, (human, gpt) in enumerate(exchanges):
        conv += [{"from": "human", "value": f"<image>\n{human}" if image and k == 0 else human},
                 {"from": "gpt", "value": gpt}]
    return conv


@pytest.fixture(scope="module")
def mix_file(two_rows) -> Path:
    """mix665k-shaped rows: text-only (one and two exchanges), multi-turn image, ordinary TGA, image without caption."""
    image = "images/t00000.png"
    rows = [
        {"id": "text1", "conversations": _turns(None, ("Why is the sky blue?", "Light scatters in the air."))},
        {"id": "img2", "image": image, "image_caption": "a cup", "retrieved_caption": "two cups",
         "conversations": _turns(image, ("What is this?", "It is a cup."), ("What colour is it?", "The cup is red."))},
        {"id": "text2", "conversations": _turns(None, ("Say hello.", "Hello there."), ("Again?", "Hello again."))},
        {"id": "img1", "image": image, "image_caption": "a red cup", "retrieved_caption": "a blue ball",
         "conversations": _turns(image, ("Describe this image.", "A red cup on a table."))},
        {"id": "nocap", "image": image, "retrieved_caption": "a green tree",
         "conversations": _turns(image, ("Where is it?", "On a table."))},
    ]
    path = two_rows.parent / "mix665k.json"
    path.write_text(json.dumps(rows))
    return path


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a ``[T]`` bool mask."""
    edges = torch.diff(torch.cat([torch.zeros(1), mask.float(), torch.zeros(1)])).nonzero().flatten().tolist()
    return list(zip(edges[::2], edges[1::2]))


def _generates(vlm, image: Path) -> bool:
    """Whether the model generates three new tokens for one image run."""
    batch = vlm.encode([Pair(image=image, caption="a cup", instruction="Describe this image.")], run="image")
    with torch.no_grad():
        out = vlm.model.generate(**batch.inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                                 pad_token_id=vlm.tokenizer.pad_token_id)
    return out.shape[1] == batch.inputs["input_ids"].shape[1] + 3


# ---------------------------------------------------------------------------------------------------------
# Every family
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_collator_spans_and_labels_on_every_family(family, tiny_model_dir, two_rows):
    vlm = load_vlm(tiny_model_dir(family))
    examples = load_tga_data(two_rows)
    batch = TGACollator(vlm)(examples)
    ids, labels = batch.inputs["input_ids"], batch.inputs["labels"]
    for row, ex in enumerate(examples):
        assert vlm.tokenizer.decode(ids[row][batch.retrieved_mask[row]]).strip() == ex.retrieved.strip().rstrip(".")
        plain = vlm.encode([Pair(image=ex.image, caption=ex.caption, instruction=ex.instruction)], run="image")
        assert int(batch.image_mask[row].sum()) == int(plain.image_mask.sum()) > 0  # the image's tokens, all of them
        (start, end), = _runs(labels[row] != -100)
        assert vlm.tokenizer.decode(ids[row][start:end]).lstrip() == ex.response + END_OF_TURN[family]
    assert batch.guided.all() and batch.caption.caption_mask.any(dim=1).all()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tga_trains_two_steps_per_stage_and_the_model_loads(family, tiny_model_dir, two_rows, tmp_path):
    base = tiny_model_dir(family)
    examples = load_tga_data(two_rows)
    before = dict(load_vlm(base).model.named_parameters())
    common = TGAConfig.of(layers="1", max_steps=2, batch_size=2, warmup_ratio=0.0, lr=1e-2)
    for name, cfg in {"stage1": common.replace(stage=1), "lora": common.replace(stage=2, lora=True, lora_r=2)}.items():
        result = train(load_vlm(base), cfg, examples, tmp_path / name)
        assert result.steps == 2 and result.rows["guided"] == 2
        for row in result.log:
            assert math.isfinite(row["guide"]) and row["guide"] != 0 and "cos_rc" in row, row
        vlm = load_vlm(result.model_dir)
        moved = {n for n, p in vlm.model.named_parameters() if not torch.equal(p, before[n])}
        projector, _ = find_projector(vlm.model)
        assert moved and any(n.startswith(projector + ".") for n in moved)
        if name == "stage1":
            assert all(n.startswith(projector + ".") for n in moved), moved
        else:
            assert any(".layers." in n and not n.startswith(projector) for n in moved)  # the merged adapters
            assert not any("lora" in n for n in vlm.model.state_dict())
        assert _generates(vlm, examples[0].image)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_the_guide_at_weight_one_is_the_cosine_probe_layers_reports(family, tiny_model_dir, pairs_file):
    """Plain prompts (no R in context), the same pairs and layers: each row's cos(I, C) of the guide is probe-layers'
    cos_matched of that pair, each row's mean tail cosine its cos_tail, and the guide loss at λ = 1 is minus their
    mean over the batch summed over J. TGA pads on the right, probe-layers on the left: RoPE makes that float noise."""
    from safety_probe.analysis.shift import pair_cosine
    from safety_probe.probe.config import MeasureOptions
    from safety_probe.probe.measure import measure
    from safety_probe.tga.loss import caption_targets, guide_states

    vlm = load_vlm(tiny_model_dir(family))
    pairs = load_pairs(pairs_file)
    layers = list(range(vlm.n_layers))
    states, measured = measure(vlm, pairs, MeasureOptions(patch_pairs=0, answer_tokens=1), progress=False)
    reported = {"image": pair_cosine(states.image_mean, states.caption_mean).float(), "tail": measured.tail_cos}
    examples = [TGAExample(str(i), p.image, p.instruction, "A thing.", p.caption) for i, p in enumerate(pairs)]
    batch = TGACollator(vlm, retrieved_in_context=False)(examples)
    with torch.no_grad():
        with Trace(vlm.layers, layers) as image:
            vlm.model(**{k: v for k, v in batch.inputs.items() if k != "labels"}, use_cache=False)
        with Trace(vlm.layers, layers) as text:
            vlm.model(**batch.caption.inputs, use_cache=False)
    for span, cosine in reported.items():
        guide = guide_states(batch, image.outputs, caption_targets(text.outputs, batch.caption, span), span)
        rows = torch.bincount(guide.owner, minlength=len(pairs)).float()  # one per pair, or its tail tokens
        for l in layers:
            cos = torch.nn.functional.cosine_similarity(guide.image[l].float(), guide.caption[l].float(), dim=-1)
            per_pair = torch.zeros(len(pairs)).index_add_(0, guide.owner, cos) / rows
            assert per_pair.tolist() == pytest.approx(cosine[:, l].tolist(), abs=1e-5), (span, l)
        with torch.no_grad():
            loss, _ = tga_loss(vlm.model, vlm, batch, layers, guide_weight=1.0, lm_weight=0.0, span=span)
        expected = -sum(float((rows * cosine[:, l]).sum() / rows.sum()) for l in layers)
        assert loss.item() == pytest.approx(expected, abs=1e-5), span


@pytest.mark.parametrize("family", ["llava_next", "idefics3"])
def test_images_with_different_tile_counts_batch_together(family, tiny_model_dir, tmp_path):
    """Per-image tensors of unequal tile counts are zero-padded: each row's image states match its own batch's."""
    rng = np.random.default_rng(0)
    examples = []
    for name, (w, h) in {"wide": (112, 40), "square": (50, 50)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
        examples.append(TGAExample(name, tmp_path / f"{name}.png", "Describe this image.", "A thing.", "a thing",
                                   "two things"))
    vlm = load_vlm(tiny_model_dir(family))
    collate = TGACollator(vlm, caption_run=False)
    batches = [collate([ex]) for ex in examples] + [collate(examples)]
    assert batches[0].inputs["pixel_values"].shape[1] != batches[1].inputs["pixel_values"].shape[1]
    states = []
    for batch in batches:
        with torch.no_grad(), Trace(vlm.layers, [1]) as trace:
            vlm.model(**{k: v for k, v in batch.inputs.items() if k != "labels"})
        states.append(trace.outputs[1])
    for row in range(2):
        alone = states[row][0][batches[row].image_mask[0]]
        assert torch.allclose(alone, states[2][row][batches[2].image_mask[row]], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# mix665k-shaped data
# ---------------------------------------------------------------------------------------------------------


def test_mix665k_rows_are_read_and_counted(mix_file):
    examples = load_tga_data(mix_file)
    assert [ex.kind for ex in examples] == ["text_only", "image_multi_turn", "text_only", "image_single_turn",
                                            "image_single_turn"]
    assert row_counts(examples) == {"image_single_turn": 2, "image_multi_turn": 1, "text_only": 2, "guided": 2}
    assert [ex.guided for ex in examples] == [False, True, False, True, False]
    assert examples[1].turns == (("What is this?", "It is a cup."), ("What colour is it?", "The cup is red."))
    assert examples[0].image is None and examples[0].caption is None


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_mixed_batch_labels_every_answer_and_guides_image_rows(family, tiny_model_dir, mix_file):
    vlm = load_vlm(tiny_model_dir(family))
    examples = load_tga_data(mix_file)
    batch = TGACollator(vlm)(examples)
    ids, labels = batch.inputs["input_ids"], batch.inputs["labels"]
    attention = batch.inputs["attention_mask"].bool()
    for row, ex in enumerate(examples):
        runs = _runs(labels[row] != -100)
        assert [vlm.tokenizer.decode(ids[row][s:e]).lstrip() for s, e in runs] == \
            [reply + END_OF_TURN[family] for _, reply in ex.turns]
        unlabelled = vlm.tokenizer.decode(ids[row][attention[row] & (labels[row] == -100)])
        assert all(q in unlabelled and a not in unlabelled for q, a in ex.turns)
        assert batch.image_mask[row].any() == (ex.image is not None)
        assert batch.retrieved_mask[row].any() == (ex.image is not None)  # every image row has R in its prompt
    assert batch.guided.tolist() == [ex.guided for ex in examples]
    assert len(batch.caption.inputs["input_ids"]) == 2
    setup_trainable(vlm, stage=1)
    loss, stats = tga_loss(vlm.model, vlm, batch, [1], guide_weight=1.0)
    assert math.isfinite(stats["lm"]) and stats["guide"] != 0 and "cos_rc" in stats
    loss.backward()
    grads = [p.grad for p in vlm.model.parameters() if p.requires_grad]
    # all reached; Gemma 3 initialises its projection to zero, so the norm before it gets 0 on the first step
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("span", ["image", "tail", "last"])
def test_shortcuts_give_the_loss_and_gradient_of_the_whole_forward(family, span, tiny_model_dir, mix_file):
    """A step's shortcuts (safety_probe.tga.shortcuts) on mixed rows under a system turn: the loss and the projector's
    gradient of the whole batch's whole forward to float rounding; the answer loss is transformers' own (logits at
    answer positions only); the guide-only rows' forward stops after the deepest guided block; the second use of the
    rows reads their caption targets from memory (the last-position span with its centring by position too)."""
    vlm = load_vlm(tiny_model_dir(family))
    setup_trainable(vlm, stage=1)
    examples = load_tga_data(mix_file)
    collate = TGACollator(vlm, PromptSettings(system_prompt="You are a careful assistant."),
                          plain_ids=frozenset({"img2"}), unsupervised_ids=frozenset({"img1", "nocap"}))
    whole, parts = collate(examples), collate.parts(examples)
    assert [[ex.id for ex in part.examples] for part in parts] == [["text1", "img2", "text2"], ["img1", "nocap"]]
    assert (parts[1].inputs["labels"] == -100).all() and parts[1].inputs["attention_mask"].all(dim=1).any()
    shortcuts = Shortcuts.of(vlm, None, [0], span, Counter([ex.id for ex in examples] * 2), 64.0)
    assert (shortcuts.prefix is not None) == (family in PREFIX_FAMILIES)
    projector = [p for p in vlm.model.parameters() if p.requires_grad]
    top_calls = []
    hook = vlm.layers[-1].register_forward_hook(lambda *_: top_calls.append(1))
    got = []
    try:
        for batch, cut in ((whole, None), (parts, shortcuts), (parts, shortcuts)):
            top_calls.clear()
            loss, stats = tga_loss(vlm.model, vlm, batch, [0], guide_weight=1.0, span=span, shortcuts=cut,
                                   centre="position" if span == "last" else False, layer_mean=span == "last")
            loss.backward()
            got.append((loss.item(), stats, [p.grad.clone() for p in projector], len(top_calls)))
            vlm.model.zero_grad(set_to_none=True)
    finally:
        hook.remove()
    (loss, stats, grads, _), first, (fast_loss, fast_stats, fast_grads, fast_calls) = got
    assert first[0] == fast_loss and shortcuts.targets.computed == 2  # img2 and img1, once each
    assert fast_loss == pytest.approx(loss, rel=1e-5) and fast_stats["guide"] == pytest.approx(stats["guide"], rel=1e-5)
    assert all((a - b).norm() <= 1e-5 * b.norm() + 1e-9 for a, b in zip(fast_grads, grads))
    assert fast_calls == 1  # the top block runs for the rows with answers only
    with torch.no_grad():
        assert stats["lm"] == pytest.approx(vlm.model(**whole.inputs).loss.item(), rel=1e-5)


def test_a_guide_run_needs_a_captioned_image(tiny_model_dir, mix_file, tmp_path):
    examples = [ex for ex in load_tga_data(mix_file) if not ex.guided]
    cfg = TGAConfig.of(layers="1", stage=1, max_steps=1, batch_size=3)
    with pytest.raises(InputError, match="image_caption"):
        train(load_vlm(tiny_model_dir("llava")), cfg, examples, tmp_path / "guide")
    result = train(load_vlm(tiny_model_dir("llava")), cfg.replace(guide_weight=0.0), examples, tmp_path / "ce")
    assert result.steps == 1 and result.rows == row_counts(examples)
    assert json.loads((tmp_path / "ce" / "train.json").read_text())["rows"] == result.rows


def test_llava_single_turn_row_is_prompt_answer_eos(tiny_model_dir, two_rows):
    """The LLaVA path as before the families: the processor's prompt, then " " + answer, then eos."""
    vlm = load_vlm(tiny_model_dir("llava"))
    ex = load_tga_data(two_rows)[0]
    batch = TGACollator(vlm)([ex])
    prompt = f"USER: Retrieved Text: {ex.retrieved.rstrip('.')}. <image>\n{ex.instruction} ASSISTANT:"
    first = vlm.processor(text=[prompt], images=[[load_image(ex.image)]], return_tensors="pt")["input_ids"][0]
    answer = vlm.tokenizer(" " + ex.response, add_special_tokens=False)["input_ids"] + [vlm.tokenizer.eos_token_id]
    assert batch.inputs["input_ids"][0].tolist() == first.tolist() + answer
    assert batch.inputs["labels"][0].tolist() == [-100] * len(first) + answer


# ---------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("stage", [1, 2])
def test_tga_command_trains_every_family(tiny_model_dir, two_rows, pairs_file, tmp_path, family, stage):
    out = tmp_path / "run"
    lora = ["--lora", "true", "--lora-r", "2"] if stage == 2 else []
    rc = main(["tga", "--model", str(tiny_model_dir(family)), "--data", str(two_rows), "--eval-pairs",
               str(pairs_file), "--layers", "1", "--stage", str(stage), *lora, "--max-steps", "2",
               "--batch-size", "2", "--out", str(out), "--device", "cpu", "--evaluate", "false", "--baselines"])
    assert rc == 0
    compare = json.loads((out / "compare.json").read_text())
    assert set(compare["rows"]) == {"tga"} and compare["rows"]["tga"]["steps"] == 2
    assert any("--evaluate false" in n for n in compare["notes"])
    assert compare["rows"]["tga"]["rows"]["guided"] == 2
    vlm = load_vlm(out / "model")
    assert vlm.family == family
    assert len(generate(vlm, load_pairs(pairs_file)[:1], "image", max_new_tokens=3)) == 1
