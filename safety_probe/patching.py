"""Activation patching: put the text run's states into the image run at one block and read the refusal — the
caption's pooled state into the image tokens, or the text run's prompt tail (instruction and template suffix)
into the image run's.

    >>> base, patched = patch_caption_into_image(vlm, harmful_pairs, states.caption_mean, refusal_ids, layers=range(8))
    >>> (patched - base[:, None]).mean(0)        # [L]: gain in refusal probability per patched block
"""

from __future__ import annotations

from typing import Literal

import torch
from tqdm.auto import tqdm

from safety_probe.data.pairs import Pair
from safety_probe.errors import InputError
from safety_probe.hooks import Trace
from safety_probe.models.vlm import VLM, tail_lengths, tail_mask

Mode = Literal["shift", "replace"]
PATCH_MODES = ("shift", "replace")


def refusal_prob(logits: torch.Tensor, last: torch.Tensor, refusal_ids: list[int]) -> torch.Tensor:
    """``[B]`` next-token probability of the refusal tokens at each row's last prompt position ``last`` ``[B]`` of
    ``logits`` ``[B, T, V]`` (on the CPU)."""
    last = last.to(logits.device)  # under a device map the logits come from the unembedding's device
    rows = torch.arange(len(last), device=logits.device)
    return torch.softmax(logits[rows, last].float(), -1)[:, refusal_ids].sum(-1).cpu()


@torch.no_grad()
def patch_caption_into_image(
    vlm: VLM,
    pairs: list[Pair],
    caption_mean: torch.Tensor,
    refusal_ids: list[int],
    layers: list[int] | range,
    mode: Mode = "shift",
    system_prompt: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refusal probability of the image run, unpatched ``[n]`` and patched at each of ``layers`` ``[n, len(layers)]``.

    ``caption_mean``: ``[n, n_layers, d_model]``, indexed by block (record all layers). ``mode="shift"`` moves every
    image-token state by (caption mean - image mean), so the pooled image state equals the caption's and
    token-level detail stays; ``"replace"`` sets every image token to the caption mean. The refusal
    probability is the next-token probability of the refusal tokens at the last prompt position.
    """
    if mode not in PATCH_MODES:
        raise InputError(f"unknown patch mode {mode!r}: choose one of {', '.join(PATCH_MODES)}")
    layers = list(layers)
    base, patched = [], []
    steps = range(0, len(pairs), batch_size)
    for i in tqdm(steps, desc="patching", disable=not progress):
        batch = vlm.encode(pairs[i:i + batch_size], "image", system_prompt)
        mask = batch.image_mask.unsqueeze(-1)
        count = mask.sum(dim=1).clamp(min=1)
        caption = caption_mean[i:i + batch_size].to(vlm.device, vlm.dtype)
        base.append(refusal_prob(vlm.model(**batch.inputs).logits, batch.last_index, refusal_ids))
        per_layer = []
        for layer in layers:
            target = caption[:, layer].unsqueeze(1)  # [B, 1, d]

            def patch(_: int, hidden: torch.Tensor, target=target, mask=mask, count=count) -> torch.Tensor:
                # the patched block may sit on another device than the inputs (a device map)
                target, mask, count = (t.to(hidden.device) for t in (target, mask, count))
                if mode == "shift":
                    image_mean = (hidden * mask).sum(dim=1, keepdim=True) / count.unsqueeze(1)
                    return hidden + mask * (target - image_mean)
                return torch.where(mask, target, hidden)

            with Trace(vlm.layers, [layer], retain=False, edit_output=patch):
                logits = vlm.model(**batch.inputs).logits
            per_layer.append(refusal_prob(logits, batch.last_index, refusal_ids))
        patched.append(torch.stack(per_layer, dim=1))
    return torch.cat(base), torch.cat(patched)


@torch.no_grad()
def patch_text_tail_into_image(
    vlm: VLM,
    pairs: list[Pair],
    refusal_ids: list[int],
    layers: list[int] | range,
    system_prompt: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refusal probability of the image run unpatched ``[n]``, with its prompt tail patched from the text run at each
    of ``layers`` ``[n, len(layers)]``, and of the text run ``[n]``.

    The tail is what follows the image (image run) or the caption (text run): the instruction and the chat
    template's suffix, the same tokens in both runs. At block l, the image run's states at the last K prompt
    positions are replaced by the text run's at the same tokens (K per pair: the shorter of the two tails, as
    the token at the junction may differ). Where this restores the text run's refusal and patching the image
    tokens does not (:func:`patch_caption_into_image`), the refusal reads the prompt after the image, not the
    image itself.
    """
    layers = list(layers)
    base, patched, text = [], [], []
    for i in tqdm(range(0, len(pairs), batch_size), desc="tail patching", disable=not progress):
        chunk = pairs[i:i + batch_size]
        image = vlm.encode(chunk, "image", system_prompt)
        words = vlm.encode(chunk, "text", system_prompt)
        k = torch.minimum(tail_lengths(image.image_mask, image.last_index),
                          tail_lengths(words.caption_mask, words.last_index))
        source = tail_mask(words.last_index, k, words.inputs["input_ids"].shape[1])
        target = tail_mask(image.last_index, k, image.inputs["input_ids"].shape[1])
        with Trace(vlm.layers, layers, retain=True) as trace:
            text.append(refusal_prob(vlm.model(**words.inputs).logits, words.last_index, refusal_ids))
        states = {l: trace.outputs[l][source.to(trace.outputs[l].device)] for l in layers}  # [ΣK, d], row-major
        base.append(refusal_prob(vlm.model(**image.inputs).logits, image.last_index, refusal_ids))
        per_layer = []
        for layer in layers:
            def patch(_: int, hidden: torch.Tensor, source=states[layer], target=target) -> torch.Tensor:
                hidden = hidden.clone()
                hidden[target.to(hidden.device)] = source.to(hidden.device, hidden.dtype)
                return hidden

            with Trace(vlm.layers, [layer], retain=False, edit_output=patch):
                per_layer.append(refusal_prob(vlm.model(**image.inputs).logits, image.last_index, refusal_ids))
        patched.append(torch.stack(per_layer, dim=1))
    return torch.cat(base), torch.cat(patched), torch.cat(text)
