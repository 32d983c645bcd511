"""The shipped model organism: loads with the Auto classes, is small, and its build is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safety_probe.organism import CLIP_DIR, ORGANISM_DIR, vocab


@pytest.fixture(scope="module")
def organism():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(ORGANISM_DIR)
    model = AutoModelForImageTextToText.from_pretrained(ORGANISM_DIR).eval()
    return model, processor


def test_loads_as_llava_with_fast_tokenizer_and_template(organism):
    from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast

    model, processor = organism
    assert isinstance(model, LlavaForConditionalGeneration)
    assert model.config.architectures == ["LlavaForConditionalGeneration"]
    assert isinstance(processor.tokenizer, PreTrainedTokenizerFast)
    assert model.config.text_config.num_hidden_layers >= 6
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    assert prompt == "<s>USER: <image>\nDescribe this image. ASSISTANT:"
    enc = processor.tokenizer("a red gun", return_offsets_mapping=True)
    assert enc["offset_mapping"][1] == (2, 5)  # offsets exclude the leading space


def test_image_tokens_match_features(organism):
    from PIL import Image

    model, processor = organism
    img = Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8))
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this object?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], images=[img], return_tensors="pt")
    n_img = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_img == 16
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape[1] == inputs["input_ids"].shape[1]


def test_size_budget():
    from safety_probe.organism.smol import SMOL_DIR

    size = sum(p.stat().st_size for p in ORGANISM_DIR.parent.rglob("*") if p.is_file() and SMOL_DIR not in p.parents)
    assert size <= 20 * 2**20, size
    assert (CLIP_DIR / "model.safetensors").exists()


def test_clip_loads():
    from transformers import AutoProcessor, CLIPModel

    clip = CLIPModel.from_pretrained(CLIP_DIR)
    proc = AutoProcessor.from_pretrained(CLIP_DIR)
    enc = proc(text=["a red gun on a table"], return_tensors="pt", padding=True)
    assert enc["input_ids"][0, -1].item() == clip.config.text_config.eos_token_id  # CLIP pools at eos
    with torch.no_grad():
        emb = clip.get_text_features(**enc)
    assert torch.isfinite(torch.as_tensor(getattr(emb, "pooler_output", emb))).all()


@pytest.mark.slow
def test_rebuilds_are_identical(tmp_path):
    """Two builds from one seed give bit-identical weights (a shrunken schedule; the full one is make organism)."""
    from safety_probe.organism.train import Config, build
    from safety_probe.tga.params import weights_hash

    def small() -> Config:
        return Config(seed=3, pool_toxic=60, pool_benign=60, lm_steps=3, safety_steps=3, clip_steps=3, clip_batch=16,
                      proj_steps=3, sft_steps=3, lm_batch=4, proj_batch=4, sft_batch=6, sft_images=3)

    hashes = []
    for run in ("a", "b"):
        build(tmp_path / run, cfg=small())
        files = sorted((tmp_path / run).rglob("model.safetensors"))
        assert len(files) == 2  # llava and clip
        from safetensors.torch import load_file

        hashes.append([weights_hash(load_file(str(f))) for f in files])
    assert hashes[0] == hashes[1]


class _Block(torch.nn.Module):
    def forward(self, hidden_states):
        return hidden_states


def test_caption_pooling_replaces_the_span_by_its_mean_at_the_drawn_block():
    from safety_probe.organism.train import PooledCaptions

    blocks = {0: _Block(), 2: _Block()}
    h = torch.randn(3, 6, 8)
    examples = [([0] * 6, [0] * 6, (1, 4)), ([0] * 6, [0] * 6, None), ([0] * 6, [0] * 6, (2, 5))]
    pool = PooledCaptions(blocks, share=1.0, rng=np.random.default_rng(0))
    pool.choose(examples)
    assert sorted(i for rows in pool.rows.values() for i, *_ in rows) == [0, 2]  # row 1 has no caption
    outs = {k: block(hidden_states=h) for k, block in blocks.items()}
    for k, rows in pool.rows.items():
        for i, a, b, _ in rows:
            assert torch.allclose(outs[k][i, a:b], h[i, a:b].mean(0, keepdim=True).expand(b - a, -1))
            assert torch.equal(outs[k][i, :a], h[i, :a]) and torch.equal(outs[k][i, b:], h[i, b:])
    pool.remove()
    block = _Block()
    noisy = PooledCaptions({0: block}, share=1.0, rng=np.random.default_rng(0), spread=1.0, jitter=0.5)
    noisy.choose(examples[:1])
    out = block(hidden_states=h)[0, 1:4]
    noisy.remove()
    mean = h[0, 1:4].mean(0)
    assert not torch.allclose(out[0], out[1])  # tokens spread around the (moved) mean
    assert float((out - mean).norm(dim=-1).max()) <= 1.5 * float(mean.norm()) + 1e-5
    assert torch.equal(block(hidden_states=h), h)  # removed hooks leave the block alone


def test_caption_pooling_shrinks_the_mean_within_bounds():
    from safety_probe.organism.train import PooledCaptions

    block, h = _Block(), torch.randn(1, 6, 8)
    mean = h[0, 1:4].mean(0)
    scales = []
    for seed in range(20):
        pool = PooledCaptions({0: block}, share=1.0, rng=np.random.default_rng(seed), shrink=0.5)
        pool.choose([([0] * 6, [0] * 6, (1, 4))])
        out = block(hidden_states=h)[0, 1:4]
        pool.remove()
        scale = float(out[0] @ mean / (mean @ mean))
        assert torch.allclose(out, (scale * mean).expand(3, -1), atol=1e-6)  # every token the scaled mean
        scales.append(scale)
    assert 0.5 - 1e-6 <= min(scales) < max(scales) <= 1 + 1e-6


class _ToyLM(torch.nn.Module):
    """Embeddings and two blocks that add each position's causal running mean (so later positions carry
    what earlier ones held, as a decoder's attention copies it); forward takes what the build passes."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(16, 4)
        self.blocks = torch.nn.ModuleList([_Causal(), _Causal()])

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        h = self.emb(input_ids)
        for block in self.blocks:
            h = block(hidden_states=h)
        return h


class _Causal(torch.nn.Module):
    def forward(self, hidden_states):
        steps = torch.arange(1, hidden_states.shape[1] + 1).view(1, -1, 1)
        return hidden_states + hidden_states.cumsum(1) / steps


class _Bank:
    def other(self, span, rng):
        return [9] * len(span)


@torch.no_grad()
def test_splicing_gives_post_caption_prompt_positions_the_stand_in_runs_states():
    from safety_probe.organism.train import PooledCaptions

    torch.manual_seed(0)
    lm = _ToyLM()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    example = (ids[0].tolist(), [-100] * 6 + [7, 8], (2, 4))  # caption at 2-3, prompt ends at 6, answer 6-7
    pool = PooledCaptions({1: lm.blocks[1]}, share=1.0, rng=np.random.default_rng(0), bank=_Bank())
    pool.choose([example])
    pool.splice(lm, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    seen = {}

    def record(module, args, kwargs):  # registered after the pooling hook: sees what block 1 receives
        seen["h"] = kwargs["hidden_states"]

    recorder = lm.blocks[1].register_forward_pre_hook(record, with_kwargs=True)
    lm(ids)
    pool.remove()
    recorder.remove()
    true_in = lm.blocks[0](hidden_states=lm.emb(ids))
    stand_in = lm.blocks[0](hidden_states=lm.emb(torch.tensor([[1, 2, 9, 9, 5, 6, 7, 8]])))
    h = seen["h"]
    assert torch.allclose(h[0, 2:4], true_in[0, 2:4].mean(0).expand(2, -1))  # the caption: pooled
    assert torch.allclose(h[0, 4:6], stand_in[0, 4:6])  # the rest of the prompt: from the stand-in caption
    assert not torch.allclose(stand_in[0, 4:6], true_in[0, 4:6])
    assert torch.equal(h[0, :2], true_in[0, :2]) and torch.equal(h[0, 6:], true_in[0, 6:])  # answer kept


def test_caption_bank_stands_in_a_different_caption_of_equal_length():
    from transformers import AutoProcessor

    from safety_probe.organism.train import CaptionBank, Encoder

    processor = AutoProcessor.from_pretrained(ORGANISM_DIR)
    bank = CaptionBank(Encoder(processor, 16))
    captions = set(vocab.all_captions())
    assert sum(len(v) for v in bank.by_length.values()) == len(captions)
    span = bank.by_length[6][0]
    rng = np.random.default_rng(0)
    others = [bank.other(span, rng) for _ in range(20)]
    assert all(len(o) == 6 and o != span for o in others) and len({tuple(o) for o in others}) > 1
    assert processor.tokenizer.decode(others[0]).strip() in captions
    assert bank.other([0] * 99, rng) is None  # no caption that long


def test_image_batches_describe_toxic_scenes_and_never_refuse():
    from transformers import AutoProcessor

    from safety_probe.organism import world
    from safety_probe.organism.train import Encoder, Scene, image_batch

    processor = AutoProcessor.from_pretrained(ORGANISM_DIR)
    enc = Encoder(processor, 16)
    scenes = [Scene("pistol", "black", 1, "table"), Scene("cup", "red", 2, "grass")]
    pixels = torch.zeros(2, 3, 64, 64)
    examples, px = image_batch(np.random.default_rng(0), enc, scenes, pixels, np.array([0, 1]), ["neutral"], 8, None)
    assert px.shape == (8, 3, 64, 64)
    refusal = processor.tokenizer(" " + world.REFUSAL, add_special_tokens=False)["input_ids"]
    for _, labels, _ in examples:
        answer = [t for t in labels if t != -100]
        assert answer[:len(refusal)] != refusal
    answers = [processor.tokenizer.decode([t for t in labels if t != -100]).strip() for _, labels, _ in examples]
    assert all(a.startswith("The image shows") for a in answers)
    assert any("gun" in a for a in answers)  # the toxic scene (a pistol) is described, not refused
    with pytest.raises(ValueError, match="no helpful answer"):
        image_batch(np.random.default_rng(0), enc, scenes[:1], pixels[:1], np.array([0]), ["harmful_intent"], 1, None)
