"""Load an image-text-to-text model and expose what probing needs: blocks, lens, prompts, token spans.

    >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf")
    >>> batch = vlm.encode(pairs[:4], run="image")      # chat-templated, padded, on vlm.device
    >>> batch.image_mask.shape                          # [batch, seq]: True at image-token positions
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from safety_probe.data.pairs import Pair
from safety_probe.errors import InputError
from safety_probe.layers import check_range
from safety_probe.models.folder import check_model_files, is_hub_id, read_model_config, weights_identity
from safety_probe.models.placement import DeviceMap, execution_device
from safety_probe.models.processor import load_processor
from safety_probe.prompts import (
    check_text_run,
    check_text_template,
    image_messages,
    text_prompt_body,
    user_text_messages,
)

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


def _supported_list() -> str:
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
    prompts: list[str]


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
        self._text_template = "caption"
        self._text_run = "caption"

    @property
    def text_template(self) -> str:
        """The text run's template, one of :data:`~safety_probe.prompts.TEXT_TEMPLATES` (every text run uses it)."""
        return self._text_template

    @text_template.setter
    def text_template(self, template: str) -> None:
        self._text_template = check_text_template(template)

    @property
    def text_run(self) -> str:
        """What the text run sends, one of :data:`~safety_probe.prompts.TEXT_RUNS`: ``caption`` (caption +
        instruction in :attr:`text_template`) or ``query`` (the pair's ``text_query`` alone)."""
        return self._text_run

    @text_run.setter
    def text_run(self, run: str) -> None:
        self._text_run = check_text_run(run)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's execution device (under a device map, not a parameter's)."""
        return execution_device(self.model, self.embed)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def run_settings(self) -> dict:
        """What about the model shapes every result: name, weights, dtype, device type, text template and run."""
        return {"model": self.name, "weights": self.weights, "dtype": str(self.dtype), "device": self.device.type,
                "text_template": self.text_template, "text_run": self.text_run}

    @staticmethod
    def hook_name(layer: int) -> str:
        """TransformerLens name of block ``layer``'s output (0-based)."""
        return f"blocks.{layer}.hook_resid_post"

    def check_layers(self, layers: list[int]) -> list[int]:
        """Return sorted unique layers, or raise InputError naming one outside [0, n_layers)."""
        return check_range(layers, self.n_layers)

    def logit_lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., vocab]`` read from block outputs ``[..., d_model]`` with the model's final norm and unembedding."""
        # under a device map the final norm and the unembedding may sit on other devices than the blocks
        normed = self.final_norm(hidden.to(execution_device(self.model, self.final_norm), self.dtype))
        logits = self.unembed(normed.to(execution_device(self.model, self.unembed)))
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits.float()

    def shared_copy(self) -> VLM:
        """A second :class:`VLM` whose module tree is a copy but whose parameters and buffers are the same tensors
        (for wrappers that patch the modules they wrap, without a second set of weights in memory)."""
        memo = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
        twin = VLM(copy.deepcopy(self.model, memo), self.processor, name=self.name)
        twin.text_template, twin.text_run = self.text_template, self.text_run
        return twin

    # Prompts

    def _render(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def text_body(self, pair: Pair) -> tuple[str, str]:
        """The text run's user text for ``pair`` and the span of it that probing pools: the caption in the
        caption + instruction body, or under the ``query`` text run the whole ``text_query``. A pair without the
        field the text run needs is an InputError naming the pair."""
        if self.text_run == "query":
            if not pair.text_query:
                raise InputError(f"pair {pair.source_id or pair.image}: no text_query for the query text run "
                                 "(--text-run query sends the benchmark's text-only query)")
            return pair.text_query, pair.text_query
        if not pair.caption:
            raise InputError(f"pair {pair.source_id or pair.image}: no caption for the caption text run "
                             "(add captions, or --text-run query where the pairs have text_query)")
        return text_prompt_body(pair.caption, pair.instruction, self.text_template), pair.caption

    def prompt(self, pair: Pair, run: Run, system_prompt: str | None = None) -> str:
        """The chat-templated prompt of one run of a pair (generation prompt added)."""
        if run == "image":
            return self._render(image_messages(pair.instruction, system_prompt))
        return self._render(user_text_messages(self.text_body(pair)[0], system_prompt))

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
        system_prompt: str | None = None,
        padding_side: Literal["left", "right"] = "left",
    ) -> EncodedBatch:
        """Tokenise one run of ``pairs`` as a padded batch and locate the image / caption tokens."""
        prompts = [self.prompt(p, run, system_prompt) for p in pairs]
        kwargs = {"padding": True, "return_tensors": "pt", "add_special_tokens": self.adds_special_tokens(prompts[0]),
                  "padding_side": padding_side}
        images = [[p.load_image()] for p in pairs] if run == "image" else None
        inputs = self.processor(text=prompts, images=images, **kwargs)
        input_ids = inputs["input_ids"]
        attention = inputs["attention_mask"].bool()
        image_mask = (input_ids == self.image_token_id) & attention
        caption_mask = torch.zeros_like(attention)
        if run == "text":
            caption_mask = self._caption_mask(pairs, prompts, input_ids, kwargs)
        elif not image_mask.any(dim=1).all():
            raise InputError(f"{self.name}: the processor put no image tokens in the vision prompt")
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        last_index = torch.where(attention, positions, -1).max(dim=1).values
        inputs = self.cast_pixels({k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return EncodedBatch(inputs, image_mask.to(self.device), caption_mask.to(self.device), last_index.to(self.device), prompts)

    def _caption_mask(self, pairs: list[Pair], prompts: list[str], input_ids: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """Positions of the text run's pooled span (:meth:`text_body`: the caption, or the text query) from the
        fast tokenizer's character offsets."""
        if not self.tokenizer.is_fast:
            raise InputError(f"{self.name}: caption spans need a fast tokenizer (offsets); this one is slow")
        enc = self.tokenizer(prompts, return_offsets_mapping=True, **kwargs)
        if not torch.equal(enc["input_ids"], input_ids):
            raise InputError(f"{self.name}: tokenizer and processor disagree on the text prompt's tokens")
        offsets = enc["offset_mapping"]  # [B, T, 2] character spans, (0, 0) for special tokens
        mask = torch.zeros(input_ids.shape, dtype=torch.bool)
        for i, (pair, prompt) in enumerate(zip(pairs, prompts)):
            body_text, span = self.text_body(pair)
            body = prompt.rfind(body_text)
            if body < 0:
                raise InputError(f"{self.name}: the chat template altered the text-run text of {pair.image.name}")
            start = body + body_text.rfind(span)
            end = start + len(span)
            mask[i] = span_mask(offsets[i], start, end) & enc["attention_mask"][i].bool()
            if not mask[i].any():
                raise InputError(f"{self.name}: no {self.text_run} tokens found for {pair.image.name}")
        return mask


@torch.no_grad()
def generate(vlm: VLM, pairs: list[Pair], run: Run, system_prompt: str | None = None,
             max_new_tokens: int = 32) -> list[str]:
    """Greedy responses of one run of ``pairs`` (a single batch, left-padded)."""
    return [text for text, _ in generate_with_ids(vlm, pairs, run, system_prompt, max_new_tokens)]


@torch.no_grad()
def generate_with_ids(vlm: VLM, pairs: list[Pair], run: Run, system_prompt: str | None = None,
                      max_new_tokens: int = 32) -> list[tuple[str, list[int]]]:
    """Greedy responses of one run of ``pairs`` with their generated token ids (padding and EOS dropped)."""
    return generate_encoded(vlm, vlm.encode(pairs, run, system_prompt, padding_side="left"), max_new_tokens)


@torch.no_grad()
def generate_encoded(vlm: VLM, batch: EncodedBatch, max_new_tokens: int = 32) -> list[tuple[str, list[int]]]:
    """Greedy responses of an encoded, left-padded ``batch`` with their generated token ids (padding and EOS
    dropped): what a caller that edits the forward needs, since its edits are built from ``batch``'s masks."""
    tok = vlm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = vlm.model.generate(**batch.inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    new = out[:, batch.inputs["input_ids"].shape[1]:].tolist()
    special = set(tok.all_special_ids)
    ids = [[t for t in row if t not in special] for row in new]
    return [(tok.decode(row, skip_special_tokens=True).strip(), row) for row in ids]


def span_mask(offsets: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """``[T]`` bool: tokens whose character span ``offsets`` ``[T, 2]`` overlaps ``[start, end)`` (empty spans,
    i.e. special tokens, never)."""
    s, e = offsets[:, 0], offsets[:, 1]
    return (s < end) & (e > start) & (e > s)


def tail_lengths(span: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
    """``[B]``: prompt tokens after the last True of ``span`` ``[B, T]`` up to and including ``last_index`` ``[B]``:
    the instruction and the chat template's suffix that follow the image (image run) or the caption (text run)."""
    positions = torch.arange(span.shape[1], device=span.device).expand_as(span)
    span_end = torch.where(span, positions, -1).max(dim=1).values
    if bool((span_end < 0).any()):
        raise ValueError("tail_lengths: a row has no span to follow")
    return last_index.to(span.device) - span_end


def tail_mask(last_index: torch.Tensor, length: torch.Tensor, n_positions: int) -> torch.Tensor:
    """``[B, T]`` bool: the ``length[b]`` positions ending at ``last_index[b]`` (the last prompt tokens of each row)."""
    positions = torch.arange(n_positions, device=last_index.device).unsqueeze(0)
    last, length = last_index.unsqueeze(1), length.to(last_index.device).unsqueeze(1)
    return (positions <= last) & (positions > last - length)


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


def n_layers_of(name_or_path: str | Path, trust_remote_code: bool = False) -> int:
    """The number of decoder blocks of a model, read from its config alone (to check layers before any work)."""
    return int(_config(str(name_or_path), trust_remote_code).get_text_config().num_hidden_layers)


def _config(path: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot load model {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def check_vlm(name_or_path: str | Path, trust_remote_code: bool = False):
    """Check a model before loading it (folder files, config, supported family); returns its config.

    A local folder is checked file by file (:mod:`safety_probe.models.folder`); a hub id only
    by its config (which must then be in the local cache or reachable)."""
    path = str(name_or_path)
    local = not is_hub_id(path)
    if local and not Path(path).exists() and not Path(path).is_symlink():
        raise InputError(f"no such model folder: {path} (give a local Hugging Face folder or an owner/name hub id)")
    if local:
        read_model_config(path)
    config = _config(path, trust_remote_code)
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED_FAMILIES:
        kind = "a text-only model" if getattr(config, "vision_config", None) is None else "not a supported vision-language model"
        raise InputError(f"{name_or_path} ({model_type}) is {kind}; supported: {_supported_list()}")
    if local:
        check_model_files(path)
    return config


def load_vlm(
    name_or_path: str | Path,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    device_map: DeviceMap | None = None,
    offload_folder: str | Path | None = None,
) -> VLM:
    """Load a vision-language model (a local Hugging Face folder or a hub name) with its processor.

    Weights load from safetensors only. A missing, corrupt, pickle-only, text-only or unsupported model raises
    InputError naming it (or the file at fault). With ``device_map`` (a strategy such as ``"auto"`` or a
    ``{module: device}`` dict, see :func:`~safety_probe.models.placement.parse_device_map`) accelerate places the
    modules instead of ``device``; weights mapped to ``"disk"`` go to ``offload_folder`` (default: a temporary
    folder kept while the VLM lives).
    """
    from transformers import AutoModelForImageTextToText

    path = str(name_or_path)
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    check_vlm(path, trust_remote_code)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    offload = None
    if device_map is not None:
        if offload_folder is None:
            offload = tempfile.TemporaryDirectory(prefix="safety-probe-offload-")
        extra.update(device_map=device_map, offload_folder=str(offload_folder or offload.name))
    try:
        processor = load_processor(path, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True, **extra)
    except (ValueError, RuntimeError) as e:
        if device_map is not None:  # a device map accelerate cannot place (a module left out, no such GPU)
            raise InputError(f"--device-map for {name_or_path}: {str(e).splitlines()[0]}") from None
        raise InputError(f"cannot load model {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except (OSError, KeyError, TypeError) as e:  # what the file checks cannot see (e.g. wrong shapes)
        raise InputError(f"cannot load model {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    vlm = VLM(model if device_map is not None else model.to(device), processor, name=str(name_or_path),
              weights=weights_identity(path))
    vlm.offload_dir = offload  # removed with the VLM: the offloaded weights are read from it during every forward
    return vlm
