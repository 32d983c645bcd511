"""Token spans and what is pooled over them: the one definition of a span's mean and of the prompt tails two runs share.

    >>> mask = span_mask(offsets, start, end)               # [T] tokens overlapping characters [start, end)
    >>> span_mean(hidden, batch.image_mask)                 # [B, d] float32: the image tokens' mean state
    >>> image_tail, text_tail = aligned_tails(image.image_mask, image.last_index, text.caption_mask, text.last_index)
    >>> whole_tails(text.caption_mask, text.last_index)    # [B, T]: every tail position of each row

The *tail* of a run is the prompt after its span: the instruction and the chat template's suffix after the image
(image run) or after the caption (text run). Both runs end with the same tokens, so the last K positions of the two
tails correspond token by token (K the shorter tail: the token at the junction may differ). Probe-layers' tail
measurements and TGA's tail guide both read these positions.
"""

from __future__ import annotations

import torch


def span_mask(offsets: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """``[T]`` bool: tokens whose character span ``offsets`` ``[T, 2]`` overlaps ``[start, end)`` (empty spans,
    i.e. special tokens, never)."""
    s, e = offsets[:, 0], offsets[:, 1]
    return (s < end) & (e > start) & (e > s)


def span_counts(mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` positions per row of ``mask`` ``[B, T]``; a row with none raises (pooling nothing would silently give
    a zero vector)."""
    count = mask.sum(dim=1)
    if bool((count == 0).any()):
        raise ValueError(f"rows {torch.nonzero(count == 0).flatten().tolist()} have no positions to pool")
    return count


def pool_weights(mask: torch.Tensor, last_index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 2, T]`` 0/1 weights in ``dtype``: row 0 the span ``mask`` ``[B, T]``, row 1 one-hot at ``last_index`` ``[B]``."""
    last = torch.nn.functional.one_hot(last_index, mask.shape[1]).bool()
    return torch.stack([mask, last.to(mask.device)], dim=1).to(dtype)


def pool(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sums over positions of ``hidden`` ``[B, T, d]`` with ``weights`` ``[B, k, T]`` → ``[B, k, d]`` in
    ``hidden``'s dtype and device, by one batched matmul (0/1 weights: exact span sums and copies)."""
    return torch.bmm(weights.to(hidden.device, hidden.dtype), hidden)


def span_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[B, T, d]`` over the positions where ``mask`` ``[B, T]`` is True → ``[B, d]`` float32
    (summed in ``hidden``'s dtype, divided in float32); an empty row raises."""
    count = span_counts(mask).to(hidden.device)
    total = pool(hidden, mask.unsqueeze(1))[:, 0]
    return total.float() / count.unsqueeze(-1).float()


def tail_lengths(span: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
    """``[B]``: prompt tokens after the last True of ``span`` ``[B, T]`` up to and including ``last_index`` ``[B]``."""
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


def whole_tails(span: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: each row's whole tail, every prompt position after its ``span`` ``[B, T]`` up to ``last_index``
    ``[B]`` (what :func:`aligned_tails` keeps the last K_b of)."""
    return tail_mask(last_index, tail_lengths(span, last_index), span.shape[1])


def aligned_tails(image_span: torch.Tensor, image_last: torch.Tensor, text_span: torch.Tensor,
                  text_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The corresponding tail positions of the image run and the text run of the same rows: ``[B, T_image]`` and
    ``[B, T_text]`` bool masks with K_b positions each, K_b the shorter of row b's two tails. Row-major selection
    (``hidden[mask]``) lists the same tokens in the same order in both runs."""
    k = torch.minimum(tail_lengths(image_span, image_last), tail_lengths(text_span, text_last).to(image_span.device))
    return (tail_mask(image_last, k, image_span.shape[1]),
            tail_mask(text_last.to(text_span.device), k.to(text_span.device), text_span.shape[1]))
