"""The TGA guide loss (paper §4), in torch operations only so that gradients flow.

    L_guide = Σ_{j∈J} [ −cos(I_j, C_j) + softplus( −(cos(I_j, C_j) − cos(R_j, C_j)) ) ]

I, C, R: mean-pooled states at block j of the image tokens (image run), the caption tokens (text-only run,
no gradient) and the retrieved-text tokens (image run); each term is averaged over the batch. ``form="exp"``
is the released code's: exp(−·) forms of both terms, averaged over the layers of J instead of summed;
``anneal`` applies its schedule 0.25·(1−t) and 0.1·(1−t)² to the two terms. The tail guide pairs the prompt
tokens after the image with those after the caption, one row per token, the pull term alone; the last-position
guide (span ``last``) pairs only the token the answer starts from. Centring subtracts the batch mean of the caption
states (``centre="batch"``) or, for the tail, the batch mean of the caption states at the same distance from the
end of the prompt (``centre="position"``: the chat template's suffix tokens are each centred on their own mean,
not on the mean of every tail token). ``layer_mean`` averages the paper form over the layers of J instead of
summing, so λ weighs one layer whatever the size of J.

The spans are probe-layers' (:mod:`safety_probe.models.spans`): I·C is the cosine ``cos_matched`` probe-layers
reports, and the tail's mean cosine per pair its ``cos_tail``, for the same pairs, prompts and layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from safety_probe.models.spans import aligned_tails, span_mean, whole_tails

if TYPE_CHECKING:
    from safety_probe.models.vlm import EncodedBatch
    from safety_probe.tga.batch import TGABatch

GuideForm = Literal["paper", "exp"]
GuideSpan = Literal["image", "tail", "last"]
Centring = Literal["none", "batch", "position"]


Targets = list[dict[int, torch.Tensor]]
"""The caption run's targets of the guided rows of a batch, one dict per row (layer → tensor): the caption tokens' mean
``[d]`` (image span) or the states of the row's whole text tail ``[L_b, d]`` (tail span), float32."""


@dataclass
class GuideStates:
    """What the guide compares at each layer of J (layer → tensor): row n of ``image`` ``[N, d]`` with row n of
    ``caption`` ``[N, d]``; ``retrieved`` ``[N_r, d]``: R of the rows where ``ranked`` ``[N]`` is True (the tail has
    no R: ``retrieved`` empty, ``ranked`` None). ``owner`` ``[N]``: the guided row of the batch each row belongs to
    (the image span: one row each; the tail: one row per aligned token). ``position`` ``[N]``: each row's distance
    from the end of its prompt (0: the last prompt token; the tail and last spans only, else None)."""

    image: dict[int, torch.Tensor]
    caption: dict[int, torch.Tensor]
    retrieved: dict[int, torch.Tensor]
    ranked: torch.Tensor | None
    owner: torch.Tensor
    position: torch.Tensor | None = None

    @classmethod
    def cat(cls, parts: list[GuideStates], rows: list[int]) -> GuideStates:
        """The guide states of the parts of one batch one after the other, ``rows[k]`` the guided rows of part k (the
        owners are numbered on across the parts)."""
        if len(parts) == 1:
            return parts[0]
        offsets = [sum(rows[:k]) for k in range(len(rows))]

        def joined(name: str) -> dict[int, torch.Tensor]:
            return {l: torch.cat([getattr(p, name)[l] for p in parts]) for l in getattr(parts[0], name)}

        ranked = None if parts[0].ranked is None else torch.cat([p.ranked for p in parts])
        position = None if parts[0].position is None else torch.cat([p.position for p in parts])
        return cls(joined("image"), joined("caption"), joined("retrieved"), ranked,
                   torch.cat([p.owner + k for p, k in zip(parts, offsets)]), position)


def caption_targets(caption: dict[int, torch.Tensor], text: EncodedBatch, span: GuideSpan = "image") -> Targets:
    """The :data:`Targets` of the caption run ``text`` from its block outputs ``caption`` (layer → ``[B_g, T_c, d]``):
    each row's caption tokens' :func:`span_mean` ("image"), or its :func:`whole_tails` ("tail" and "last"; the guide
    aligns the last K of them with the image run's, :func:`aligned_tails`)."""
    if span in ("tail", "last"):
        tails = whole_tails(text.caption_mask, text.last_index)
        return [{l: h[row][tails[row].to(h.device)].float() for l, h in caption.items()} for row in range(len(tails))]
    means = {l: span_mean(h, text.caption_mask) for l, h in caption.items()}
    return [{l: m[row] for l, m in means.items()} for row in range(len(text.caption_mask))]


def guide_states(batch: TGABatch, image: dict[int, torch.Tensor], targets: Targets,
                 span: GuideSpan = "image") -> GuideStates:
    """The guide's rows from block outputs of the image run (``image``: layer → ``[B, T, d]``, every row of
    ``batch``) and the caption run's :data:`Targets` of the guided rows in order (:func:`caption_targets`). ``span``
    "image": the image tokens' and R's :func:`span_mean` against the caption tokens'; "tail": the
    :func:`aligned_tails` of both runs, token by token; "last": the last prompt token of both runs alone."""
    rows, text = batch.guided, batch.caption
    image_span, prompt_last = batch.image_mask[rows], batch.prompt_last[rows]
    if span in ("tail", "last"):
        image_tail, text_tail = aligned_tails(image_span, prompt_last, text.caption_mask, text.last_index)
        # distance from the end of the prompt, per selected token (row-major, the same order in both runs)
        position = (image_tail.sum(1, keepdim=True) - image_tail.cumsum(1))[image_tail]
        keep = position == 0 if span == "last" else torch.ones_like(position, dtype=torch.bool)
        aligned = text_tail[whole_tails(text.caption_mask, text.last_index)]  # which whole-tail rows are aligned
        return GuideStates({l: image[l][rows][image_tail][keep] for l in image},
                           {l: torch.cat([t[l] for t in targets])[aligned.to(image[l].device)][keep.to(image[l].device)]
                            for l in image}, {}, None, image_tail.nonzero()[:, 0][keep], position[keep])
    r_mask = batch.retrieved_mask[rows]
    ranked = r_mask.any(dim=1)  # rows with R in the prompt get the ranking term
    return GuideStates({l: span_mean(image[l][rows], image_span) for l in image},
                       {l: torch.stack([t[l] for t in targets]) for l in image},
                       {l: span_mean(image[l][rows][ranked], r_mask[ranked]) for l in image}, ranked,
                       torch.arange(len(image_span), device=image_span.device))


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


def guide_loss(
    image: dict[int, torch.Tensor],
    caption: dict[int, torch.Tensor],
    retrieved: dict[int, torch.Tensor],
    form: GuideForm = "paper",
    weights: tuple[float, float] = (1.0, 1.0),
    ranked: torch.Tensor | None = None,
    centre: bool | Centring = False,
    groups: torch.Tensor | None = None,
    layer_mean: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ over layers (paper form; the mean over layers for ``form="exp"``, as the released code) of
    w_pull·mean(pull) + w_rank·mean(rank); dicts map layer → pooled states.

    ``image``, ``caption``: ``[B, d]``; ``retrieved``: ``[B_r, d]``, the rows where ``ranked [B]`` (bool) is
    True, or all rows when ``ranked`` is None. Rows trained without R in the prompt get the pull term only.
    ``centre``: subtract the batch mean of the caption states from I, C and R first, so the cosines compare
    what is specific to each caption rather than the component all residual streams share (``True`` or "batch");
    "position": subtract instead the mean of the caption states of the same ``groups`` value (``[B]``, e.g. the
    tail position), each group centred on its own. ``layer_mean``: the mean over layers instead of the sum.
    Returns the loss (a tensor with gradient through ``image`` and ``retrieved``; ``caption`` should be
    detached) and logging scalars: mean cos(I, C) and, over ranked rows, cos(R, C).
    """
    if not image:
        raise ValueError("guide_loss: no layers")
    w_pull, w_rank = weights
    rows = slice(None) if ranked is None else ranked
    total = torch.zeros((), device=next(iter(image.values())).device)
    cos_ic, cos_rc = [], []
    centring = {True: "batch", False: "none"}.get(centre, centre) if isinstance(centre, bool) else centre
    if centring not in ("none", "batch", "position"):
        raise ValueError(f"unknown centring {centre!r}: use none, batch or position")
    if centring == "position" and groups is None:
        raise ValueError("centring by position needs the groups (the tail positions)")
    for layer in sorted(image):
        i, c, r = image[layer], caption[layer], retrieved.get(layer)
        if centring == "batch":
            shared = c.float().mean(dim=0, keepdim=True).detach()
            i, c = i.float() - shared, c.float() - shared
            r = None if r is None else r.float() - shared
        elif centring == "position":
            g = groups.to(c.device)
            _, index = torch.unique(g, return_inverse=True)
            sums = torch.zeros(int(index.max()) + 1, c.shape[-1], device=c.device).index_add_(0, index, c.float())
            counts = torch.bincount(index).unsqueeze(1).float()
            shared = (sums / counts)[index].detach()
            i, c = i.float() - shared, c.float() - shared
            r = None  # the tail has no R
        ic = _cos(i, c)
        rc = _cos(r, c[rows]) if r is not None and len(r) else None
        pull, _ = _terms(ic, None, form)
        total = total + w_pull * pull.mean()
        cos_ic.append(ic.mean().item())
        if rc is not None:
            _, rank = _terms(ic[rows], rc, form)
            total = total + w_rank * rank.mean()
            cos_rc.append(rc.mean().item())
    if form == "exp" or layer_mean:
        total = total / len(image)
    stats = {"cos_ic": sum(cos_ic) / len(cos_ic)}
    if cos_rc:
        stats["cos_rc"] = sum(cos_rc) / len(cos_rc)
    return total, stats
