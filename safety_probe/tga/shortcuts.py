"""The exact shortcuts of a TGA step (:attr:`RunConfig.shortcuts <safety_probe.tga.config.RunConfig.shortcuts>`, on
by default): the same loss and gradients to float rounding, fewer operations. ``tests/test_tga.py`` trains with and
without them to the same weights; ``docs/speed.md`` measures them.

- **The prompt prefix all rows share, computed once** (:class:`SharedPrefix`). The tokens every row of a run starts
  with (the chat template's system turn, up to the first image, retrieved-text, caption or answer token) have the
  same keys and values in every row. While the blocks are frozen (stage 1; the frozen caption copy) those never
  change and need no gradient: they are computed once per distinct prefix and given to each forward as its key/value
  cache, so forward and backward run over the rest of each row only. On organism-smol the system turn is 24 of about
  60 image-run tokens and of about 40 caption-run tokens. Families whose positions or attention depend on the whole
  sequence (Qwen2-VL's multimodal RoPE, Gemma 3's bidirectional image attention) run whole (:data:`PREFIX_FAMILIES`).
- **Caption targets kept for rows that come again** (:class:`CaptionTargets`). When no trainable parameter lies on the
  caption run's path up to the deepest guided block (stage 1; the frozen caption copy), a row's targets C never
  change. The data order is known in advance, so a row's targets are kept from the step that computes them to its
  next use and dropped after its last, within a memory budget: one epoch keeps nothing, later epochs skip the caption
  run. In memory only: each row's targets are computed once per run anyway, so a copy on disk would pay only for the
  rows a resumed run had seen before (one caption forward each), at up to ~0.3 MB a row on organism-smol's tail. A
  resumed run recomputes those in the batch they come in, not the one they were first computed in: where targets
  were kept across the resume point it ends equal to the uninterrupted run to float rounding, not bit for bit
  (``--shortcuts false`` keeps it bit for bit).
- Guide-only rows end at their prompt and form a batch of their own whose forward stops after the deepest guided
  block (:meth:`TGACollator.parts <safety_probe.tga.batch.TGACollator.parts>`); logits are computed at answer
  positions only (:func:`~safety_probe.tga.train.tga_loss`, with or without the shortcuts).

All of them hold for every model and data; which rows are kept does not depend on the model's outputs, so a run with
shortcuts is as deterministic as one without.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

from safety_probe.models.hooks import Trace
from safety_probe.models.vlm import VLM, EncodedBatch
from safety_probe.tga.loss import GuideSpan, Targets, caption_targets

if TYPE_CHECKING:
    from safety_probe.tga.batch import TGABatch

PREFIX_FAMILIES = frozenset({"llava", "llava_next", "idefics3"})
"""Families whose forward over the rest of a row, given its prefix's keys and values, equals the whole forward (tested
on the tiny model of every family): their positions follow the cache and their attention is causal."""


def frozen_through(vlm: VLM, top: int) -> bool:
    """Whether no trainable parameter lies on the language model's path up to block ``top``: its input embedding and
    blocks 0..top, all that a text run reads up to there."""
    modules = [vlm.embed, *list(vlm.layers)[:top + 1]]
    return not any(p.requires_grad for m in modules for p in m.parameters())


def _first_column(mask: torch.Tensor) -> int:
    """The first column where some row of ``mask`` ``[B, T]`` is True (T where none is)."""
    hits = mask.any(dim=0).nonzero()
    return int(hits[0]) if len(hits) else mask.shape[1]


def _cache_argument(model: torch.nn.Module) -> str:
    """The forward's keyword for a key/value cache: ``cache`` from transformers 5.25, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class SharedPrefix:
    """Keys and values of the prompt prefixes the rows of a run share, for a frozen ``vlm`` (module docstring), each
    computed on its first use and kept for the run."""

    def __init__(self, vlm: VLM):
        self.vlm = vlm
        self.argument = _cache_argument(vlm.model)
        self._kv: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @staticmethod
    def applies(vlm: VLM, top: int) -> bool:
        """Whether ``vlm``'s family is one of :data:`PREFIX_FAMILIES` and its blocks up to ``top`` are frozen."""
        return vlm.family in PREFIX_FAMILIES and frozen_through(vlm, top)

    @staticmethod
    def length(ids: torch.Tensor, *ends: torch.Tensor) -> int:
        """The columns of ``ids`` ``[B, T]`` that every row shares, before the first True of any mask of ``ends``
        ``[B, T]`` (the positions a loss reads or an image enters) and before the last column."""
        shared = int((ids == ids[:1]).all(dim=0).long().cumprod(dim=0).sum())
        return min([shared, ids.shape[1] - 1, *(_first_column(m) for m in ends)])

    def split(self, inputs: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """The keyword arguments of a forward of ``inputs`` that skips their first ``n`` positions: per-token tensors
        (2-D, the shape of ``input_ids``) without them, the attention mask whole, and the cache of those positions."""
        ids = inputs["input_ids"]
        key = tuple(ids[0, :n].tolist())
        if key not in self._kv:
            cache = DynamicCache()
            with torch.no_grad():
                self.vlm.model(input_ids=ids[:1, :n], attention_mask=inputs["attention_mask"][:1, :n], use_cache=True,
                               logits_to_keep=1, **{self.argument: cache})
            self._kv[key] = [(layer.keys, layer.values) for layer in cache.layers]
        rows = len(ids)
        cache = DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self._kv[key]])
        rest = {k: v[:, n:] if k != "attention_mask" and v.dim() == 2 and v.shape == ids.shape else v
                for k, v in inputs.items()}
        return {**rest, self.argument: cache}


class CaptionTargets:
    """The caption run of a batch's guided rows, stopped after the deepest of ``layers``, as :data:`Targets`.

    ``prefix``: the :class:`SharedPrefix` of ``vlm`` (None: every caption run whole). ``coming``: example id → how
    often it is still to come in this run; given it, a row's targets are kept from one use to the next within
    ``budget_mb`` (None: never kept, as when they may change between steps). ``computed`` counts the rows whose
    caption run ran.
    """

    def __init__(self, vlm: VLM, layers: list[int], span: GuideSpan = "image", prefix: SharedPrefix | None = None,
                 coming: Counter[str] | None = None, budget_mb: float = 0.0):
        self.vlm, self.layers, self.span, self.prefix, self.coming = vlm, layers, span, prefix, coming
        self.budget = budget_mb * 2**20
        self.kept: dict[str, dict[int, torch.Tensor]] = {}
        self.kept_bytes = 0
        self.computed = 0

    def __call__(self, batch: TGABatch) -> Targets:
        """The targets of ``batch``'s guided rows, in order."""
        ids = [ex.id for ex, guided in zip(batch.examples, batch.guided.tolist()) if guided]
        missing = [i for i, ex_id in enumerate(ids) if ex_id not in self.kept]
        fresh: dict[int, dict[int, torch.Tensor]] = {}
        if missing:
            text = batch.caption if len(missing) == len(ids) else batch.caption.select(missing)
            fresh = dict(zip(missing, self._run(text)))
        out = []
        for i, ex_id in enumerate(ids):
            target = fresh[i] if i in fresh else self._take(ex_id)
            if self.coming is not None:
                self.coming[ex_id] -= 1
                if self.coming[ex_id] > 0 and ex_id not in self.kept:
                    self._keep(ex_id, target)
            out.append(target)
        return out

    def _take(self, ex_id: str) -> dict[int, torch.Tensor]:
        target = self.kept.pop(ex_id)
        self.kept_bytes -= _nbytes(target)
        return target

    def _keep(self, ex_id: str, target: dict[int, torch.Tensor]) -> None:
        size = _nbytes(target)
        if self.kept_bytes + size <= self.budget:
            self.kept[ex_id] = target
            self.kept_bytes += size

    @torch.no_grad()
    def _run(self, text: EncodedBatch) -> Targets:
        inputs, n = dict(text.inputs), 0
        if self.prefix is not None:
            n = self.prefix.length(inputs["input_ids"], text.caption_mask)
            inputs = self.prefix.split(inputs, n)
        with Trace(self.vlm.layers, self.layers, stop=True) as trace:
            self.vlm.model(**inputs, use_cache=False)
        self.computed += len(text)
        narrowed = replace(text, image_mask=text.image_mask[:, n:], caption_mask=text.caption_mask[:, n:],
                           last_index=text.last_index - n)
        return caption_targets(trace.outputs, narrowed, self.span)


def _nbytes(target: dict[int, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in target.values())


@dataclass
class Shortcuts:
    """The shortcuts one training run takes: the image run's :class:`SharedPrefix` (None where its blocks train or
    its family is not in :data:`PREFIX_FAMILIES`) and the caption run (:class:`CaptionTargets`, with its own prefix
    and its targets kept where they cannot change)."""

    prefix: SharedPrefix | None
    targets: CaptionTargets

    @classmethod
    def of(cls, vlm: VLM, caption_vlm: VLM | None, layers: list[int], span: GuideSpan, coming: Counter[str],
           budget_mb: float) -> Shortcuts:
        """The shortcuts of training ``vlm`` (its trainable parameters set) with the caption run of ``caption_vlm``
        (None: ``vlm`` itself) on ``layers``; ``coming``: how often each example id is still to come in this run."""
        target = caption_vlm or vlm
        prefix = SharedPrefix(vlm) if SharedPrefix.applies(vlm, vlm.n_layers - 1) else None
        top = max(layers, default=0)
        if target is not vlm or prefix is None:
            caption_prefix = SharedPrefix(target) if SharedPrefix.applies(target, top) else None
        else:
            caption_prefix = prefix
        fixed = bool(layers) and frozen_through(target, top)
        return cls(prefix, CaptionTargets(target, layers, span, caption_prefix, coming if fixed else None, budget_mb))


LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each accelerate mixed precision that has one."""


@contextmanager
def frozen_linears_in(model: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Training under autocast to ``dtype`` (``--mixed-precision bf16`` / ``fp16``; None: nothing to do): the frozen
    linear layers hold their weights in ``dtype`` inside the block and get their float32 tensors back on exit.
    Autocast would cast those weights at every call to the same values; on a CPU those casts cost about what the
    matrix products save, so cast once, mixed precision runs faster with the same results. Weights an embedding
    shares (a tied LM head) are left to autocast: the embedding reads them in their own dtype."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    swapped = [] if dtype is None else [
        (m, m.weight) for m in model.modules()
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad and id(m.weight) not in embedded
        and m.weight.dtype != dtype]
    try:
        for module, weight in swapped:
            module.weight = torch.nn.Parameter(weight.detach().to(dtype), requires_grad=False)
        yield
    finally:
        for module, weight in swapped:
            module.weight = weight


def without_prefix(batch: TGABatch, n: int) -> TGABatch:
    """``batch``'s masks and prompt ends without their first ``n`` positions (as the block outputs of a forward
    :meth:`SharedPrefix.split` by ``n``); the caption run is left as it is."""
    return replace(batch, image_mask=batch.image_mask[:, n:], retrieved_mask=batch.retrieved_mask[:, n:],
                   prompt_last=batch.prompt_last - n)
