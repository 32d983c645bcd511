"""Activation patching: put the text run's states into the image run at one block and see what the model then says —
the caption's pooled state into the image tokens, or the text run's prompt tail (instruction and template suffix)
into the image run's.

    >>> below = block_outputs(vlm, image_batch)                                   # {l: [B, T, d]}, unpatched
    >>> after = patch_caption(vlm, image_batch, below, caption_mean, layers=range(vlm.n_layers))   # [B, L, d]
    >>> refusal_logprob(lens_logprobs(vlm, after), k).exp()                        # P(refusal) [B, L]

Each function returns the last block's output at every row's last prompt position after patching at each block
(its logit lens is the model's next-token distribution), so the refusal probability can be read for any refusal
token set K later, without the model. A patch at block l runs only the blocks above l, from the unpatched block-l
output with the patch applied (:func:`~safety_probe.models.hooks.start_at`): the states below l are unchanged by
construction. Where caption patching restores the text run's refusal the decision reads the image tokens; where
only tail patching does, it reads the prompt after the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch

from safety_probe.core.errors import InputError
from safety_probe.models.hooks import Trace, start_at
from safety_probe.models.spans import span_mean
from safety_probe.models.vlm import VLM, EncodedBatch
from safety_probe.probe.config import PATCH_MODES


@torch.no_grad()
def block_outputs(vlm: VLM, batch: EncodedBatch) -> dict[int, torch.Tensor]:
    """Every block's output ``[B, T, d]`` of ``batch`` (the unpatched run the patches start from)."""
    with Trace(vlm.layers, range(vlm.n_layers), stop=True) as trace:
        vlm.model(**batch.inputs, use_cache=False)
    return trace.outputs


@torch.no_grad()
def final_state(vlm: VLM, batch: EncodedBatch, layer: int | None = None,
                states: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, d]`` float32 on the CPU: the last block's output at each row's last prompt position — of the whole
    forward, or with block ``layer``'s output set to ``states`` ``[B, T, d]`` and only the blocks above it run."""
    last = vlm.n_layers - 1
    with start_at(vlm.layers, layer, states) if layer is not None else nullcontext(), \
            Trace(vlm.layers, [last], stop=True) as read:
        vlm.model(**batch.inputs, use_cache=False)
    hidden = read.outputs[last]
    rows = torch.arange(len(batch), device=hidden.device)
    return hidden[rows, batch.last_index.to(hidden.device)].float().cpu()


Tick = Callable[[int], None]
"""Progress inside a patching: called with the block runs just done (rows × blocks above the patched one)."""


def patched_finals(vlm: VLM, batch: EncodedBatch, below: dict[int, torch.Tensor], layers: Sequence[int],
                   patch: Callable[[int, torch.Tensor], torch.Tensor], tick: Tick | None = None) -> torch.Tensor:
    """``[B, len(layers), d]``: :func:`final_state` after ``patch(l, unpatched block-l output)`` at each of ``layers``;
    ``tick`` is told the block runs of each."""
    finals = []
    for l in layers:
        finals.append(final_state(vlm, batch, l, patch(l, below[l])))
        if tick is not None:
            tick(len(batch) * (vlm.n_layers - 1 - l))
    return torch.stack(finals, dim=1)


def patch_caption(vlm: VLM, batch: EncodedBatch, below: dict[int, torch.Tensor], caption_mean: torch.Tensor,
                  layers: Sequence[int], mode: str = "shift", tick: Tick | None = None) -> torch.Tensor:
    """Patch the caption's mean state into the image tokens of the image-run ``batch`` at each of ``layers``, one block
    at a time → ``[B, len(layers), d]``.

    ``below``: :func:`block_outputs` of ``batch``; ``caption_mean``: ``[B, n_layers, d]``, indexed by block.
    ``mode="shift"`` moves every image-token state by (caption mean − image mean), so the pooled image state equals
    the caption's and token-level detail stays; ``"replace"`` sets every image token to the caption mean.
    """
    if mode not in PATCH_MODES:
        raise InputError(f"unknown patch mode {mode!r}: choose one of {', '.join(PATCH_MODES)}")

    def patch(layer: int, hidden: torch.Tensor) -> torch.Tensor:
        mask = batch.image_mask.to(hidden.device).unsqueeze(-1)
        target = caption_mean[:, layer].to(hidden.device, hidden.dtype).unsqueeze(1)  # [B, 1, d]
        if mode == "shift":
            return hidden + mask * (target - span_mean(hidden, batch.image_mask).to(hidden.dtype).unsqueeze(1))
        return torch.where(mask, target, hidden)

    return patched_finals(vlm, batch, below, layers, patch, tick)


def patch_tail(vlm: VLM, batch: EncodedBatch, below: dict[int, torch.Tensor], target: torch.Tensor,
               source: dict[int, torch.Tensor], layers: Sequence[int], tick: Tick | None = None) -> torch.Tensor:
    """Put the text run's tail states into the image-run ``batch`` at each of ``layers``, one block at a time →
    ``[B, len(layers), d]``.

    ``below``: :func:`block_outputs` of ``batch``; ``target``: ``[B, T]`` the image run's tail positions
    (:func:`~safety_probe.models.spans.aligned_tails`); ``source[l]``: ``[ΣK, d]`` the text run's states after block l
    at its aligned tail positions, in the same row-major order.
    """
    def patch(layer: int, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.clone()
        hidden[target.to(hidden.device)] = source[layer].to(hidden.device, hidden.dtype)
        return hidden

    return patched_finals(vlm, batch, below, layers, patch, tick)
