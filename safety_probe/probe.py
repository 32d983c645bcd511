"""Record each pair's per-layer hidden states with nnsight, pooled inside the traced forward.

    >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf")
    >>> states = record(vlm, load_pairs("pairs.jsonl"), layers=parse_layers("all", vlm.n_layers))
    >>> states.image_mean.shape                  # [n_pairs, n_layers, d_model]

Stored size does not grow with sequence length: each block's output is reduced to a mean over a token
span and the last prompt position while the forward runs, and the forward stops after the deepest
requested block.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from nnsight import NNsight
from tqdm.auto import tqdm

from safety_probe.data.pairs import Pair
from safety_probe.errors import InputError
from safety_probe.hooks import Trace
from safety_probe.io import fingerprint, read_tensors, write_tensors
from safety_probe.models.vlm import VLM, EncodedBatch

STATE_NAMES = ("image_mean", "caption_mean", "image_last", "caption_last")


@dataclass
class PairStates:
    """Pooled hidden states of n pairs at the recorded layers; every tensor is ``[n_pairs, n_layers, d_model]`` float32.

    ``image_mean``: mean over image-token positions (image run); ``caption_mean``: mean over caption tokens
    (text run; under the ``query`` text run, over the text query's tokens); ``image_last`` / ``caption_last``:
    the last prompt position of each run. Index 1 follows ``layers`` (0-based block indices, TransformerLens
    ``blocks.{l}.hook_resid_post``).
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
        return write_tensors(path, self.tensors(), {"layers": json.dumps(self.layers), **(metadata or {})})

    @classmethod
    def load(cls, path: str | Path) -> PairStates:
        """Read states written by :meth:`save`; a file that is not one is an InputError naming it."""
        return cls._read(path)[0]

    @classmethod
    def _read(cls, path: str | Path) -> tuple[PairStates, dict[str, str]]:
        tensors, metadata = read_tensors(path, "states file")
        missing = [name for name in STATE_NAMES if name not in tensors]
        try:
            layers = json.loads(metadata.get("layers", ""))
        except ValueError:
            layers = None
        if missing or not isinstance(layers, list):
            raise InputError(f"{path}: not a states file (needs tensors {', '.join(STATE_NAMES)} and 'layers' metadata)")
        shapes = {tuple(tensors[name].shape) for name in STATE_NAMES}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[1] != len(layers):
            raise InputError(f"{path}: states tensors must share one shape [n_pairs, {len(layers)} layers, d_model]")
        return cls(**{name: tensors[name] for name in STATE_NAMES}, layers=layers), metadata

    @classmethod
    def resume(cls, path: str | Path, key: str) -> PairStates | None:
        """The states at ``path`` if they were recorded by the run ``key`` names (:func:`run_key`), else None (the
        file absent, unreadable, or of other settings: then said in one line)."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            states, metadata = cls._read(path)
        except InputError as e:
            print(f"note: {e}: recording afresh", file=sys.stderr)
            return None
        if metadata.get("run_key") != key:
            print(f"note: {path} was recorded with other settings: recording afresh", file=sys.stderr)
            return None
        return states


BACKENDS = ("nnsight", "hooks")


def pool_block_output(hidden: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, rows: torch.Tensor,
                      last_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's output ``[B, T, d]`` reduced to (mean over the span ``mask`` ``[B, T, 1]``, last prompt position),
    each ``[B, d]`` float32; the one pooling code of every recording backend (it also runs on nnsight proxies)."""
    mean = (hidden * mask).sum(dim=1).div(count).float()
    return mean, hidden[rows, last_index].float()


class Recorder:
    """Runs a batch through the model and returns pooled block outputs, reduced inside the forward pass.

        >>> rec = Recorder(vlm, layers=[0, 4, 8])
        >>> pooled = rec(vlm.encode(pairs, run="image"), span="image")   # {"mean": [B, 3, d], "last": [B, 3, d]}

    ``backend="nnsight"`` traces the model with nnsight (the path that also serves remote execution and
    interventions); ``"hooks"`` uses plain forward hooks (:class:`~safety_probe.hooks.Trace`). Both pool with
    :func:`pool_block_output` and stop after the deepest requested block.
    """

    def __init__(self, vlm: VLM, layers: list[int], backend: str = "nnsight"):
        if backend not in BACKENDS:
            raise InputError(f"unknown recording backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.vlm = vlm
        self.layers = vlm.check_layers(layers)
        self.backend = backend
        if backend == "nnsight":
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
        if self.backend == "hooks":
            def pool(layer: int, hidden: torch.Tensor) -> None:
                mean, last = pool_block_output(hidden, mask, count, rows, batch.last_index)
                means.append(mean)
                lasts.append(last)

            with Trace(self.vlm.layers, self.layers, retain=False, edit_output=pool, stop=True):
                self.vlm.model(**batch.inputs, use_cache=False)
        else:
            with self.traced.trace(**batch.inputs) as tracer:
                for layer in self.layers:
                    hidden = self.blocks[layer].output
                    hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                    mean, last = pool_block_output(hidden, mask, count, rows, batch.last_index)
                    means.append(mean.save())
                    lasts.append(last.save())
                tracer.stop()  # nothing past the deepest requested block is needed
        return {"mean": torch.stack(means, dim=1).cpu(), "last": torch.stack(lasts, dim=1).cpu()}


def run_key(vlm: VLM, pairs: list[Pair], layers: list[int], system_prompt: str | None, padding_side: str,
            batch_size: int, backend: str) -> str:
    """The key of a recording: every setting that changes the states (model, weights, dtype, device, templates,
    layers, prompts, batching, backend) and the pairs; states and checkpoints resume only into the same key."""
    return fingerprint([vlm.run_settings(), layers, system_prompt, padding_side, batch_size, backend,
                        [(str(p.image), p.caption, p.instruction, p.text_query) for p in pairs]])


def _resume_checkpoint(checkpoint: Path, key: str) -> dict[str, list[torch.Tensor]]:
    """The finished batches of a checkpoint of run ``key``; none when absent, unreadable or of another run (said)."""
    if not checkpoint.is_file():
        return {name: [] for name in STATE_NAMES}
    try:
        tensors, metadata = read_tensors(checkpoint, "states checkpoint")
    except InputError as e:
        print(f"note: {e}: recording afresh", file=sys.stderr)
        return {name: [] for name in STATE_NAMES}
    if metadata.get("run_key") != key or any(name not in tensors for name in STATE_NAMES):
        print(f"note: {checkpoint} comes from a run with other settings: recording afresh", file=sys.stderr)
        return {name: [] for name in STATE_NAMES}
    return {name: [tensors[name]] for name in STATE_NAMES}


def record(
    vlm: VLM,
    pairs: list[Pair],
    layers: list[int] | None = None,
    batch_size: int = 8,
    system_prompt: str | None = None,
    padding_side: Literal["left", "right"] = "left",
    checkpoint: str | Path | None = None,
    progress: bool = True,
    backend: str = "nnsight",
) -> PairStates:
    """Record pooled image-run and text-run states of every pair at ``layers`` (default: all blocks).

    With ``checkpoint``, finished batches are saved there as they complete and a later call with the same
    inputs resumes after them; the file is removed when the run ends.
    """
    layers = vlm.check_layers(list(range(vlm.n_layers)) if layers is None else layers)
    if not pairs:
        raise InputError("no pairs to record")
    recorder = Recorder(vlm, layers, backend)
    key = run_key(vlm, pairs, layers, system_prompt, padding_side, batch_size, backend)
    done = _resume_checkpoint(Path(checkpoint), key) if checkpoint else {name: [] for name in STATE_NAMES}
    start = done["image_mean"][0].shape[0] if done["image_mean"] else 0
    bar = tqdm(total=len(pairs), initial=start, desc="record", unit="pair", disable=not progress)
    for i in range(start, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        image = recorder(vlm.encode(chunk, "image", system_prompt, padding_side), span="image")
        text = recorder(vlm.encode(chunk, "text", system_prompt, padding_side), span="caption")
        for name, value in zip(STATE_NAMES, (image["mean"], text["mean"], image["last"], text["last"])):
            done[name].append(value)
        if checkpoint:
            write_tensors(checkpoint, {name: torch.cat(done[name]) for name in STATE_NAMES}, {"run_key": key})
        bar.update(len(chunk))
    bar.close()
    states = PairStates(**{name: torch.cat(done[name]) for name in STATE_NAMES}, layers=layers)
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    return states
