"""Block outputs read with forward hooks, with gradients (image run) or without, stopping early (caption run).

Layer l = output of decoder block l (0-based) = TransformerLens ``blocks.{l}.hook_resid_post``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a hook after the deepest wanted block, to skip the rest of a forward pass."""


@contextmanager
def tap_blocks(blocks: Sequence[nn.Module], layers: Sequence[int], stop_after: int | None = None
               ) -> Iterator[dict[int, torch.Tensor]]:
    """Register forward hooks on ``blocks[l]`` for l in ``layers``; yields a dict filled with their outputs.

    Outputs keep their autograd graph. With ``stop_after``, the hook of that block raises
    :class:`StopForward` once its output is stored (wrap the forward in ``try/except StopForward``).
    """
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def make(layer: int):
        def hook(module, args, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if stop_after is not None and layer == stop_after:
                raise StopForward(layer)
        return hook

    try:
        for layer in sorted(set(layers) | ({stop_after} if stop_after is not None else set())):
            handles.append(blocks[layer].register_forward_hook(make(layer)))
        yield captured
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def states_until(model: nn.Module, blocks: Sequence[nn.Module], layers: Sequence[int],
                 inputs: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Outputs of ``blocks[l]`` for ``layers`` from a no-grad forward that stops after the deepest of them."""
    deepest = max(layers)
    with tap_blocks(blocks, layers, stop_after=deepest) as captured:
        try:
            model(**inputs, use_cache=False)
        except StopForward:
            pass
    missing = set(layers) - set(captured)
    if missing:
        raise RuntimeError(f"blocks {sorted(missing)} never ran in the caption forward")
    return {l: captured[l].detach() for l in layers}
