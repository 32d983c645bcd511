"""The ways of getting every block's pooled output that the recording measurement times against the bare forward.

Each maker takes what it needs and returns a zero-argument callable for one encoded batch; the callables
that record return ``{"mean": [B, L, d], "last": [B, L, d]}`` float32 like :class:`safety_probe.probe.record.Recorder`.

- ``forward``: ``model(**inputs)`` — the bare forward, the reference of every ratio.
- ``trunk``: ``model.model(**inputs)`` — the forward without the LM head (the recorder stops before it).
- ``record``: ``Recorder(vlm, all_layers)(batch, span)`` — ours, the default backend (plain hooks, pooled as each
  block finishes, early stop); ``record_nnsight`` / ``record_transformerlens``: the same with the other backends.
- ``hidden_states``: ``model(**inputs, output_hidden_states=True)`` then pooling of every block.
- ``tl_resid``: TransformerLens ``TransformerBridge.run_with_cache`` of every ``blocks.{l}.hook_resid_post``
  (full ``[B, T, d]``), then pooling; ``tl_all``: ``run_with_cache`` of every hook point (its default).
- ``hook_cache``: the fallback when the bridge cannot run a model: forward hooks keep every block's full
  ``[B, T, d]`` output, then pooling.

:func:`pool` is written independently of the library's pooling on purpose: it is the reference the recorders are
checked against before they are timed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from safety_probe.models.vlm import VLM, EncodedBatch
from safety_probe.probe.record import Recorder

Pooled = dict[str, torch.Tensor]


def span_mask(batch: EncodedBatch, span: str) -> torch.Tensor:
    return batch.image_mask if span == "image" else batch.caption_mask


def pool(hiddens: list[torch.Tensor], batch: EncodedBatch, span: str) -> Pooled:
    """Mean over the span and the last prompt position of each ``[B, T, d]`` tensor, stacked as ``[B, L, d]``."""
    mask = span_mask(batch, span).unsqueeze(-1)
    count = mask.sum(dim=1).clamp(min=1)
    rows = torch.arange(mask.shape[0], device=mask.device)
    means = [(h * mask).sum(dim=1).div(count).float() for h in hiddens]
    lasts = [h[rows, batch.last_index].float() for h in hiddens]
    return {"mean": torch.stack(means, dim=1).cpu(), "last": torch.stack(lasts, dim=1).cpu()}


def make_forward(vlm: VLM, batch: EncodedBatch) -> Callable[[], Any]:
    def run():
        with torch.no_grad():
            return vlm.model(**batch.inputs).logits

    return run


def make_trunk(vlm: VLM, batch: EncodedBatch) -> Callable[[], Any]:
    base = vlm.model.model if isinstance(getattr(vlm.model, "model", None), nn.Module) else vlm.model

    def run():
        with torch.no_grad():
            return base(**batch.inputs).last_hidden_state

    return run


def make_record(recorder: Recorder, batch: EncodedBatch, span: str) -> Callable[[], Pooled]:
    return lambda: recorder(batch, span)


def make_hidden_states(vlm: VLM, batch: EncodedBatch, span: str) -> Callable[[], Pooled]:
    def run():
        with torch.no_grad():
            hs = vlm.model(**batch.inputs, output_hidden_states=True).hidden_states
            # hs[l + 1] is block l's output except the last entry (after the final norm): the same
            # work either way; an exact recorder would hook the last block (tests/test_probe.py).
            return pool(list(hs[1 : vlm.n_layers + 1]), batch, span)

    return run


def make_tl(bridge, vlm: VLM, batch: EncodedBatch, span: str, every_hook: bool) -> Callable[[], Pooled]:
    names = [vlm.hook_name(layer) for layer in range(vlm.n_layers)]
    inputs = dict(batch.inputs)
    input_ids = inputs.pop("input_ids")

    def run():
        with torch.no_grad():
            _, cache = bridge.run_with_cache(input_ids, names_filter=None if every_hook else names, **inputs)
            return pool([cache[n] for n in names], batch, span)

    return run


def make_hook_cache(vlm: VLM, batch: EncodedBatch, span: str) -> Callable[[], Pooled]:
    """Forward hooks keep every block's full output (the TransformerLens-style cache without the bridge)."""

    def run():
        store: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            store.append((output[0] if isinstance(output, tuple) else output).detach())

        handles = [layer.register_forward_hook(hook) for layer in vlm.layers]
        try:
            with torch.no_grad():
                vlm.model(**batch.inputs)
        finally:
            for h in handles:
                h.remove()
        return pool(store, batch, span)

    return run


def check_bridge(bridge, vlm: VLM, batch: EncodedBatch, span: str, reference: Pooled) -> None:
    """Raise if the bridge's cached block outputs do not pool to the recorder's (a bridge that misruns)."""
    got = make_tl(bridge, vlm, batch, span, every_hook=False)()
    for key in ("mean", "last"):
        err = ((got[key] - reference[key]).norm() / reference[key].norm().clamp(min=1e-12)).item()
        if not err < 1e-2:
            raise RuntimeError(
                f"bridge block outputs differ from the model's ({key}: relative error {err:.2e})"
            )
