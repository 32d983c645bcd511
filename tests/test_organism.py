"""The shipped model organism: loads with the Auto classes, is small, and its build is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safety_probe.organism import CLIP_DIR, ORGANISM_DIR


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
    size = sum(p.stat().st_size for p in ORGANISM_DIR.parent.rglob("*") if p.is_file())
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
    from safety_probe.tga.train import weights_hash

    def small() -> Config:
        return Config(seed=3, pool_toxic=60, pool_benign=60, lm_steps=3, safety_steps=3, clip_steps=3, clip_batch=16,
                      proj_steps=3, sft_steps=3, lm_batch=4, proj_batch=4, sft_batch=6, sft_images=3)

    hashes = []
    for run in ("a", "b"):
        build(tmp_path / run, cfg=small(), eval_n=0)
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
    assert sorted(i for rows in pool.rows.values() for i, _, _ in rows) == [0, 2]  # row 1 has no caption
    outs = {k: block(hidden_states=h) for k, block in blocks.items()}
    for k, rows in pool.rows.items():
        for i, a, b in rows:
            assert torch.allclose(outs[k][i, a:b], h[i, a:b].mean(0, keepdim=True).expand(b - a, -1))
            assert torch.equal(outs[k][i, :a], h[i, :a])
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
