"""Per-token states of one run of some pairs, the TransformerLens way: what ``vlm.run_with_cache`` returns.

    >>> cache = vlm.run_with_cache(pairs[:2], "image", layers=[3, 5])
    >>> cache["blocks.3.hook_resid_post"].shape                # [B, T, d_model]: block 3's output, = cache[3]
    >>> cache.image_mask, cache.caption_mask, cache.tail_mask   # [B, T] bool: the spans probe-layers pools
    >>> cache.tokens                                           # [B, T] input ids (vlm.to_str_tokens: decoded)
    >>> span_mean(cache[5], cache.image_mask)                  # [B, d]: probe-layers' image_mean at block 5
    >>> image_tail, text_tail = cache.aligned_tails(vlm.run_with_cache(pairs[:2], "text"))

Names follow TransformerLens: ``blocks.{l}.hook_resid_post`` is the output of decoder block l (0-based), Hugging Face
``hidden_states[l + 1]`` before the final norm. The *tail* of a run is the prompt after its span — the instruction and
the chat template's suffix after the image (image run) or the caption (text run), up to the last prompt token; the
two runs' tails correspond token by token over their last K positions (:func:`~safety_probe.models.spans.aligned_tails`,
what probe-layers' tail measurements and TGA's tail guide read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from safety_probe.models.hooks import Trace
from safety_probe.models.spans import aligned_tails, tail_lengths, tail_mask

if TYPE_CHECKING:
    from safety_probe.models.vlm import VLM, EncodedBatch, Run


@dataclass
class TokenCache:
    """Every requested block's output at every position of one run of a batch of pairs, with its masks.

    ``states``: hook name ``blocks.{l}.hook_resid_post`` → ``[B, T, d_model]`` (the model's dtype, on the block's
    device); ``tokens`` / ``attention_mask``: ``[B, T]`` input ids and real (not padding) positions; ``image_mask``,
    ``caption_mask``, ``tail_mask``: ``[B, T]`` bool, the image tokens (image run), the caption or text-query tokens
    (text run) and the run's tail; ``last_index``: ``[B]`` the last prompt position; ``texts``: the rendered prompts.
    """

    run: Run
    states: dict[str, torch.Tensor]
    tokens: torch.Tensor
    attention_mask: torch.Tensor
    image_mask: torch.Tensor
    caption_mask: torch.Tensor
    tail_mask: torch.Tensor
    last_index: torch.Tensor
    texts: list[str]

    @property
    def layers(self) -> list[int]:
        """The blocks held, in order."""
        return [int(name.split(".")[1]) for name in self.states]

    @property
    def span(self) -> torch.Tensor:
        """``[B, T]`` the run's own span: the image tokens of the image run, the caption tokens of the text run."""
        return self.image_mask if self.run == "image" else self.caption_mask

    def __getitem__(self, key: str | int) -> torch.Tensor:
        """``[B, T, d_model]`` by hook name (``"blocks.3.hook_resid_post"``) or block index (``3``)."""
        name = f"blocks.{key}.hook_resid_post" if isinstance(key, int) else key
        if name not in self.states:
            raise KeyError(f"{key!r} is not in the cache (held: {', '.join(self.states)})")
        return self.states[name]

    def __repr__(self) -> str:
        b, t = self.tokens.shape
        d = next(iter(self.states.values())).shape[-1] if self.states else 0
        return (f"TokenCache({self.run} run, {b} pairs x {t} positions, blocks {self.layers}: "
                f"blocks.{{l}}.hook_resid_post [{b}, {t}, {d}])")

    def aligned_tails(self, other: TokenCache) -> tuple[torch.Tensor, torch.Tensor]:
        """The corresponding tail positions of this run and ``other`` (the other run of the same pairs): ``[B, T]``
        and ``[B, T_other]`` bool masks with the same count per row; ``hidden[mask]`` lists the same tokens in the
        same order in both."""
        if {self.run, other.run} != {"image", "text"} or len(self.texts) != len(other.texts):
            raise ValueError("aligned_tails needs the image run and the text run of the same pairs")
        image, text = (self, other) if self.run == "image" else (other, self)
        masks = aligned_tails(image.image_mask, image.last_index, text.caption_mask, text.last_index)
        return masks if self.run == "image" else masks[::-1]


@torch.no_grad()
def cache_run(vlm: VLM, batch: EncodedBatch, run: Run, layers: list[int]) -> TokenCache:
    """The :class:`TokenCache` of ``layers`` of an encoded ``batch`` of ``run``: one forward, stopped after the deepest
    requested block (:class:`~safety_probe.models.hooks.Trace`)."""
    with Trace(vlm.layers, layers, stop=True) as trace:
        vlm.model(**batch.inputs, use_cache=False)
    span = batch.image_mask if run == "image" else batch.caption_mask
    tail = tail_mask(batch.last_index, tail_lengths(span, batch.last_index), span.shape[1])
    return TokenCache(run, {vlm.hook_name(l): trace.outputs[l] for l in layers}, batch.inputs["input_ids"],
                      batch.inputs["attention_mask"].bool(), batch.image_mask, batch.caption_mask, tail,
                      batch.last_index, batch.texts)
