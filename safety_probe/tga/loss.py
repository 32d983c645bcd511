"""The TGA guide loss (paper §4), in torch operations only so that gradients flow.

    L_guide = Σ_{j∈J} [ −cos(I_j, C_j) + softplus( −(cos(I_j, C_j) − cos(R_j, C_j)) ) ]

I, C, R: mean-pooled states at block j of the image tokens (image run), the caption tokens (text-only run,
no gradient) and the retrieved-text tokens (image run); each term is averaged over the batch. ``form="exp"``
is the released code's: exp(−·) forms of both terms, averaged over the layers of J instead of summed;
``anneal`` applies its schedule 0.25·(1−t) and 0.1·(1−t)² to the two terms.
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


def _terms(cos_ic: torch.Tensor, cos_rc: torch.Tensor | None, form: GuideForm) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pull, rank) from the cosines; rank is None without ``cos_rc``."""
    if form not in ("paper", "exp"):
        raise ValueError(f"unknown guide form {form!r}: use 'paper' or 'exp'")
    pull = -cos_ic if form == "paper" else torch.exp(-cos_ic)
    if cos_rc is None:
        return pull, None
    margin = cos_ic - cos_rc
    return pull, F.softplus(-margin) if form == "paper" else torch.exp(-margin)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


def guide_terms(image: torch.Tensor, caption: torch.Tensor, retrieved: torch.Tensor | None,
                form: GuideForm = "paper") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-example (pull, rank) terms at one layer from pooled ``[B, d]`` states; each ``[B]``.

    paper: pull = −cos(I, C), rank = softplus(−(cos(I, C) − cos(R, C)));
    exp:   pull = exp(−cos(I, C)), rank = exp(−(cos(I, C) − cos(R, C))).
    ``retrieved=None`` (no R in the prompt): rank is None.
    """
    return _terms(_cos(image, caption), None if retrieved is None else _cos(retrieved, caption), form)


def guide_loss(
    image: dict[int, torch.Tensor],
    caption: dict[int, torch.Tensor],
    retrieved: dict[int, torch.Tensor],
    form: GuideForm = "paper",
    weights: tuple[float, float] = (1.0, 1.0),
    ranked: torch.Tensor | None = None,
    centre: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ over layers (paper form; the mean over layers for ``form="exp"``, as the released code) of
    w_pull·mean(pull) + w_rank·mean(rank); dicts map layer → pooled states.

    ``image``, ``caption``: ``[B, d]``; ``retrieved``: ``[B_r, d]``, the rows where ``ranked [B]`` (bool) is
    True, or all rows when ``ranked`` is None. Rows trained without R in the prompt get the pull term only.
    ``centre``: subtract the batch mean of the caption states from I, C and R first, so the cosines compare
    what is specific to each caption rather than the component all residual streams share.
    Returns the loss (a tensor with gradient through ``image`` and ``retrieved``; ``caption`` should be
    detached) and logging scalars: mean cos(I, C) and, over ranked rows, cos(R, C).
    """
    if not image:
        raise ValueError("guide_loss: no layers")
    w_pull, w_rank = weights
    rows = slice(None) if ranked is None else ranked
    total = torch.zeros((), device=next(iter(image.values())).device)
    cos_ic, cos_rc = [], []
    for layer in sorted(image):
        i, c, r = image[layer], caption[layer], retrieved.get(layer)
        if centre:
            shared = c.float().mean(dim=0, keepdim=True).detach()
            i, c = i.float() - shared, c.float() - shared
            r = None if r is None else r.float() - shared
        ic = _cos(i, c)
        rc = _cos(r, c[rows]) if r is not None and len(r) else None
        pull, _ = _terms(ic, None, form)
        total = total + w_pull * pull.mean()
        cos_ic.append(ic.mean().item())
        if rc is not None:
            _, rank = _terms(ic[rows], rc, form)
            total = total + w_rank * rank.mean()
            cos_rc.append(rc.mean().item())
    if form == "exp":
        total = total / len(image)
    stats = {"cos_ic": sum(cos_ic) / len(cos_ic)}
    if cos_rc:
        stats["cos_rc"] = sum(cos_rc) / len(cos_rc)
    return total, stats
