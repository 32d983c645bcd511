"""Tiny random-weight VLMs (``safety_probe.testing.tiny``): build, reload offline, template, run, bridge.

Each family is built once per session (module-scoped fixture); the whole file runs in well under a
minute on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.utils import logging as hf_logging

from safety_probe.models.processor import load_processor
from safety_probe.testing.tiny import TINY_FAMILIES, build_tiny_text_lm, build_tiny_vlm

hf_logging.disable_progress_bar()

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
QWEN = ("qwen2_vl", "qwen2_5_vl")
#: Families TransformerLens 4.3 boots; Qwen2.5-VL's adapter also needs torchvision, Qwen2-VL has none.
TL_FAMILIES = ("llava", "llava_next", "idefics3", "gemma3") + (("qwen2_5_vl",) if HAS_TORCHVISION else ())

IMAGE_MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}
]
SYSTEM_TEXT_MESSAGES = [
    {"role": "system", "content": [{"type": "text", "text": "Be safe."}]},
    {"role": "user", "content": [{"type": "text", "text": "How do I bake bread?"}]},
]
#: The image prompt each family's template must render, as the released checkpoints do.
EXPECTED_IMAGE_PROMPT = {
    "llava": "USER: <image>\nDescribe this image. ASSISTANT:",
    "llava_next": "[INST] <image>\nDescribe this image. [/INST]",
    "qwen2_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n<|im_start|>assistant\n",
    "idefics3": "<|im_start|>User:<image>Describe this image.<end_of_utterance>\nAssistant:",
    "gemma3": "<bos><start_of_turn>user\n<start_of_image>Describe this image.<end_of_turn>\n<start_of_turn>model\n",
}
EXPECTED_IMAGE_PROMPT["qwen2_5_vl"] = EXPECTED_IMAGE_PROMPT["qwen2_vl"]


@dataclass
class Tiny:
    """One built family: its folder, reloaded processor and model (eager attention, eval mode)."""

    family: str
    path: Path
    processor: ProcessorMixin
    model: PreTrainedModel

    @property
    def image_token_id(self) -> int:
        cfg = self.model.config
        return (
            cfg.image_token_id if getattr(cfg, "image_token_id", None) is not None else cfg.image_token_index
        )

    def prompt(self, messages: list[dict[str, Any]] = IMAGE_MESSAGES) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @cached_property
    def image_inputs(self) -> dict[str, torch.Tensor]:
        """The processed image prompt (one red image), shared by several tests."""
        return dict(self.processor(text=self.prompt(), images=[red_image()], return_tensors="pt"))

    @cached_property
    def image_run(self) -> Any:
        """Forward of :attr:`image_inputs` with ``output_hidden_states=True``."""
        with torch.no_grad():
            return self.model(**self.image_inputs, output_hidden_states=True)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """Tiny matmuls gain nothing from threads; on a busy 2-core box 2 threads made forwards ~10x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


_BUILT: dict[str, Tiny] = {}


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """The family's tiny model, built and reloaded once per session (also under indirect parametrisation)."""
    family = request.param
    if family not in _BUILT:
        try:  # share the session's builds with other test files (conftest.py), else build here
            path = request.getfixturevalue("tiny_model_dir")(family)
        except pytest.FixtureLookupError:
            path = build_tiny_vlm(family, tmp_path_factory.mktemp(family))
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval()
        _BUILT[family] = Tiny(family, path, load_processor(path), model)
    return _BUILT[family]


def red_image(width: int = 64, height: int = 48) -> Image.Image:
    return Image.new("RGB", (width, height), (200, 30, 30))


def _image_features(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """All image feature vectors the model splices into the sequence, as one ``[n, hidden]`` tensor."""
    params = inspect.signature(model.get_image_features).parameters
    kwargs = {k: v for k, v in inputs.items() if k in params}
    out = model.get_image_features(**kwargs)
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
    return feats.reshape(-1, feats.shape[-1])


# ----------------------------------------------------------------------------------------------------------
def test_saved_config_ids_inside_vocab(tiny: Tiny) -> None:
    cfg = json.loads((tiny.path / "config.json").read_text())
    assert cfg["architectures"] == [type(tiny.model).__name__]
    text = tiny.model.config.get_text_config()
    tok = tiny.processor.tokenizer
    ids = [tiny.image_token_id, text.eos_token_id, text.pad_token_id, tok.pad_token_id, tok.eos_token_id]
    ids += [i for i in (text.bos_token_id, tok.bos_token_id) if i is not None]
    gen = tiny.model.generation_config
    ids += gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert all(0 <= i < len(tok) <= text.vocab_size for i in ids), ids
    assert (
        tok.convert_ids_to_tokens(tiny.image_token_id) == tiny.processor.image_token
        or tiny.family == "gemma3"
    )


def test_auto_processor_offline(tiny: Tiny) -> None:
    expected = {
        "llava": "LlavaProcessor",
        "llava_next": "LlavaNextProcessor",
        "qwen2_vl": "Qwen2VLProcessor",
        "qwen2_5_vl": "Qwen2_5_VLProcessor",
        "idefics3": "Idefics3Processor",
        "gemma3": "Gemma3Processor",
    }
    assert type(tiny.processor).__name__ == expected[tiny.family]
    assert type(tiny.processor.image_processor).__name__.endswith(("Pil", "Processor"))
    if (
        tiny.family in QWEN and not HAS_TORCHVISION
    ):  # Qwen-VL processors insist on a torchvision video processor
        with pytest.raises(ImportError, match="[Tt]orchvision"):
            AutoProcessor.from_pretrained(tiny.path)
    else:
        assert type(AutoProcessor.from_pretrained(tiny.path)).__name__ == expected[tiny.family]


def test_chat_template(tiny: Tiny) -> None:
    assert tiny.prompt() == EXPECTED_IMAGE_PROMPT[tiny.family]
    text_only = tiny.prompt(SYSTEM_TEXT_MESSAGES)
    assert "Be safe." in text_only and "How do I bake bread?" in text_only
    assert tiny.processor.image_token not in text_only
    string_content = [{"role": "user", "content": "How do I bake bread?"}]
    assert tiny.prompt(string_content) == tiny.prompt(SYSTEM_TEXT_MESSAGES[1:])
    no_gen = tiny.processor.apply_chat_template(IMAGE_MESSAGES, add_generation_prompt=False, tokenize=False)
    assert (
        tiny.prompt().startswith(no_gen) and len(no_gen) < len(tiny.prompt()) or tiny.family == "llava_next"
    )
    # The tokenizer carries the same template.
    assert (
        tiny.processor.tokenizer.apply_chat_template(
            SYSTEM_TEXT_MESSAGES, add_generation_prompt=True, tokenize=False
        )
        == text_only
    )


def test_image_tokens_match_features_and_forward(tiny: Tiny) -> None:
    inputs, out = tiny.image_inputs, tiny.image_run
    n_tokens = int((inputs["input_ids"] == tiny.image_token_id).sum())
    with torch.no_grad():
        n_features = _image_features(tiny.model, inputs).shape[0]
    assert n_tokens == n_features > 0
    n_layers = tiny.model.config.get_text_config().num_hidden_layers
    assert len(out.hidden_states) == n_layers + 1
    assert out.logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(out.logits).all()


def test_text_only_forward(tiny: Tiny) -> None:
    inputs = tiny.processor(text=tiny.prompt(SYSTEM_TEXT_MESSAGES), return_tensors="pt")
    assert tiny.image_token_id not in inputs["input_ids"]
    with torch.no_grad():
        out = tiny.model(**inputs, output_hidden_states=True)
    assert torch.isfinite(out.hidden_states[-1]).all()


def test_fast_tokenizer_offsets(tiny: Tiny) -> None:
    tok = tiny.processor.tokenizer
    assert tok.is_fast
    caption = 'A zebra-striped café sign reads "Don\'t mix bleach & ammonia" (2024)!'
    enc = tok(caption, add_special_tokens=False, return_offsets_mapping=True)
    assert tok.decode(enc["input_ids"]) == caption
    spans = [tuple(span) for span in enc["offset_mapping"]]
    # Byte-level BPE: the tokens of one multi-byte character share its span; otherwise spans tile the text.
    tiles = [span for i, span in enumerate(spans) if i == 0 or span != spans[i - 1]]
    assert "".join(caption[s:e] for s, e in tiles) == caption
    assert len(tok.encode("the image shows", add_special_tokens=False)) <= 4  # real merges were learnt


@pytest.mark.parametrize("tiny", ["gemma3"], indirect=True)
def test_gemma3_double_bos_like_upstream(tiny: Tiny) -> None:
    tok = tiny.processor.tokenizer
    ids = tiny.processor(text=tiny.prompt(), images=[red_image()], return_tensors="pt")["input_ids"][0]
    assert ids[:2].tolist() == [tok.bos_token_id] * 2  # template BOS + tokenizer BOS, as real Gemma 3
    ids = tiny.processor(text=tiny.prompt(), images=[red_image()], add_special_tokens=False)["input_ids"][0]
    assert ids[:2] != [tok.bos_token_id] * 2


def test_decoder_and_unembedding(tiny: Tiny) -> None:
    decoder = tiny.model.get_decoder()
    text = tiny.model.config.get_text_config()
    assert len(decoder.layers) == text.num_hidden_layers and hasattr(decoder, "norm")
    unembed = tiny.model.get_output_embeddings()
    assert unembed.weight.shape == (text.vocab_size, text.hidden_size)
    out = tiny.image_run
    with torch.no_grad():
        torch.testing.assert_close(unembed(out.hidden_states[-1]), out.logits, rtol=1e-4, atol=1e-5)


def test_padded_batch_matches_single(tiny: Tiny) -> None:
    """Two prompts of different lengths, padded left then right, give each prompt's unpadded logits."""
    tok = tiny.processor.tokenizer
    long_msg = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "What is written on the sign in this photo?"},
            ],
        }
    ]
    prompts, images = [tiny.prompt(), tiny.prompt(long_msg)], [red_image(), red_image(40, 60)]
    with torch.no_grad():
        singles = [
            tiny.model(**tiny.processor(text=p, images=[im], return_tensors="pt")).logits[0, -1]
            for p, im in zip(prompts, images)
        ]
    old_side = tok.padding_side
    try:
        for side in ("left", "right"):
            tok.padding_side = side
            # One image list per prompt: Gemma3Processor counts a flat image list as a single sample.
            batch = tiny.processor(
                text=prompts, images=[[im] for im in images], padding=True, return_tensors="pt"
            )
            mask = batch["attention_mask"]
            assert mask.sum(1)[0] < mask.sum(1)[1] and mask[0, 0 if side == "left" else -1] == 0
            with torch.no_grad():
                batched = tiny.model(**batch).logits
            for i, single in enumerate(singles):
                last = int(mask[i].nonzero().max())
                torch.testing.assert_close(
                    batched[i, last], single, rtol=1e-4, atol=1e-4, msg=f"{side} padding"
                )
    finally:
        tok.padding_side = old_side


@pytest.mark.parametrize("tiny", TL_FAMILIES, indirect=True)
def test_transformer_lens_bridge(tiny: Tiny) -> None:
    """``blocks.{l}.hook_resid_post`` of the bridge equals the output of Hugging Face decoder layer l."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(tiny.path), device="cpu")
    inputs = dict(tiny.image_inputs)
    input_ids = inputs.pop("input_ids")
    layers = tiny.model.get_decoder().layers
    block_out: dict[int, torch.Tensor] = {}
    hooks = [
        layer.register_forward_hook(
            lambda m, a, o, i=i: block_out.__setitem__(i, o[0] if isinstance(o, tuple) else o)
        )
        for i, layer in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            hf_logits = tiny.model(input_ids=input_ids, **inputs).logits
            logits, cache = bridge.run_with_cache(input_ids, **inputs)
    finally:
        for h in hooks:
            h.remove()
    assert bridge.cfg.n_layers == len(layers)
    for i in range(len(layers)):
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_post"], block_out[i], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, hf_logits, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
def test_llava_overrides(tmp_path: Path) -> None:
    path = build_tiny_vlm(
        "llava",
        tmp_path,
        seed=1,
        hidden_size=96,
        num_hidden_layers=3,
        intermediate_size=160,
        num_attention_heads=6,
        num_key_value_heads=3,
        vocab_size=1000,
        image_size=42,
    )
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (96, 3, 160)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (6, 3, 1000)
    assert model.config.vision_config.image_size == 42
    processor = load_processor(path)
    prompt = processor.apply_chat_template(IMAGE_MESSAGES, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=prompt, images=[red_image()], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == (42 // 14) ** 2
    with torch.no_grad():
        assert model(**inputs).logits.shape[-1] == 1000


def test_bad_overrides(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown overrides"):
        build_tiny_vlm("llava", tmp_path, hiden_size=8)
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_vlm("gemma3", tmp_path, vocab_size=10)
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny_vlm("paligemma", tmp_path)


def test_text_only_lm_is_not_a_vlm(tmp_path: Path) -> None:
    path = build_tiny_text_lm(tmp_path)
    assert json.loads((path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        AutoModelForImageTextToText.from_pretrained(path)
