"""Training batches for TGA: the image run with "Retrieved Text: R. <image>\\n{instruction}" and the answer as
labels, the token spans of the image and of R (from the fast tokenizer's character offsets), and the text-only
caption run of the same examples (the project's text run, via :meth:`VLM.encode`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safety_probe.data.pairs import Pair, load_image
from safety_probe.errors import InputError
from safety_probe.models.vlm import VLM, EncodedBatch, span_mask
from safety_probe.prompts import image_messages
from safety_probe.tga.data import TGAExample

RETRIEVED_PREFIX = "Retrieved Text: "


def retrieved_body(retrieved: str, image_token: str, instruction: str) -> tuple[str, int, int]:
    """The user text "Retrieved Text: R. <image>\\n{instruction}" and R's character span in it."""
    r = retrieved.strip().rstrip(".")
    body = f"{RETRIEVED_PREFIX}{r}. {image_token}\n{instruction}"
    start = len(RETRIEVED_PREFIX)
    return body, start, start + len(r)


@dataclass
class TGABatch:
    """Right-padded image-run inputs (with ``labels``), the masks pooled by the guide loss, and the caption run."""

    inputs: dict[str, torch.Tensor]
    image_mask: torch.Tensor
    retrieved_mask: torch.Tensor
    caption: EncodedBatch | None
    examples: list[TGAExample]

    def to(self, device, **kwargs) -> TGABatch:
        self.inputs = {k: v.to(device) for k, v in self.inputs.items()}
        self.image_mask = self.image_mask.to(device)
        self.retrieved_mask = self.retrieved_mask.to(device)
        return self


class TGACollator:
    """Turns a list of :class:`TGAExample` into a :class:`TGABatch` for ``vlm``.

    ``retrieved_in_context``: put R in the prompt (TGA and its CE-only baseline); without it the prompt is the
    project's plain image run (the safety fine-tuning baseline) and no R span exists. ``plain_ids``: examples
    that get the plain image run even so. ``unsupervised_ids``: examples that get no answer labels (their rows
    train the guide loss alone). ``caption_run``: also encode the caption (text) run. Prompts go
    through the processor's chat template like every other run.
    """

    def __init__(self, vlm: VLM, system_prompt: str | None = None, retrieved_in_context: bool = True,
                 caption_run: bool = True, answer_prefix: str = " ", plain_ids: frozenset[str] = frozenset(),
                 unsupervised_ids: frozenset[str] = frozenset()):
        self.vlm = vlm
        self.tok = vlm.tokenizer
        if not self.tok.is_fast:
            raise InputError(f"{vlm.name}: TGA needs a fast tokenizer (character offsets for R's span)")
        self.processor = vlm.processor
        self.image_token = getattr(self.processor, "image_token", None) or getattr(self.tok, "image_token", None)
        if retrieved_in_context and not self.image_token:
            raise InputError(f"{vlm.name}: the processor names no image token to place after the retrieved text")
        self.system_prompt = system_prompt
        self.retrieved_in_context = retrieved_in_context
        self.plain_ids = plain_ids
        self.unsupervised_ids = unsupervised_ids
        self.caption_run = caption_run
        self.answer_prefix = answer_prefix
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.eos_id = self.tok.eos_token_id

    def _render(self, ex: TGAExample) -> tuple[str, tuple[int, int] | None]:
        if not self.retrieved_in_context or ex.id in self.plain_ids:
            msgs = image_messages(ex.instruction, self.system_prompt)
            return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False), None
        if not ex.retrieved:
            raise InputError(f"example {ex.id}: no retrieved text (fill 'retrieved_caption' or run retrieval)")
        body, s, e = retrieved_body(ex.retrieved, self.image_token, ex.instruction)
        msgs = [{"role": "user", "content": [{"type": "text", "text": body}]}]
        if self.system_prompt:
            msgs.insert(0, {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        prompt = self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        at = prompt.rfind(body)
        if at < 0:
            raise InputError(f"{self.vlm.name}: the chat template altered the retrieved-text prompt of {ex.id}")
        return prompt, (at + s, at + e)

    def _one(self, ex: TGAExample) -> dict:
        prompt, span = self._render(ex)
        add_special = self.vlm.adds_special_tokens(prompt)
        proc = self.processor(text=[prompt], images=[[load_image(ex.image)]], return_tensors="pt",
                              add_special_tokens=add_special)
        ids = proc["input_ids"][0]
        enc = self.tok(prompt, return_offsets_mapping=True, add_special_tokens=add_special)
        # Map tokenizer positions to the processor's, where each image token is expanded to n copies.
        tid = enc["input_ids"]
        n_img_tok = sum(1 for t in tid if t == self.vlm.image_token_id)
        n_img_proc = int((ids == self.vlm.image_token_id).sum())
        if n_img_tok == 0 or n_img_proc % n_img_tok:
            raise InputError(f"{self.vlm.name}: cannot map the prompt's image tokens of {ex.id} onto the processor's")
        rep = n_img_proc // n_img_tok
        expanded, offsets = [], []
        for t, off in zip(tid, enc["offset_mapping"]):
            k = rep if t == self.vlm.image_token_id else 1
            expanded += [t] * k
            offsets += [tuple(off)] * k
        if expanded != ids.tolist():
            raise InputError(f"{self.vlm.name}: tokenizer and processor disagree on the image prompt of {ex.id}")
        image_mask = ids == self.vlm.image_token_id
        r_mask = torch.zeros_like(image_mask)
        if span is not None:
            s, e = span
            r_mask = span_mask(torch.tensor(offsets), s, e)
            if not r_mask.any():
                raise InputError(f"{self.vlm.name}: no retrieved-text tokens found for {ex.id}")
        answer = self.tok(self.answer_prefix + ex.response, add_special_tokens=False)["input_ids"] + [self.eos_id]
        answer = torch.tensor(answer, dtype=ids.dtype)
        pixel = {k: v for k, v in proc.items() if k not in ("input_ids", "attention_mask") and isinstance(v, torch.Tensor)}
        return {"ids": torch.cat([ids, answer]), "n_prompt": len(ids), "image_mask": image_mask,
                "r_mask": r_mask, "pixel": pixel, "supervised": ex.id not in self.unsupervised_ids}

    def __call__(self, examples: list[TGAExample]) -> TGABatch:
        items = [self._one(ex) for ex in examples]
        T = max(len(it["ids"]) for it in items)
        B = len(items)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        labels = torch.full((B, T), -100, dtype=torch.long)
        attn = torch.zeros((B, T), dtype=torch.long)
        image_mask = torch.zeros((B, T), dtype=torch.bool)
        r_mask = torch.zeros((B, T), dtype=torch.bool)
        for i, it in enumerate(items):
            n, p = len(it["ids"]), it["n_prompt"]
            ids[i, :n] = it["ids"]
            if it["supervised"]:
                labels[i, p:n] = it["ids"][p:]
            attn[i, :n] = 1
            image_mask[i, :p] = it["image_mask"]
            r_mask[i, :p] = it["r_mask"]
        inputs = {"input_ids": ids, "attention_mask": attn, "labels": labels}
        for k in items[0]["pixel"]:
            inputs[k] = torch.cat([it["pixel"][k] for it in items])
        self.vlm.cast_pixels(inputs)
        caption = None
        if self.caption_run:
            pairs = [Pair(image=ex.image, caption=ex.caption, instruction=ex.instruction) for ex in examples]
            caption = self.vlm.encode(pairs, run="text", system_prompt=self.system_prompt, padding_side="right")
        return TGABatch(inputs, image_mask, r_mask, caption, examples)

