"""The TGA guide loss (paper §4), in torch operations only so that gradients flow.

    L_guide = Σ_{j∈J} [ −cos(I_j, C_j) + softplus( −(cos(I_j, C_j) − cos(R_j, C_j)) ) ]

I, C, R: mean-pooled states at block j of the image tokens (image run), the caption tokens (text-only run,
no gradient) and the retrieved-text tokens (image run). ``form="exp"`` swaps both terms for the released
code's exp(−·) forms; ``anneal`` applies its schedule 0.25·(1−t) and 0.1·(1−t)² to the two terms.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

GuideForm = Literal["paper", "exp"]


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B, T, d]`` over the positions where ``mask [B, T]`` is True → ``[B, d]`` (float32).

    A row with an empty mask raises: pooling nothing would silently give a zero vector.
    """
    mask = mask.to(hidden.device)
    count = mask.sum(dim=1)
    if bool((count == 0).any()):
        raise ValueError(f"masked_mean: rows {torch.nonzero(count == 0).flatten().tolist()} have no positions to pool")
    m = mask.unsqueeze(-1).to(torch.float32)
    return (hidden.float() * m).sum(dim=1) / count.unsqueeze(-1).to(torch.float32)


def anneal_weights(step: int, max_steps: int) -> tuple[float, float]:
    """The released code's schedule: (0.25·(1−t), 0.1·(1−t)²) with t = step / max_steps."""
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return 0.25 * (1 - t), 0.1 * (1 - t) ** 2


def guide_terms(image: torch.Tensor, caption: torch.Tensor, retrieved: torch.Tensor,
                form: GuideForm = "paper") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example (pull, rank) terms at one layer from pooled ``[B, d]`` states; each ``[B]``.

    paper: pull = −cos(I, C), rank = softplus(−(cos(I, C) − cos(R, C)));
    exp:   pull = exp(−cos(I, C)), rank = exp(−(cos(I, C) − cos(R, C))).
    """
    cos_ic = F.cosine_similarity(image.float(), caption.float(), dim=-1)
    cos_rc = F.cosine_similarity(retrieved.float(), caption.float(), dim=-1)
    margin = cos_ic - cos_rc
    if form == "paper":
        return -cos_ic, F.softplus(-margin)
    if form == "exp":
        return torch.exp(-cos_ic), torch.exp(-margin)
    raise ValueError(f"unknown guide form {form!r}: use 'paper' or 'exp'")


def guide_loss(
    image: dict[int, torch.Tensor],
    caption: dict[int, torch.Tensor],
    retrieved: dict[int, torch.Tensor],
    form: GuideForm = "paper",
    weights: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ over layers of w_pull·pull + w_rank·rank, averaged over the batch; dicts map layer → pooled ``[B, d]``.

    Returns the loss (a tensor with gradient through ``image`` and ``retrieved``; ``caption`` should be
    detached) and logging scalars: mean cos(I, C), cos(R, C) over layers and batch.
    """
    if not image:
        raise ValueError("guide_loss: no layers")
    w_pull, w_rank = weights
    total = None
    cos_ic, cos_rc = [], []
    for layer in sorted(image):
        pull, rank = guide_terms(image[layer], caption[layer], retrieved[layer], form)
        term = (w_pull * pull + w_rank * rank).mean()
        total = term if total is None else total + term
        with torch.no_grad():
            cos_ic.append(F.cosine_similarity(image[layer].float(), caption[layer].float(), dim=-1).mean().item())
            cos_rc.append(F.cosine_similarity(retrieved[layer].float(), caption[layer].float(), dim=-1).mean().item())
    stats = {"cos_ic": sum(cos_ic) / len(cos_ic), "cos_rc": sum(cos_rc) / len(cos_rc)}
    return total, stats
