"""Activation patching: put the text run's states into the image run at one block and see what the model then says —
the caption's pooled state into the image tokens, or the text run's prompt tail (instruction and template suffix)
into the image run's.

    >>> after = patch_caption(vlm, image_batch, caption_mean, layers=range(vlm.n_layers))   # [B, L, d]
    >>> refusal_logprob(lens_logprobs(vlm, after), k).exp()                                  # P(refusal) [B, L]

Each function returns the last block's output at every row's last prompt position after patching at each block
(the forward stops there: the model's next-token distribution is its logit lens), so the refusal probability can be
read for any refusal token set K later, without the model. Where caption patching restores the text run's refusal
the decision reads the image tokens; where only tail patching does, it reads the prompt after the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from safety_probe.core.errors import InputError
from safety_probe.models.hooks import Trace
from safety_probe.models.spans import span_mean
from safety_probe.models.vlm import VLM, EncodedBatch
from safety_probe.probe.config import PATCH_MODES


@torch.no_grad()
def final_state(vlm: VLM, batch: EncodedBatch, layer: int | None = None,
                edit: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``[B, d]`` float32 on the CPU: the last block's output at each row's last prompt position, with ``edit`` applied
    to block ``layer``'s output (none: the unpatched run). The forward stops after the last block."""
    last = vlm.n_layers - 1
    edits = Trace(vlm.layers, [layer] if edit is not None else [], retain=False, edit_output=edit)
    with edits, Trace(vlm.layers, [last], stop=True) as read:
        vlm.model(**batch.inputs, use_cache=False)
    hidden = read.outputs[last]
    rows = torch.arange(len(batch), device=hidden.device)
    return hidden[rows, batch.last_index.to(hidden.device)].float().cpu()


def patch_caption(vlm: VLM, batch: EncodedBatch, caption_mean: torch.Tensor, layers: Sequence[int],
                  mode: str = "shift") -> torch.Tensor:
    """Patch the caption's mean state into the image tokens of the image-run ``batch`` at each of ``layers``, one block
    at a time → ``[B, len(layers), d]`` (:func:`final_state` after each).

    ``caption_mean``: ``[B, n_layers, d]``, indexed by block. ``mode="shift"`` moves every image-token state by
    (caption mean − image mean), so the pooled image state equals the caption's and token-level detail stays;
    ``"replace"`` sets every image token to the caption mean.
    """
    if mode not in PATCH_MODES:
        raise InputError(f"unknown patch mode {mode!r}: choose one of {', '.join(PATCH_MODES)}")
    out = []
    for layer in layers:
        def patch(_: int, hidden: torch.Tensor, layer: int = layer) -> torch.Tensor:
            # the patched block may sit on another device than the inputs (a device map)
            mask = batch.image_mask.to(hidden.device).unsqueeze(-1)
            target = caption_mean[:, layer].to(hidden.device, hidden.dtype).unsqueeze(1)  # [B, 1, d]
            if mode == "shift":
                return hidden + mask * (target - span_mean(hidden, batch.image_mask).to(hidden.dtype).unsqueeze(1))
            return torch.where(mask, target, hidden)

        out.append(final_state(vlm, batch, layer, patch))
    return torch.stack(out, dim=1)


def patch_tail(vlm: VLM, batch: EncodedBatch, target: torch.Tensor, source: dict[int, torch.Tensor],
               layers: Sequence[int]) -> torch.Tensor:
    """Put the text run's tail states into the image-run ``batch`` at each of ``layers``, one block at a time →
    ``[B, len(layers), d]`` (:func:`final_state` after each).

    ``target``: ``[B, T]`` the image run's tail positions (:func:`~safety_probe.models.spans.aligned_tails`);
    ``source[l]``: ``[ΣK, d]`` the text run's states after block l at its aligned tail positions, in the same
    row-major order.
    """
    out = []
    for layer in layers:
        def patch(_: int, hidden: torch.Tensor, layer: int = layer) -> torch.Tensor:
            hidden = hidden.clone()
            hidden[target.to(hidden.device)] = source[layer].to(hidden.device, hidden.dtype)
            return hidden

        out.append(final_state(vlm, batch, layer, patch))
    return torch.stack(out, dim=1)
