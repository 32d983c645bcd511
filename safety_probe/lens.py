"""Read the model at each block: the logit lens at the last prompt position, and attention to the caption.

    >>> for logprobs in iter_lens_logprobs(vlm, states.caption_last[harmful]):   # [chunk, L, vocab]
    ...     ...
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from safety_probe.data.pairs import Pair
from safety_probe.models.vlm import VLM


@torch.no_grad()
def lens_logprobs(vlm: VLM, hidden: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the logit lens ``[n, L, vocab]`` of block outputs ``[n, L, d_model]``."""
    return torch.log_softmax(vlm.logit_lens(hidden), dim=-1).cpu()


def iter_lens_logprobs(vlm: VLM, hidden: torch.Tensor, chunk: int = 8) -> Iterator[torch.Tensor]:
    """:func:`lens_logprobs` over chunks of pairs, so ``n * L * vocab`` never sits in memory at once."""
    for i in range(0, hidden.shape[0], chunk):
        yield lens_logprobs(vlm, hidden[i:i + chunk])


def refusal_probability(logprobs: torch.Tensor, refusal_ids: list[int]) -> torch.Tensor:
    """Total probability ``[...]`` of the refusal tokens under next-token log-probs ``[..., vocab]``."""
    return logprobs[..., refusal_ids].exp().sum(dim=-1)


@torch.no_grad()
def caption_attention_mass(vlm: VLM, pairs: list[Pair], system_prompt: str | None = None,
                           batch_size: int = 8, progress: bool = True) -> torch.Tensor:
    """Per pair and block, the last prompt token's attention on the caption tokens (text run), mean over heads: ``[n, L]``.

    Attention weights need the eager kernel, so it is switched on for this pass and restored after.
    """
    previous = vlm.model.config._attn_implementation
    vlm.model.set_attn_implementation("eager")
    masses = []
    try:
        for i in tqdm(range(0, len(pairs), batch_size), desc="attention", disable=not progress):
            batch = vlm.encode(pairs[i:i + batch_size], "text", system_prompt)
            attentions = vlm.model(**batch.inputs, output_attentions=True).attentions  # L x [B, H, T, T]
            per_layer = [_attention_on(a, batch.caption_mask, batch.last_index) for a in attentions]
            masses.append(torch.stack(per_layer, dim=1))
    finally:
        vlm.model.set_attn_implementation(previous)
    return torch.cat(masses)


def _attention_on(attention: torch.Tensor, span: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
    """``[B]`` on the CPU: the last prompt token's attention ``[B, H, T, T]`` on the ``span`` ``[B, T]``, mean over
    heads, computed where the block ran (under a device map, not where the inputs are)."""
    span, last_index = span.to(attention.device), last_index.to(attention.device)
    rows = torch.arange(len(last_index), device=attention.device)
    return (attention[rows, :, last_index, :].float() * span.float()[:, None, :]).sum(-1).mean(-1).cpu()
