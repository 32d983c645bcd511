"""Greedy generation of one run of a batch of pairs: texts and generated token ids.

    >>> generate(vlm, pairs[:4], "text")                            # ["Sorry, I cannot help you.", ...]
    >>> generate_encoded(vlm, vlm.encode(pairs[:4], "image"), 16)   # [(text, [token ids]), ...]
"""

from __future__ import annotations

import torch

from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import DEFAULT_PROMPTS, PromptSettings
from safety_probe.models.vlm import VLM, EncodedBatch, Run


@torch.no_grad()
def generate(vlm: VLM, pairs: list[Pair], run: Run, prompts: PromptSettings = DEFAULT_PROMPTS,
             max_new_tokens: int = 32) -> list[str]:
    """Greedy responses of one run of ``pairs`` (a single batch, left-padded)."""
    batch = vlm.encode(pairs, run, prompts, padding_side="left")
    return [text for text, _ in generate_encoded(vlm, batch, max_new_tokens)]


@torch.no_grad()
def generate_encoded(vlm: VLM, batch: EncodedBatch, max_new_tokens: int = 32) -> list[tuple[str, list[int]]]:
    """Greedy responses of an encoded, left-padded ``batch`` with their generated token ids (padding and special
    tokens dropped): what a caller that edits the forward needs, since its edits are built from ``batch``'s masks."""
    tok = vlm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = vlm.model.generate(**batch.inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    new = out[:, batch.inputs["input_ids"].shape[1]:].tolist()
    special = set(tok.all_special_ids)
    ids = [[t for t in row if t not in special] for row in new]
    return [(tok.decode(row, skip_special_tokens=True).strip(), row) for row in ids]
