"""Record each pair's per-layer hidden states with nnsight, pooled inside the traced forward.

    >>> vlm = load_vlm("organism")
    >>> states = record(vlm, load_pairs("pairs.jsonl"), layers=parse_layers("all", vlm.n_layers))
    >>> states.image_mean.shape                  # [n_pairs, n_layers, d_model]

Stored size does not grow with sequence length: each block's output is reduced to a mean over a token
span and the last prompt position while the forward runs, and the forward stops after the deepest
requested block.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from nnsight import NNsight
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from safety_probe.data.pairs import Pair
from safety_probe.errors import InputError
from safety_probe.io import write_atomic
from safety_probe.models.vlm import VLM, EncodedBatch

STATE_NAMES = ("image_mean", "caption_mean", "image_last", "caption_last")


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Parse ``all``, ``8-16`` (inclusive), ``3,5,7`` or a mix like ``0-3,9`` into sorted block indices."""
    if spec.strip() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                layers.update(range(lo, hi + 1))
            else:
                layers.add(int(part))
        except ValueError:
            raise InputError(f"bad layer spec {spec!r}: use 'all', '8-16' or '3,5,7'") from None
    for layer in sorted(layers):
        if not 0 <= layer < n_layers:
            raise InputError(f"layer {layer} is out of range: the model has {n_layers} blocks (0-{n_layers - 1})")
    return sorted(layers)


@dataclass
class PairStates:
    """Pooled hidden states of n pairs at the recorded layers; every tensor is ``[n_pairs, n_layers, d_model]`` float32.

    ``image_mean``: mean over image-token positions (image run); ``caption_mean``: mean over caption tokens
    (text run); ``image_last`` / ``caption_last``: the last prompt position of each run. Index 1 follows
    ``layers`` (0-based block indices, TransformerLens ``blocks.{l}.hook_resid_post``).
    """

    image_mean: torch.Tensor
    caption_mean: torch.Tensor
    image_last: torch.Tensor
    caption_last: torch.Tensor
    layers: list[int]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in STATE_NAMES}

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write the four tensors to a safetensors file atomically; ``layers`` goes in its metadata."""
        meta = {"layers": json.dumps(self.layers), **(metadata or {})}
        tensors = {k: v.contiguous() for k, v in self.tensors().items()}
        return write_atomic(path, lambda p: save_file(tensors, str(p), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> PairStates:
        """Read states written by :meth:`save`."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"states file not found: {path}")
        with safe_open(str(path), "pt") as f:
            layers = json.loads(f.metadata()["layers"])
        return cls(**load_file(str(path)), layers=layers)


class Recorder:
    """Runs a batch through the model under an nnsight trace and returns pooled block outputs.

        >>> rec = Recorder(vlm, layers=[0, 4, 8])
        >>> pooled = rec(vlm.encode(pairs, run="image"), span="image")   # {"mean": [B, 3, d], "last": [B, 3, d]}
    """

    def __init__(self, vlm: VLM, layers: list[int]):
        self.vlm = vlm
        self.layers = vlm.check_layers(layers)
        self.traced = NNsight(vlm.model)
        parent = self.traced
        for part in vlm.layer_module_names[0].split(".")[:-1]:
            parent = getattr(parent, part)
        self.blocks = parent  # envoy of the decoder's ModuleList

    @torch.no_grad()
    def __call__(self, batch: EncodedBatch, span: Literal["image", "caption"]) -> dict[str, torch.Tensor]:
        """Pooled outputs of the requested blocks: ``mean`` over the span and ``last`` prompt position, each ``[B, L, d]``."""
        mask = (batch.image_mask if span == "image" else batch.caption_mask).unsqueeze(-1)
        count = mask.sum(dim=1).clamp(min=1)
        rows = torch.arange(mask.shape[0], device=mask.device)
        means, lasts = [], []
        with self.traced.trace(**batch.inputs) as tracer:
            for layer in self.layers:
                hidden = self.blocks[layer].output
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                # Reduce in the hook so only [B, d] per layer leaves the forward pass.
                means.append((hidden * mask).sum(dim=1).div(count).float().save())
                lasts.append(hidden[rows, batch.last_index].float().save())
            tracer.stop()  # nothing past the deepest requested block is needed
        return {"mean": torch.stack(means, dim=1).cpu(), "last": torch.stack(lasts, dim=1).cpu()}


def _run_key(vlm: VLM, pairs: list[Pair], layers: list[int], system_prompt: str | None, padding_side: str) -> str:
    desc = json.dumps([vlm.name, layers, system_prompt, padding_side, [(str(p.image), p.caption, p.instruction) for p in pairs]])
    return hashlib.sha256(desc.encode()).hexdigest()[:16]


def record(
    vlm: VLM,
    pairs: list[Pair],
    layers: list[int] | None = None,
    batch_size: int = 8,
    system_prompt: str | None = None,
    padding_side: Literal["left", "right"] = "left",
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> PairStates:
    """Record pooled image-run and text-run states of every pair at ``layers`` (default: all blocks).

    With ``checkpoint``, finished batches are saved there as they complete and a later call with the same
    inputs resumes after them; the file is removed when the run ends.
    """
    layers = vlm.check_layers(list(range(vlm.n_layers)) if layers is None else layers)
    if not pairs:
        raise InputError("no pairs to record")
    recorder = Recorder(vlm, layers)
    key = _run_key(vlm, pairs, layers, system_prompt, padding_side)
    done: dict[str, list[torch.Tensor]] = {name: [] for name in STATE_NAMES}
    start = 0
    if checkpoint and Path(checkpoint).is_file():
        from safetensors import safe_open

        with safe_open(str(checkpoint), "pt") as f:
            if f.metadata().get("run_key") == key:
                for name in STATE_NAMES:
                    done[name].append(f.get_tensor(name))
                start = done["image_mean"][0].shape[0]
    bar = tqdm(total=len(pairs), initial=start, desc="record", unit="pair", disable=not progress)
    for i in range(start, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        image = recorder(vlm.encode(chunk, "image", system_prompt, padding_side), span="image")
        text = recorder(vlm.encode(chunk, "text", system_prompt, padding_side), span="caption")
        for name, value in zip(STATE_NAMES, (image["mean"], text["mean"], image["last"], text["last"])):
            done[name].append(value)
        if checkpoint:
            partial = {name: torch.cat(done[name]) for name in STATE_NAMES}
            write_atomic(checkpoint, lambda p, partial=partial: save_file(partial, str(p), metadata={"run_key": key}))
        bar.update(len(chunk))
    bar.close()
    states = PairStates(**{name: torch.cat(done[name]) for name in STATE_NAMES}, layers=layers)
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    return states
