"""Training batches for TGA: the image run with "Retrieved Text: R. <image>\\n{instruction}" and every answer as
labels, the token spans of the image and of R, and the text-only caption run of the guided rows (the project's
text run, via :meth:`VLM.encode`).

Any family's processor works the same way: the chat template renders the row turn by turn, the processor
encodes the first turn's prompt (it expands the image into its own tokens: copies, tiles, soft tokens) and the
tokenizer the rest. R is located in the tokenizer's encoding of the unexpanded prompt, whose tokens agree with
the processor's everywhere except where the image was expanded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import ProcessorMixin

from safety_probe.core.errors import InputError
from safety_probe.data.pairs import Pair, load_image
from safety_probe.data.prompts import DEFAULT_PROMPTS, PromptSettings, image_messages, user_text_messages
from safety_probe.models.spans import span_mask
from safety_probe.models.vlm import VLM, EncodedBatch
from safety_probe.tga.data import TGAExample

RETRIEVED_PREFIX = "Retrieved Text: "
_MARK = "\x00"  # a text no template writes, to find where a template puts the image


def retrieved_body(retrieved: str, image_token: str, instruction: str) -> tuple[str, int, int]:
    """The user text "Retrieved Text: R. <image>\\n{instruction}" and R's character span in it."""
    r = retrieved.strip().rstrip(".")
    body = f"{RETRIEVED_PREFIX}{r}. {image_token}\n{instruction}"
    start = len(RETRIEVED_PREFIX)
    return body, start, start + len(r)


def image_placeholder(processor: ProcessorMixin) -> str:
    """The text the chat template writes for an image item (e.g. "<image>", Qwen's
    "<|vision_start|><|image_pad|><|vision_end|>", Gemma 3's "<start_of_image>"), surrounding whitespace removed."""

    def render(content: list[dict]) -> str:
        msgs = [{"role": "user", "content": [*content, {"type": "text", "text": _MARK}]}]
        return processor.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)

    with_image, without = render([{"type": "image"}]), render([])
    a = 0
    while a < min(len(with_image), len(without)) and with_image[a] == without[a]:
        a += 1
    placeholder = with_image[a:with_image.index(_MARK)].strip()
    if not placeholder:
        raise InputError("the chat template writes no image placeholder before the text of a user turn")
    return placeholder


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding the other dims to the largest (as processors batch image tiles)."""
    shape = [max(sizes) for sizes in zip(*(t.shape for t in tensors))]
    return torch.cat([F.pad(t, [x for d in range(t.dim() - 1, 0, -1) for x in (0, shape[d] - t.shape[d])])
                      for t in tensors])


@dataclass
class TGABatch:
    """Right-padded image-run inputs, the masks pooled by the guide loss, and the caption run.

    ``inputs``: the forward's keyword arguments: ``input_ids``, ``attention_mask``, ``labels`` ``[B, T]``, the
    processor's per-token tensors ``[B, T]`` (0 on text) and image tensors. ``image_mask`` / ``retrieved_mask``:
    ``[B, T]`` bool. ``guided``: ``[B]`` bool, the rows with the guide term (an image and its caption);
    ``caption``: the caption run of those rows in order (None without any, or without ``caption_run``).
    ``prompt_last``: ``[B]`` position of each row's last prompt token (the one before the first answer token).
    """

    inputs: dict[str, torch.Tensor]
    image_mask: torch.Tensor
    retrieved_mask: torch.Tensor
    guided: torch.Tensor
    caption: EncodedBatch | None
    examples: list[TGAExample]
    prompt_last: torch.Tensor

    def to(self, device, **kwargs) -> TGABatch:
        self.inputs = {k: v.to(device) for k, v in self.inputs.items()}
        self.image_mask = self.image_mask.to(device)
        self.retrieved_mask = self.retrieved_mask.to(device)
        self.guided = self.guided.to(device)
        self.prompt_last = self.prompt_last.to(device)
        return self


class TGACollator:
    """Turns a list of :class:`TGAExample` into a :class:`TGABatch` for ``vlm``.

    ``prompts``: the system prompt of every row and the text template of the caption run (both runs pad on the
    right: the answer follows each prompt). ``retrieved_in_context``: put R in the prompt of image rows (TGA and its
    CE-only baseline); without it the prompt is the project's plain image run (the safety fine-tuning baseline) and
    no R span exists.
    ``plain_ids``: examples that get the plain image run even so. ``unsupervised_ids``: examples that get no
    answer labels and end at their prompt (their rows train the guide loss alone). ``caption_run``: also encode the
    caption (text) run. Prompts go through the processor's chat template like every other run; labels are every answer with the
    template's end of turn (the tokenizer's eos where the template writes none), -100 elsewhere.
    """

    def __init__(self, vlm: VLM, prompts: PromptSettings = DEFAULT_PROMPTS, retrieved_in_context: bool = True,
                 caption_run: bool = True, plain_ids: frozenset[str] = frozenset(),
                 unsupervised_ids: frozenset[str] = frozenset()):
        self.vlm = vlm
        self.tok = vlm.tokenizer
        if not self.tok.is_fast:
            raise InputError(f"{vlm.name}: TGA needs a fast tokenizer (character offsets for R's span)")
        if self.tok.eos_token is None:
            raise InputError(f"{vlm.name}: the tokenizer names no eos token to end the answers with")
        self.processor = vlm.processor
        self.placeholder = image_placeholder(self.processor) if retrieved_in_context else None
        self.prompts = prompts
        self.retrieved_in_context = retrieved_in_context
        self.plain_ids = plain_ids
        self.unsupervised_ids = unsupervised_ids
        self.caption_run = caption_run
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

    def _first_turn(self, ex: TGAExample) -> tuple[list[dict], tuple[str, int, int] | None]:
        """The messages up to the first user turn, and (user text, R's span in it) where R is in the prompt."""
        system_prompt = self.prompts.system_prompt
        if ex.image is None:
            return user_text_messages(ex.instruction, system_prompt), None
        if not self.retrieved_in_context or ex.id in self.plain_ids:
            return image_messages(ex.instruction, system_prompt), None
        if not ex.retrieved:
            raise InputError(f"example {ex.id}: no retrieved text (fill 'retrieved_caption' or run retrieval)")
        body = retrieved_body(ex.retrieved, self.placeholder, ex.instruction)
        return user_text_messages(body[0], system_prompt), body

    def _segments(self, messages: list[dict], ex: TGAExample) -> list[tuple[str, bool]]:
        """The row's text as (text, labelled) pieces: the template's prompt of each turn, then its answer up to the
        template's end-of-turn marker (the tokenizer's eos where it writes none, as LLaVA's training does)."""
        msgs, done, gap, out = list(messages), "", "", []
        for k, (question, reply) in enumerate(ex.turns):
            if k:
                msgs.append({"role": "user", "content": [{"type": "text", "text": question}]})
            prompt = self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
            full = self.processor.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
            at = full.find(reply, len(prompt))
            if not prompt.startswith(done) or not full.startswith(prompt) or at < 0:
                raise InputError(f"{self.vlm.name}: the chat template does not render example {ex.id} turn by turn "
                                 f"(answer {k + 1} is not the text after its prompt)")
            end = at + len(reply)
            marker = full[end:].rstrip()  # e.g. "<|im_end|>"; "" where the template ends a turn with spaces only
            out += [(gap + prompt[len(done):], False), (full[len(prompt):end] + (marker or self.tok.eos_token), True)]
            gap, done = full[end + len(marker):], full
        return out

    def _retrieved_mask(self, ids: torch.Tensor, prompt: str, start: int, end: int, add_special: bool,
                        ex_id: str) -> torch.Tensor:
        """``[T]`` bool over the processor's ``ids`` of ``prompt``: the tokens of R (characters ``[start, end)``),
        from the tokenizer's offsets on the unexpanded prompt. Both encodings share a head and a tail; the
        image's expansion lies between them, and no token of R may."""
        enc = self.tok(prompt, return_offsets_mapping=True, add_special_tokens=add_special)
        plain, expanded, img = enc["input_ids"], ids.tolist(), self.vlm.image_token_id
        n = min(len(plain), len(expanded))
        head = 0
        while head < n and plain[head] == expanded[head] != img:
            head += 1
        tail = 0
        while tail < n - head and plain[-1 - tail] == expanded[-1 - tail] != img:
            tail += 1
        in_plain = span_mask(torch.tensor(enc["offset_mapping"]), start, end)
        if not in_plain.any() or in_plain[head:len(plain) - tail].any():
            raise InputError(f"{self.vlm.name}: tokenizer and processor disagree on the retrieved text of {ex_id}")
        mask = torch.zeros(len(expanded), dtype=torch.bool)
        mask[:head] = in_plain[:head]
        mask[len(expanded) - tail:] = in_plain[len(plain) - tail:]
        return mask

    def _one(self, ex: TGAExample) -> dict:
        messages, body = self._first_turn(ex)
        supervised = ex.id not in self.unsupervised_ids
        if supervised:
            segments = self._segments(messages, ex)
        else:  # a guide-only row ends at its prompt: nothing reads its answers (the model is causal)
            segments = [(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                         False)]
        prompt = segments[0][0]
        add_special = self.vlm.adds_special_tokens(prompt)
        images = None if ex.image is None else [[load_image(ex.image)]]
        proc = self.processor(text=[prompt], images=images, return_tensors="pt", add_special_tokens=add_special)
        first = proc["input_ids"][0]
        pieces = [first] + [torch.tensor(self.tok(text, add_special_tokens=False)["input_ids"], dtype=first.dtype)
                            for text, _ in segments[1:]]
        ids = torch.cat(pieces)
        labelled = torch.cat([torch.full((len(p),), lab) for p, (_, lab) in zip(pieces, segments)])
        img = self.vlm.image_token_id
        n_prompt, n_all = int((first == img).sum()), int((ids == img).sum())
        if ex.image is not None and not n_prompt:
            raise InputError(f"{self.vlm.name}: the processor put no image tokens in the prompt of {ex.id}")
        if n_all != n_prompt or (ex.image is None and n_all):
            raise InputError(f"{self.vlm.name}: the text of example {ex.id} contains the image token")
        r_mask = torch.zeros(len(ids), dtype=torch.bool)
        if body is not None:
            at = prompt.rfind(body[0])
            if at < 0:
                raise InputError(f"{self.vlm.name}: the chat template altered the retrieved-text prompt of {ex.id}")
            r_mask[:len(first)] = self._retrieved_mask(first, prompt, at + body[1], at + body[2], add_special, ex.id)
        extra = {k: v for k, v in proc.items()
                 if k not in ("input_ids", "attention_mask") and isinstance(v, torch.Tensor)}
        per_token = {k: v[0] for k, v in extra.items() if v.shape == proc["input_ids"].shape}  # e.g. token type ids
        return {"ids": ids, "labels": torch.where(labelled & supervised, ids, -100), "image_mask": ids == img,
                "r_mask": r_mask, "per_token": per_token, "prompt_last": len(first) - 1,
                "images": {k: v for k, v in extra.items() if k not in per_token}}

    def __call__(self, examples: list[TGAExample]) -> TGABatch:
        return self._batch(examples, [self._one(ex) for ex in examples])

    def parts(self, examples: list[TGAExample]) -> list[TGABatch]:
        """``examples`` as the batches of one step: the rows with answers, then the guide-only rows (which end at their
        prompts, so their batch is as wide as its longest prompt, and its forward stops after the deepest guided
        block); either is left out when empty. The same loss as :meth:`__call__`'s one batch, to float rounding."""
        items = [self._one(ex) for ex in examples]
        parts = ([(ex, it) for ex, it in zip(examples, items) if ex.id not in self.unsupervised_ids],
                 [(ex, it) for ex, it in zip(examples, items) if ex.id in self.unsupervised_ids])
        return [self._batch([ex for ex, _ in part], [it for _, it in part]) for part in parts if part]

    def _batch(self, examples: list[TGAExample], items: list[dict]) -> TGABatch:
        T = max(len(it["ids"]) for it in items)
        B = len(items)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        labels = torch.full((B, T), -100, dtype=torch.long)
        attn = torch.zeros((B, T), dtype=torch.long)
        image_mask = torch.zeros((B, T), dtype=torch.bool)
        r_mask = torch.zeros((B, T), dtype=torch.bool)
        for i, it in enumerate(items):
            n = len(it["ids"])
            ids[i, :n] = it["ids"]
            labels[i, :n] = it["labels"]
            attn[i, :n] = 1
            image_mask[i, :n] = it["image_mask"]
            r_mask[i, :n] = it["r_mask"]
        inputs = {"input_ids": ids, "attention_mask": attn, "labels": labels}
        for k in dict.fromkeys(k for it in items for k in it["per_token"]):
            rows = {i: it["per_token"][k] for i, it in enumerate(items) if k in it["per_token"]}
            inputs[k] = torch.zeros((B, T), dtype=next(iter(rows.values())).dtype)  # 0 = text, as processors write it
            for i, v in rows.items():
                inputs[k][i, :len(v)] = v
        for k in dict.fromkeys(k for it in items for k in it["images"]):  # image rows only, in row order
            inputs[k] = _cat_padded([it["images"][k] for it in items if k in it["images"]])
        self.vlm.cast_pixels(inputs)
        guided = torch.tensor([ex.guided for ex in examples], dtype=torch.bool)
        caption = None
        if self.caption_run and guided.any():
            pairs = [Pair(image=ex.image, caption=ex.caption, instruction=ex.instruction)
                     for ex in examples if ex.guided]
            caption = self.vlm.encode(pairs, "text", self.prompts, padding_side="right")
        prompt_last = torch.tensor([it["prompt_last"] for it in items])
        return TGABatch(inputs, image_mask, r_mask, guided, caption, examples, prompt_last)
