"""A prototype of :class:`safety_probe.probe.Recorder` on plain torch forward hooks (no nnsight).

Same contract: ``HookRecorder(vlm, layers)(batch, span)`` returns ``{"mean": [B, L, d], "last": [B, L, d]}``
float32, pooled inside the forward as each block finishes, and the forward stops after the deepest
requested block (an exception raised from that block's hook and caught here). It exists to measure what
the nnsight trace costs; see docs/benchmarks.md for when it is faster.
"""

from __future__ import annotations

from typing import Literal

import torch

from safety_probe.models.vlm import VLM, EncodedBatch


class _Stop(Exception):
    """Raised by the deepest requested block's hook to end the forward early."""


class HookRecorder:
    def __init__(self, vlm: VLM, layers: list[int]):
        self.vlm = vlm
        self.layers = vlm.check_layers(layers)

    @torch.no_grad()
    def __call__(self, batch: EncodedBatch, span: Literal["image", "caption"]) -> dict[str, torch.Tensor]:
        mask = (batch.image_mask if span == "image" else batch.caption_mask).unsqueeze(-1)
        count = mask.sum(dim=1).clamp(min=1)
        rows = torch.arange(mask.shape[0], device=mask.device)
        last_index = batch.last_index
        means: list[torch.Tensor] = []
        lasts: list[torch.Tensor] = []
        deepest = self.layers[-1]

        def make_hook(layer: int):
            def hook(_module, _inputs, output):
                hidden = output[0] if isinstance(output, tuple) else output
                means.append((hidden * mask).sum(dim=1).div(count).float())
                lasts.append(hidden[rows, last_index].float())
                if layer == deepest:
                    raise _Stop

            return hook

        handles = [self.vlm.layers[layer].register_forward_hook(make_hook(layer)) for layer in self.layers]
        try:
            self.vlm.model(**batch.inputs)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return {"mean": torch.stack(means, dim=1).cpu(), "last": torch.stack(lasts, dim=1).cpu()}
