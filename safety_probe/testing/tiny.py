"""Tiny random-weight vision-language models of every supported family, for tests and the speed harness.

Each builder writes a folder that loads fully offline with ``AutoProcessor.from_pretrained`` and
``AutoModelForImageTextToText.from_pretrained`` (and with TransformerLens'
``TransformerBridge.boot_transformers``): random weights built from configs, a byte-level BPE
tokenizer trained locally on generated English (so any text tokenizes), the family's real processor
class (slow ``…Pil`` image processors: no torchvision needed), a chat template mimicking the
family's real one, and every special-token id inside the tiny vocabulary.

>>> from safety_probe.testing.tiny import build_tiny_vlm
>>> path = build_tiny_vlm("qwen2_vl", tmp_path / "qwen")                      # doctest: +SKIP
>>> path = build_tiny_vlm("llava", d, hidden_size=2048, num_hidden_layers=16,
...                       intermediate_size=5632, vocab_size=32000)          # 1B-shaped, doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

from safety_probe.models.processor import without_video

__all__ = ["BRIDGE_FAMILIES", "TEXT_OVERRIDES", "TINY_FAMILIES", "build_tiny_guard", "build_tiny_text_lm", "build_tiny_vlm"]

TINY_FAMILIES: tuple[str, ...] = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "gemma3")
#: The families whose tiny models TransformerLens 4.3's bridge boots (Qwen2-VL: no adapter; Qwen2.5-VL: its
#: adapter needs torchvision).
BRIDGE_FAMILIES: tuple[str, ...] = ("llava", "llava_next", "idefics3", "gemma3")

#: Keys of ``overrides`` applied to the text (language-model) config of every family.
TEXT_OVERRIDES: tuple[str, ...] = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
)
#: Other keys ``overrides`` accepts: the square input image side in pixels, and the saved dtype.
OTHER_OVERRIDES: tuple[str, ...] = ("image_size", "dtype")

_TOKENIZER_VOCAB = 512  # BPE target size (the embedding matrix may be larger: ``vocab_size``)


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    """A few hundred deterministic English sentences, enough to learn common English merges."""
    rng = random.Random(1234)

    def alts(text: str) -> list[str]:
        return text.split("|")

    subj = alts("the cat|a dog|the man|a woman|the child|my friend|the robot|a teacher|the doctor|people")
    verb = alts("sees|holds|draws|describes|shows|explains|makes|finds|wants|builds|reads|writes|asks about")
    adj = alts("red|small|large|dangerous|safe|happy|old|new|strange|beautiful|harmful|simple|bright")
    noun = alts(
        "picture|image|photo|house|car|tree|book|weapon|recipe|question|answer|instruction|street|"
        "computer|phone|bottle|chemical|sign|letter|story|screen|diagram|text"
    )
    tail = alts(
        "in the park|on the table|at night|for the first time|with a friend|near the river|"
        "in this image|step by step|without any help|on the screen"
    )
    asks = alts(
        "Describe this image.|What is in the picture?|How do I make this?|Can you help me?|"
        "Please explain the steps.|Is this safe?|I cannot help with that request.|Sure, here is how.|"
        "Tell me what the text says.|Why is the sky blue?"
    )
    out = []
    for _ in range(400):
        s = f"{rng.choice(subj)} {rng.choice(verb)} a {rng.choice(adj)} {rng.choice(noun)} {rng.choice(tail)}"
        out.append(s[0].upper() + s[1:] + rng.choice(".!?") + " " + rng.choice(asks))
    return tuple(out)


@dataclass(frozen=True)
class _TokSpec:
    """Special tokens and templating of one family's tokenizer.

    ``named`` maps standard attributes (``bos_token``…) and model-specific ones (``image_token``,
    ``boi_token``…, exposed as ``tokenizer.image_token`` / ``.image_token_id``) to token strings. Those,
    then ``more_specials``, get ids ``0, 1, …`` in order; ``extra`` are ordinary added tokens at the end.
    """

    named: dict[str, str]
    add_bos: bool
    chat_template: str
    more_specials: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    @property
    def specials(self) -> list[str]:
        return list(dict.fromkeys([*self.named.values(), *self.more_specials]))


_STANDARD = {"bos_token", "eos_token", "pad_token", "unk_token"}


def _build_tokenizer(spec: _TokSpec) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on :func:`_corpus` and wrap it with the family's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TOKENIZER_VOCAB,
        special_tokens=spec.specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    bos = spec.named.get("bos_token")
    if spec.add_bos and bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if spec.extra:
        tok.add_tokens(list(spec.extra))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **{k: v for k, v in spec.named.items() if k in _STANDARD},
        extra_special_tokens={k: v for k, v in spec.named.items() if k not in _STANDARD},
        chat_template=spec.chat_template,
        clean_up_tokenization_spaces=False,
    )
    fast.add_bos_token = spec.add_bos
    return fast


# --------------------------------------------------------------------------------------------------
# Chat templates (Jinja), each mimicking the family's released template. Message content may be a
# string or a list of {"type": "image"} / {"type": "text", "text": ...} items.
# --------------------------------------------------------------------------------------------------
_TEXT_OF = (
    "{%- macro text_of(c) -%}{%- if c is string -%}{{ c }}{%- else -%}"
    "{%- for i in c if i['type'] == 'text' -%}{{ i['text'] }}{%- endfor -%}{%- endif -%}{%- endmacro -%}"
)

# llava-hf/llava-1.5-7b-hf: "USER: <image>\nDescribe this image. ASSISTANT:" (BOS added by the tokenizer).
_LLAVA_TEMPLATE = _TEXT_OF + (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ text_of(m['content']) + '\n' }}"
    "{%- else -%}{{ m['role'].upper() + ': ' }}"
    "{%- if m['content'] is not string -%}{%- for i in m['content'] if i['type'] == 'image' -%}"
    "{{ '<image>\n' }}{%- endfor -%}{%- endif -%}"
    "{{ text_of(m['content']) + ' ' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# llava-hf/llava-v1.6-mistral-7b-hf: "[INST] <image>\nDescribe this image. [/INST]".
_LLAVA_NEXT_TEMPLATE = _TEXT_OF + (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ '<<SYS>>\n' + text_of(m['content']) + '\n<</SYS>>\n\n' }}"
    "{%- elif m['role'] == 'user' -%}{{ '[INST] ' }}"
    "{%- if m['content'] is not string -%}{%- for i in m['content'] if i['type'] == 'image' -%}"
    "{{ '<image>\n' }}{%- endfor -%}{%- endif -%}"
    "{{ text_of(m['content']) + ' [/INST]' }}"
    "{%- else -%}{{ ' ' + text_of(m['content']) + eos_token }}{%- endif -%}{%- endfor -%}"
)

# Qwen/Qwen2-VL-7B-Instruct and Qwen2.5-VL: ChatML with a default system turn.
_QWEN_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if loop.first and m['role'] != 'system' -%}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif -%}"
    "{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{%- if m['content'] is string -%}{{ m['content'] }}{%- else -%}{%- for i in m['content'] -%}"
    "{%- if i['type'] == 'image' or 'image' in i or 'image_url' in i -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif i['type'] == 'video' or 'video' in i -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in i -%}{{ i['text'] }}{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# HuggingFaceTB/SmolVLM-Instruct (Idefics3): "<|im_start|>User:<image>Describe...<end_of_utterance>\nAssistant:".
_IDEFICS3_TEMPLATE = (
    "<|im_start|>{%- for m in messages -%}{{ m['role'] | capitalize }}"
    "{%- if m['content'] is string -%}{{ ': ' + m['content'] }}{%- else -%}"
    "{{ ':' if m['content'][0]['type'] == 'image' else ': ' }}{%- for i in m['content'] -%}"
    "{%- if i['type'] == 'text' -%}{{ i['text'] }}{%- elif i['type'] == 'image' -%}{{ '<image>' }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<end_of_utterance>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)

# google/gemma-3-4b-it: BOS in the template (the tokenizer adds one too, as upstream), system text
# folded into the first user turn, "assistant" renamed "model".
_GEMMA3_TEMPLATE = _TEXT_OF + (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}{%- set prefix = text_of(messages[0]['content']) + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for m in loop_messages -%}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' }}"
    "{{ prefix if loop.first else '' }}"
    "{%- if m['content'] is string -%}{{ m['content'] | trim }}{%- else -%}{%- for i in m['content'] -%}"
    "{%- if i['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif i['type'] == 'text' -%}{{ i['text'] | trim }}{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

_LLAMA_TOKS = _TokSpec(
    named={
        "unk_token": "<unk>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "image_token": "<image>",
    },
    add_bos=True,
    chat_template=_LLAVA_TEMPLATE,
)
_QWEN_TOKS = _TokSpec(
    named={
        "pad_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_bos_token": "<|vision_start|>",
        "vision_eos_token": "<|vision_end|>",
    },
    add_bos=False,
    chat_template=_QWEN_TEMPLATE,
    more_specials=("<|im_start|>", "<|vision_pad|>"),
)
_IDEFICS3_TOKS = _TokSpec(
    named={
        "unk_token": "<|endoftext|>",
        "bos_token": "<|im_start|>",
        "pad_token": "<|im_end|>",
        "eos_token": "<end_of_utterance>",
        "image_token": "<image>",
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
    },
    add_bos=False,
    chat_template=_IDEFICS3_TEMPLATE,
    extra=tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)
_GEMMA3_TOKS = _TokSpec(
    named={
        "pad_token": "<pad>",
        "eos_token": "<eos>",
        "bos_token": "<bos>",
        "unk_token": "<unk>",
        "image_token": "<image_soft_token>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
    },
    add_bos=True,
    chat_template=_GEMMA3_TEMPLATE,
    more_specials=("<start_of_turn>", "<end_of_turn>"),
)


# --------------------------------------------------------------------------------------------------
# Config helpers
# --------------------------------------------------------------------------------------------------
def _text_kwargs(ov: dict[str, Any], tok: PreTrainedTokenizerFast) -> dict[str, Any]:
    """Common decoder hyper-parameters: tiny defaults, caller overrides, and tokenizer-derived ids.

    Defaults scale the head count with the width (head_dim 64 beyond 256 wide), e.g. hidden 2048 gives
    32 query heads and 4 key/value heads like TinyLlama.
    """
    hidden = ov.get("hidden_size", 64)
    heads = ov.get("num_attention_heads", max(4, hidden // 64))
    kw = {
        "hidden_size": hidden,
        "num_hidden_layers": ov.get("num_hidden_layers", 2),
        "intermediate_size": ov.get("intermediate_size", 2 * hidden),
        "num_attention_heads": heads,
        "num_key_value_heads": ov.get("num_key_value_heads", max(2, heads // 8)),
        "vocab_size": ov.get("vocab_size", len(tok)),
        "max_position_embeddings": ov.get("max_position_embeddings", 2048),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if hidden % heads or heads % kw["num_key_value_heads"]:
        raise ValueError(
            f"hidden_size {hidden}, heads {heads}, kv heads {kw['num_key_value_heads']} do not divide"
        )
    if kw["vocab_size"] < len(tok):
        raise ValueError(f"vocab_size {kw['vocab_size']} is smaller than the tokenizer ({len(tok)} tokens)")
    return kw


def _vision_kwargs(image_size: int, patch_size: int) -> dict[str, Any]:
    """A 2-layer, 32-wide ViT (CLIP/SigLIP/Idefics3 style) for ``image_size`` square inputs."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of the patch size {patch_size}")
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
    }


@dataclass
class _Built:
    """What a family builder returns: the config, the processor, and ids to set on generation."""

    config: PretrainedConfig
    processor: ProcessorMixin
    eos_token_id: int | list[int] | None = None
    extra_processor_config: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Family builders. Each takes (overrides, image_size) and returns a _Built.
# --------------------------------------------------------------------------------------------------
def _llava(ov: dict[str, Any], image_size: int | None) -> _Built:
    """LLaVA-1.5: CLIP ViT (feature layer -2, CLS dropped) + 2-layer MLP projector + Llama."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor

    size = image_size or 28
    tok = _build_tokenizer(_LLAMA_TOKS)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_vision_kwargs(size, 14), projection_dim=32),
        text_config=LlamaConfig(**_text_kwargs(ov, tok)),
        image_token_id=tok.image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token the "default" strategy drops
        chat_template=_LLAVA_TEMPLATE,
    )
    return _Built(config, processor)


def _llava_next(ov: dict[str, Any], image_size: int | None) -> _Built:
    """LLaVA-NeXT (v1.6-Mistral): CLIP ViT on AnyRes tiles (base + up to 2x2 grid) + Mistral."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    size = image_size or 28
    pinpoints = [[size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    tok = _build_tokenizer(replace(_LLAMA_TOKS, chat_template=_LLAVA_NEXT_TEMPLATE))
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_vision_kwargs(size, 14), projection_dim=32),
        text_config=MistralConfig(**_text_kwargs(ov, tok), sliding_window=None),
        image_token_index=tok.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_NEXT_TEMPLATE,
    )
    return _Built(config, processor)


@cache
def _mrope_section(head_dim: int) -> list[int]:
    """Split ``head_dim / 2`` rotary frequencies into (temporal, height, width) like Qwen's [16, 24, 24]."""
    half = head_dim // 2
    hw = (half - half // 4) // 2
    return [half - 2 * hw, hw, hw]


def _qwen(ov: dict[str, Any], image_size: int | None, *, v2_5: bool) -> _Built:
    """Qwen2-VL / Qwen2.5-VL: native-resolution ViT (patch 14, 2x2 merge) + Qwen2 decoder with M-RoPE."""
    import transformers as tf

    size = image_size or 56
    if size % 28:
        raise ValueError(f"image_size {size} must be a multiple of 28 (patch 14 x merge 2)")
    tok = _build_tokenizer(_QWEN_TOKS)
    text = _text_kwargs(ov, tok)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1e6,
        "mrope_section": _mrope_section(head_dim),
    }
    text["bos_token_id"] = tok.pad_token_id  # Qwen's bos id is <|endoftext|>; the tokenizer adds none
    vision = {"depth": 2, "num_heads": 2, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    if v2_5:
        vision |= {
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": text["hidden_size"],
            "window_size": 56,
            "fullatt_block_indexes": [1],
        }
        config_cls, proc_cls = tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLProcessor
    else:
        vision |= {"embed_dim": 32, "mlp_ratio": 2, "hidden_size": text["hidden_size"]}
        config_cls, proc_cls = tf.Qwen2VLConfig, tf.Qwen2VLProcessor
    ids = {
        k: tok.convert_tokens_to_ids(t)
        for k, t in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    config = config_cls(text_config=text, vision_config=vision, **ids)
    pixels = size * size
    image_processor = tf.Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    processor = without_video(proc_cls)(
        image_processor=image_processor, tokenizer=tok, chat_template=_QWEN_TEMPLATE
    )
    # Written into processor_config.json so that, where torchvision is installed, AutoProcessor finds it.
    video = {
        "video_processor_type": "Qwen2VLVideoProcessor",
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "size": {"shortest_edge": pixels, "longest_edge": pixels},
        "image_mean": image_processor.image_mean,
        "image_std": image_processor.image_std,
    }
    return _Built(config, processor, extra_processor_config={"video_processor": video})


def _idefics3(ov: dict[str, Any], image_size: int | None) -> _Built:
    """Idefics3 / SmolVLM: SigLIP-like ViT, pixel-shuffle connector (scale 2), Llama; splits images in tiles."""
    from transformers import Idefics3Config, Idefics3ImageProcessorPil, Idefics3Processor, LlamaConfig

    size = image_size or 56
    if size % 28:
        raise ValueError(f"image_size {size} must be a multiple of 28 (patch 14 x pixel-shuffle 2)")
    tok = _build_tokenizer(_IDEFICS3_TOKS)
    scale = 2
    vision = _vision_kwargs(size, 14)
    config = Idefics3Config(
        vision_config=vision,
        text_config=LlamaConfig(**_text_kwargs(ov, tok)),
        image_token_id=tok.image_token_id,
        scale_factor=scale,
    )
    seq_len = (size // 14) ** 2 // scale**2
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * size}, max_image_size={"longest_edge": size}, do_image_splitting=True
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_len=seq_len,
        chat_template=_IDEFICS3_TEMPLATE,
    )
    return _Built(config, processor)


def _gemma3(ov: dict[str, Any], image_size: int | None) -> _Built:
    """Gemma 3: SigLIP ViT, avg-pool + linear projector to a fixed token count, Gemma3 decoder."""
    from transformers import (
        Gemma3Config,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    size = image_size or 56
    tok = _build_tokenizer(_GEMMA3_TOKS)
    text = _text_kwargs(ov, tok)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    n_layers = text["num_hidden_layers"]
    text_config = Gemma3TextConfig(
        **text,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=512,
        layer_types=["full_attention" if (i + 1) % 2 == 0 else "sliding_attention" for i in range(n_layers)],
    )
    per_side = size // 14
    mm_tokens = (per_side // 2) ** 2 if per_side % 2 == 0 else per_side**2
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(**_vision_kwargs(size, 14)),
        text_config=text_config,
        mm_tokens_per_image=mm_tokens,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": size, "width": size}, do_pan_and_scan=False)
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_length=mm_tokens,
        chat_template=_GEMMA3_TEMPLATE,
    )
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    return _Built(config, processor, eos_token_id=[tok.eos_token_id, end_of_turn])


_BUILDERS: dict[str, tuple[str, Callable[[dict[str, Any], int | None], _Built]]] = {
    "llava": ("LlavaForConditionalGeneration", _llava),
    "llava_next": ("LlavaNextForConditionalGeneration", _llava_next),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", lambda ov, s: _qwen(ov, s, v2_5=False)),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", lambda ov, s: _qwen(ov, s, v2_5=True)),
    "idefics3": ("Idefics3ForConditionalGeneration", _idefics3),
    "gemma3": ("Gemma3ForConditionalGeneration", _gemma3),
}


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def _save(
    model: PreTrainedModel,
    tokenizer_or_processor: Any,
    out_dir: Path,
    dtype: Any,
    eos_token_id: int | list[int] | None,
    extra_processor_config: dict[str, Any] | None = None,
) -> Path:
    """Finish ids of the generation config, cast, and save model + processor/tokenizer into ``out_dir``."""
    tok = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
    gen = model.generation_config
    gen.bos_token_id = tok.bos_token_id
    gen.eos_token_id = eos_token_id if eos_token_id is not None else tok.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer_or_processor.save_pretrained(out_dir)
    if extra_processor_config:
        cfg_file = out_dir / "processor_config.json"
        cfg_file.write_text(
            json.dumps({**json.loads(cfg_file.read_text()), **extra_processor_config}, indent=2)
        )
    return out_dir


def _check_overrides(overrides: dict[str, Any]) -> None:
    unknown = set(overrides) - set(TEXT_OVERRIDES) - set(OTHER_OVERRIDES)
    if unknown:
        raise TypeError(f"unknown overrides {sorted(unknown)}; allowed: {TEXT_OVERRIDES + OTHER_OVERRIDES}")


def build_tiny_vlm(family: str, out_dir: Path, *, seed: int = 0, weights: bool = True, **overrides: Any) -> Path:
    """Build a tiny random-initialised VLM of ``family`` and save model + processor into ``out_dir``.

    Args:
        family: one of :data:`TINY_FAMILIES`.
        out_dir: destination folder (created). It then loads offline with ``AutoProcessor`` /
            ``AutoModelForImageTextToText`` and boots in TransformerLens' ``TransformerBridge``.
        seed: torch seed of the random weights (the tokenizer is deterministic).
        **overrides: text-decoder sizes (:data:`TEXT_OVERRIDES`: ``hidden_size``,
            ``num_hidden_layers``, ``intermediate_size``, ``num_attention_heads``,
            ``num_key_value_heads``, ``vocab_size``, ``max_position_embeddings``), ``image_size``
            (square input side in pixels; multiple of 14, of 28 for Qwen) and ``dtype`` (saved dtype,
            e.g. ``"bfloat16"``). ``vocab_size`` may exceed the ~550-token tokenizer.
        weights: False writes the config and processor only (a 7B shape for ``probe-layers --plan`` costs nothing).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {TINY_FAMILIES}")
    _check_overrides(overrides)
    import transformers

    arch, builder = _BUILDERS[family]
    built = builder(overrides, overrides.get("image_size"))
    built.config.architectures = [arch]
    if not weights:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        built.config.save_pretrained(out_dir)
        built.processor.save_pretrained(out_dir)
        return Path(out_dir)
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(built.config).eval()
    return _save(
        model,
        built.processor,
        out_dir,
        overrides.get("dtype"),
        built.eos_token_id,
        built.extra_processor_config,
    )


def build_tiny_text_lm(out_dir: Path, *, seed: int = 0, **overrides: Any) -> Path:
    """Build a tiny text-only ``LlamaForCausalLM`` (+ its tokenizer, LLaVA-style template) into ``out_dir``.

    Used to check that text-only checkpoints are rejected where a VLM is required.
    ``overrides`` accepts :data:`TEXT_OVERRIDES` and ``dtype``.
    """
    _check_overrides(overrides)
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _build_tokenizer(_LLAMA_TOKS)
    config = LlamaConfig(**_text_kwargs(overrides, tok), architectures=["LlamaForCausalLM"])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return _save(model, tok, out_dir, overrides.get("dtype"), None)


def build_tiny_guard(out_dir: Path, answer: str, *, hidden_size: int = 64) -> Path:
    """Build a tiny ``LlamaForCausalLM`` whose greedy generation is ``answer`` then EOS, whatever the prompt.

    A stand-in guard model (real weights, tokenizer and chat template, loaded by the real code path). Every
    block adds nothing to the residual stream (``o_proj`` and ``down_proj`` are zero), so the final state at a
    position is that token's embedding: the model is a bigram table. Tokens outside ``answer`` embed to one
    basis vector, the i-th token of ``answer`` to another, and ``lm_head`` maps each basis vector to the next
    token of ``answer`` (the last to EOS) with a margin of 10·√hidden_size logits over every other token. Holds
    for any prompt that does not end in a token of ``answer`` (chat templates end in the assistant header).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _build_tokenizer(_LLAMA_TOKS)
    ids = tok.encode(answer, add_special_tokens=False)
    if len(set(ids)) != len(ids) or len(ids) + 1 > hidden_size:
        raise ValueError(f"{answer!r} tokenizes to {ids}: needs distinct tokens, fewer than hidden_size")
    config = LlamaConfig(**_text_kwargs({"hidden_size": hidden_size}, tok), architectures=["LlamaForCausalLM"],
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        embed[:, 0] = 1.0  # state 0: "before the answer"
        head.zero_()
        for i, token in enumerate([*ids, tok.eos_token_id]):
            head[token, i] = 10.0  # state i -> the answer's i-th token (EOS after the last)
            if i < len(ids):
                embed[token] = 0.0
                embed[token, i + 1] = 1.0  # the i-th answer token leads to state i + 1
    return _save(model, tok, out_dir, None, None)
