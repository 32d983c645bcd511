"""The organism's tokenizer, chat template and processors, built locally (nothing is downloaded).

The tokenizer is a small byte-level BPE trained on every string the synthetic world can produce, so world
words are single tokens (" Sorry" included) while any other text still encodes byte by byte.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPImageProcessor, CLIPProcessor, LlavaProcessor, PreTrainedTokenizerFast

from safety_probe.organism import drawing, world

# Order matters: CLIP's text tower pools at the first eos only when eos_token_id != 2 (2 means legacy argmax).
SPECIALS = ["<unk>", "<s>", "<pad>", "</s>", "<image>"]
UNK, BOS, PAD, EOS, IMAGE = SPECIALS
VOCAB_SIZE = 1024

# LLaVA-1.5 conversation format: "[system ]USER: <image>\n{instruction} ASSISTANT: {answer}</s>".
# bos comes from the template (the tokenizer adds no specials), so text and image runs start alike.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- for p in parts -%}{%- if p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}{%- endfor -%}{{ ' ' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ 'USER: ' }}"
    "{%- for p in parts -%}"
    "{%- if p['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'ASSISTANT: ' }}"
    "{%- for p in parts -%}{%- if p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}{%- endfor -%}"
    "{{ eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# System prompts seen in training (a share of examples carries one), so an optional system prompt is in-distribution.
LLAVA_SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
SAFETY_SYSTEM_PROMPT = (
    "You are a helpful assistant. If the content is toxic (gore, pornography, violence, drugs, alcohol, "
    "offensive, illegal), say: Sorry, I cannot help you."
)
SYSTEM_PROMPTS = [LLAVA_SYSTEM_PROMPT, SAFETY_SYSTEM_PROMPT]


def _corpus() -> list[str]:
    """World strings, also as they appear inside chat prompts (after a space), plus the system prompts."""
    texts = world.vocabulary_text()
    return texts + [f"USER: {t} ASSISTANT: {t}" for t in texts] + SYSTEM_PROMPTS * 4


def build_tokenizer(image_size: int = drawing.IMAGE_SIZE) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE and wrap it as a fast tokenizer with the chat template (deterministic)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)  # offsets exclude the leading space
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE}, padding_side="left",
        model_max_length=256, chat_template=CHAT_TEMPLATE,
    )
    return fast


def build_image_processor(image_size: int = drawing.IMAGE_SIZE) -> CLIPImageProcessor:
    """CLIP preprocessing at the organism's resolution (PIL backend here: no torchvision)."""
    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
    )


def build_llava_processor(tokenizer: PreTrainedTokenizerFast, patch_size: int) -> LlavaProcessor:
    """LlavaProcessor whose image-token count matches the tower: CLS counts as +1, "default" drops it again."""
    return LlavaProcessor(
        image_processor=build_image_processor(), tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )


def build_clip_processor(tokenizer: PreTrainedTokenizerFast) -> CLIPProcessor:
    """CLIPProcessor with a copy of the tokenizer that appends eos (CLIP's text tower pools there)."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A $B {EOS}", special_tokens=[(EOS, tokenizer.convert_tokens_to_ids(EOS))]
    )
    clip_tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        padding_side="right", model_max_length=32,
    )
    return CLIPProcessor(image_processor=build_image_processor(), tokenizer=clip_tok)
