"""Load an image-text-to-text model and expose what probing needs: blocks, lens, prompts, token spans, and the
TransformerLens / nnsight habits (``run_with_cache``, ``generate``, ``to_tokens``).

    >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf")
    >>> vlm                                             # VLM('llava-hf/llava-1.5-7b-hf': LLaVA-1.5 (llava), 32 blocks, ...)
    >>> batch = vlm.encode(pairs[:4], run="image")      # chat-templated, padded, on vlm.device
    >>> batch.image_mask.shape                          # [batch, seq]: True at image-token positions
    >>> cache = vlm.run_with_cache(pairs[:2], "image")  # cache["blocks.3.hook_resid_post"]: [2, seq, d_model]
    >>> vlm.generate(pairs[:2], "text")                 # greedy answers
    >>> vlm.to_tokens(pairs[:2], "text"), vlm.to_str_tokens(pairs[0], "text")
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from safety_probe.core.errors import InputError
from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import (
    DEFAULT_PROMPTS,
    PromptSettings,
    image_messages,
    text_prompt_body,
    user_text_messages,
)
from safety_probe.models.cache import TokenCache, cache_run
from safety_probe.models.layers import checked_layers
from safety_probe.models.placement import execution_device
from safety_probe.models.spans import span_mask

# model_type -> readable family name; these are the families tested on every release.
SUPPORTED_FAMILIES: dict[str, str] = {
    "llava": "LLaVA-1.5",
    "llava_next": "LLaVA-NeXT",
    "qwen2_vl": "Qwen2-VL",
    "qwen2_5_vl": "Qwen2.5-VL",
    "idefics3": "Idefics3 / SmolVLM",
    "gemma3": "Gemma 3",
}

Run = Literal["image", "text"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def supported_list() -> str:
    """The supported families, for messages."""
    return ", ".join(f"{k} ({v})" for k, v in SUPPORTED_FAMILIES.items())


@dataclass
class EncodedBatch:
    """Model inputs for one run of a batch of pairs, with the token spans that probing pools over.

    ``inputs``: keyword arguments of the model's forward (``input_ids`` ``[B, T]``, ``attention_mask``
    ``[B, T]``, pixel tensors for the image run). ``image_mask`` / ``caption_mask``: ``[B, T]`` bool, True at
    image-token / caption-token positions (all False where the run has none; under the ``query`` text run the
    "caption" tokens are the text query's). ``last_index``: ``[B]``
    position of the last real prompt token (padding-aware).
    """

    inputs: dict[str, torch.Tensor]
    image_mask: torch.Tensor
    caption_mask: torch.Tensor
    last_index: torch.Tensor
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, rows: list[int]) -> EncodedBatch:
        """The batch of rows ``rows`` only, padding kept (every row computes as it did in the whole batch). Per-row
        tensors are indexed on dim 0; Qwen-VL's flattened image patches by each row's patch count."""
        index = torch.as_tensor(rows, dtype=torch.long)
        inputs = {}
        for key, value in self.inputs.items():
            if key == "pixel_values" and "image_grid_thw" in self.inputs:
                counts = self.inputs["image_grid_thw"].prod(dim=-1).tolist()
                starts = [sum(counts[:i]) for i in range(len(counts))]
                inputs[key] = torch.cat([value[starts[r]:starts[r] + counts[r]] for r in rows])
            else:
                inputs[key] = value[index.to(value.device)]
        device = self.image_mask.device
        return EncodedBatch(inputs, self.image_mask[index.to(device)], self.caption_mask[index.to(device)],
                            self.last_index[index.to(self.last_index.device)], [self.texts[r] for r in rows])

    def appended(self, token: int) -> EncodedBatch:
        """This left-padded batch with ``token`` after every row's prompt (so position T+1 reads it): ``[B, T + 1]``,
        the new column in no span, ``last_index`` at it."""
        ids = self.inputs["input_ids"]
        inputs = {}
        for key, value in self.inputs.items():
            if value.shape[:2] != ids.shape:
                inputs[key] = value
                continue
            fill = token if key == "input_ids" else 1 if key == "attention_mask" else 0
            inputs[key] = torch.cat([value, torch.full_like(value[:, :1], fill)], dim=1)
        column = torch.zeros_like(self.caption_mask[:, :1])
        return EncodedBatch(inputs, torch.cat([self.image_mask, column], 1), torch.cat([self.caption_mask, column], 1),
                            torch.full_like(self.last_index, ids.shape[1]), self.texts)


class VLM:
    """One interface over a Hugging Face vision-language model.

        >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf", device="cuda", dtype="bfloat16")
        >>> vlm.n_layers, vlm.d_model, vlm.hook_name(3)
        (32, 4096, 'blocks.3.hook_resid_post')
        >>> logits = vlm.logit_lens(hidden)          # [..., d_model] -> [..., vocab]
    """

    def __init__(self, model: nn.Module, processor, name: str, weights: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.weights = weights or name
        """Identity of the loaded weights (:func:`~safety_probe.models.folder.weights_identity`), for resume keys."""
        self.family: str = model.config.model_type
        self.decoder: nn.Module = _find_decoder(model)
        self.layers: nn.ModuleList = self.decoder.layers
        self.final_norm: nn.Module = self.decoder.norm
        self.unembed: nn.Module = model.get_output_embeddings()
        text_config = model.config.get_text_config()
        self.n_layers: int = len(self.layers)
        self.d_model: int = text_config.hidden_size
        self.logit_softcap: float | None = getattr(text_config, "final_logit_softcapping", None)
        self.image_token_id: int = _image_token_id(model.config, self.tokenizer)
        names = {id(m): n for n, m in model.named_modules()}
        # Hugging Face module names of the blocks, e.g. "model.language_model.layers.3".
        self.layer_module_names: list[str] = [names[id(layer)] for layer in self.layers]
        self.embed: nn.Module = model.get_input_embeddings()
        #: the temporary folder of weights offloaded to disk by a device map (kept alive with the model)
        self.offload_dir: tempfile.TemporaryDirectory | None = None

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's execution device (under a device map, not a parameter's)."""
        return execution_device(self.model, self.embed)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def run_settings(self) -> dict:
        """What about the model shapes every result: name, weights, dtype and device type."""
        return {"model": self.name, "weights": self.weights, "dtype": str(self.dtype), "device": self.device.type}

    @staticmethod
    def hook_name(layer: int) -> str:
        """TransformerLens name of block ``layer``'s output (0-based)."""
        return f"blocks.{layer}.hook_resid_post"

    def check_layers(self, layers: list[int]) -> list[int]:
        """Return sorted unique layers, or raise InputError naming one outside [0, n_layers)."""
        return checked_layers(layers, self.n_layers)

    def logit_lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., vocab]`` read from block outputs ``[..., d_model]`` with the model's final norm and unembedding."""
        # under a device map the final norm and the unembedding may sit on other devices than the blocks
        normed = self.final_norm(hidden.to(execution_device(self.model, self.final_norm), self.dtype))
        logits = self.unembed(normed.to(execution_device(self.model, self.unembed)))
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits.float()

    def __repr__(self) -> str:
        family = SUPPORTED_FAMILIES.get(self.family, self.family)
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"VLM({self.name!r}: {family} ({self.family}), {self.n_layers} blocks, d_model {self.d_model}, "
                f"{dtype} on {self.device})")

    # TransformerLens / nnsight habits

    def to_tokens(self, pairs: Pair | Sequence[Pair], run: Run,
                  prompts: PromptSettings = DEFAULT_PROMPTS) -> torch.Tensor:
        """``[B, T]`` input ids of one run of ``pairs`` (one pair or several), chat-templated and padded on
        ``prompts.padding_side``, as every measurement encodes them."""
        return self.encode(_pair_list(pairs), run, prompts).inputs["input_ids"]

    def to_str_tokens(self, pair: Pair, run: Run, prompts: PromptSettings = DEFAULT_PROMPTS) -> list[str]:
        """The prompt of one run of ``pair`` token by token, each decoded on its own (``' Sorry'``, not
        ``'ĠSorry'``)."""
        return [self.tokenizer.decode([i]) for i in self.to_tokens(pair, run, prompts)[0].tolist()]

    def run_with_cache(self, pairs: Pair | Sequence[Pair], run: Run, *, layers: Sequence[int] | None = None,
                       prompts: PromptSettings = DEFAULT_PROMPTS) -> TokenCache:
        """Every position's output of ``layers`` (default: every block) in one forward of one run of ``pairs``:
        ``cache["blocks.{l}.hook_resid_post"]`` (or ``cache[l]``) ``[B, T, d_model]``, with the image, caption and
        tail masks ``[B, T]`` and the tokens (:class:`~safety_probe.models.cache.TokenCache`)."""
        layers = self.check_layers(list(range(self.n_layers)) if layers is None else list(layers))
        return cache_run(self, self.encode(_pair_list(pairs), run, prompts), run, layers)

    def generate(self, pairs: Pair | Sequence[Pair], run: Run, *, prompts: PromptSettings = DEFAULT_PROMPTS,
                 max_new_tokens: int = 32) -> list[str]:
        """Greedy answers to one run of ``pairs`` (one left-padded batch), special tokens dropped."""
        from safety_probe.models.generate import generate

        return generate(self, _pair_list(pairs), run, prompts, max_new_tokens)

    def shared_copy(self) -> VLM:
        """A second :class:`VLM` whose module tree is a copy but whose parameters and buffers are the same tensors
        (for wrappers that patch the modules they wrap, without a second set of weights in memory)."""
        memo = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
        return VLM(copy.deepcopy(self.model, memo), self.processor, name=self.name, weights=self.weights)

    # Prompts

    def _render(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def text_body(self, pair: Pair, prompts: PromptSettings = DEFAULT_PROMPTS) -> tuple[str, str]:
        """The text run's user text for ``pair`` and the span of it that probing pools: the caption in the
        caption + instruction body, or under the ``query`` text run the whole ``text_query``. A pair without the
        field the text run needs is an InputError naming the pair."""
        if prompts.text_run == "query":
            if not pair.text_query:
                raise InputError(f"pair {pair.source_id or pair.image}: no text_query for the query text run "
                                 "(--text-run query sends the benchmark's text-only query)")
            return pair.text_query, pair.text_query
        if not pair.caption:
            raise InputError(f"pair {pair.source_id or pair.image}: no caption for the caption text run "
                             "(add captions, or --text-run query where the pairs have text_query)")
        return text_prompt_body(pair.caption, pair.instruction, prompts.text_template), pair.caption

    def prompt(self, pair: Pair, run: Run, prompts: PromptSettings = DEFAULT_PROMPTS) -> str:
        """The chat-templated prompt of one run of a pair (generation prompt added)."""
        if run == "image":
            return self._render(image_messages(pair.instruction, prompts.system_prompt))
        return self._render(user_text_messages(self.text_body(pair, prompts)[0], prompts.system_prompt))

    def adds_special_tokens(self, prompt: str) -> bool:
        """Whether tokenising a rendered ``prompt`` adds special tokens: as the processor's own
        apply_chat_template does, a template that writes BOS itself gets none added."""
        bos = self.tokenizer.bos_token
        return not (bos and prompt.startswith(bos))

    def cast_pixels(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Floating pixel inputs in the model's dtype (processors return float32)."""
        for k in ("pixel_values", "pixel_values_images"):
            if k in inputs and inputs[k].is_floating_point():
                inputs[k] = inputs[k].to(self.dtype)
        return inputs

    def encode(
        self,
        pairs: list[Pair],
        run: Run,
        prompts: PromptSettings = DEFAULT_PROMPTS,
        padding_side: Literal["left", "right"] | None = None,
    ) -> EncodedBatch:
        """Tokenise one run of ``pairs`` as a padded batch and locate the image / caption tokens; padding on
        ``padding_side`` (default: ``prompts.padding_side``)."""
        if run not in get_args(Run):
            raise InputError(f"run must be one of {', '.join(get_args(Run))}, got {run!r}")
        if not pairs:
            raise InputError("no pairs to encode")
        texts = [self.prompt(p, run, prompts) for p in pairs]
        kwargs = {"padding": True, "return_tensors": "pt", "add_special_tokens": self.adds_special_tokens(texts[0]),
                  "padding_side": padding_side or prompts.padding_side}
        images = [[p.load_image()] for p in pairs] if run == "image" else None
        inputs = self.processor(text=texts, images=images, **kwargs)
        input_ids = inputs["input_ids"]
        attention = inputs["attention_mask"].bool()
        image_mask = (input_ids == self.image_token_id) & attention
        caption_mask = torch.zeros_like(attention)
        if run == "text":
            caption_mask = self._caption_mask(pairs, texts, prompts, input_ids, kwargs)
        elif not image_mask.any(dim=1).all():
            raise InputError(f"{self.name}: the processor put no image tokens in the vision prompt")
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        last_index = torch.where(attention, positions, -1).max(dim=1).values
        inputs = self.cast_pixels({k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return EncodedBatch(inputs, image_mask.to(self.device), caption_mask.to(self.device), last_index.to(self.device), texts)

    def _caption_mask(self, pairs: list[Pair], texts: list[str], prompts: PromptSettings, input_ids: torch.Tensor,
                      kwargs: dict) -> torch.Tensor:
        """Positions of the text run's pooled span (:meth:`text_body`: the caption, or the text query) from the
        fast tokenizer's character offsets."""
        if not self.tokenizer.is_fast:
            raise InputError(f"{self.name}: caption spans need a fast tokenizer (offsets); this one is slow")
        enc = self.tokenizer(texts, return_offsets_mapping=True, **kwargs)
        if not torch.equal(enc["input_ids"], input_ids):
            raise InputError(f"{self.name}: tokenizer and processor disagree on the text prompt's tokens")
        offsets = enc["offset_mapping"]  # [B, T, 2] character spans, (0, 0) for special tokens
        mask = torch.zeros(input_ids.shape, dtype=torch.bool)
        for i, (pair, prompt) in enumerate(zip(pairs, texts)):
            body_text, span = self.text_body(pair, prompts)
            body = prompt.rfind(body_text)
            if body < 0:
                raise InputError(f"{self.name}: the chat template altered the text-run text of {pair.image.name}")
            start = body + body_text.rfind(span)
            end = start + len(span)
            mask[i] = span_mask(offsets[i], start, end) & enc["attention_mask"][i].bool()
            if not mask[i].any():
                raise InputError(f"{self.name}: no {prompts.text_run} tokens found for {pair.image.name}")
        return mask


def _pair_list(pairs: Pair | Sequence[Pair]) -> list[Pair]:
    """One pair or several, as a list."""
    return [pairs] if isinstance(pairs, Pair) else list(pairs)


def _find_decoder(model: nn.Module) -> nn.Module:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or not hasattr(decoder, "layers"):
        decoder = next((m for m in model.modules() if isinstance(getattr(m, "layers", None), nn.ModuleList)
                        and hasattr(m, "norm")), None)
    if decoder is None:
        raise InputError(f"{type(model).__name__}: cannot find the language model's decoder blocks")
    return decoder


def _image_token_id(config, tokenizer) -> int:
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    token = getattr(tokenizer, "image_token", None)
    if token is not None:
        return tokenizer.convert_tokens_to_ids(token)
    raise InputError(f"{config.model_type}: the config names no image token id")
