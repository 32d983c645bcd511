"""Record each pair's per-layer hidden states, pooled inside the forward (plain hooks, nnsight or TransformerLens).

    >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf")
    >>> states = record(vlm, load_pairs("pairs.jsonl"), layers=parse_layers("all", vlm.n_layers))
    >>> states.image_mean.shape                  # [n_pairs, n_layers, d_model]

Stored size does not grow with sequence length: each block's output is reduced to a mean over a token
span and the last prompt position while the forward runs, and the forward stops after the deepest
requested block. Under ``accelerate launch`` the pairs are split between the processes (``processes=``) and
the merged states equal a single-process run's bit for bit.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from einops import rearrange
from tqdm.auto import tqdm

from safety_probe.data.pairs import Pair
from safety_probe.errors import InputError
from safety_probe.hooks import StopForward, Trace
from safety_probe.io import fingerprint, read_tensors, write_tensors
from safety_probe.models.vlm import VLM, EncodedBatch
from safety_probe.shards import batch_share, gather_shards, shard_path

if TYPE_CHECKING:
    from accelerate import PartialState
    from transformer_lens.model_bridge import TransformerBridge

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


#: Recording backends: plain forward hooks (the default: the fastest), an nnsight trace (the path that also serves
#: remote execution and interventions), TransformerLens' ``TransformerBridge`` hooks ``blocks.{l}.hook_resid_post``.
BACKENDS = ("hooks", "nnsight", "transformerlens")
DEFAULT_BACKEND = "hooks"


def pool_weights(mask: torch.Tensor, last_index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 2, T]`` 0/1 weights in ``dtype``: row 0 the span ``mask`` ``[B, T]``, row 1 one-hot at ``last_index`` ``[B]``."""
    last = torch.nn.functional.one_hot(last_index, mask.shape[1]).bool()
    return torch.stack([mask, last], dim=1).to(dtype)


def pool_block_output(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A block's output ``[B, T, d]`` reduced to ``[B, 2, d]`` (sum over the span, last prompt position) in its dtype,
    by one batched matmul on the block's own device; ``weights``: :func:`pool_weights`. With :func:`pooled_states`,
    the one pooling code of every recording backend (it also runs on nnsight's values)."""
    # 0/1 weights: the span sum is the model dtype's own sum, the last position an exact copy
    return torch.bmm(weights.to(hidden.device, hidden.dtype), hidden)


def pooled_states(pooled: list[torch.Tensor], count: torch.Tensor) -> dict[str, torch.Tensor]:
    """The :func:`pool_block_output` of each requested block (``[B, 2, d]``, on one device) and the span lengths
    ``count`` ``[B]`` -> ``mean`` and ``last``, each ``[B, L, d]`` float32 on the CPU."""
    stats = rearrange(torch.stack(pooled).float(), "layer batch stat d -> stat batch layer d")
    return {"mean": (stats[0] / count[:, None, None]).cpu(), "last": stats[1].cpu()}


def boot_bridge(vlm: VLM) -> TransformerBridge:
    """TransformerLens' ``TransformerBridge`` around a weight-sharing copy of ``vlm``'s model (the bridge patches the
    modules it wraps; ``vlm.model`` stays untouched). A family the bridge cannot run is a one-line InputError."""
    from transformer_lens.model_bridge import TransformerBridge

    twin = vlm.shared_copy()
    device = None if getattr(vlm.model, "hf_device_map", None) else str(vlm.device)  # a device map stays as placed
    try:
        return TransformerBridge.boot_transformers(str(vlm.model.name_or_path), device=device, dtype=vlm.dtype,
                                                   hf_model=twin.model, tokenizer=vlm.tokenizer)
    except Exception as e:  # noqa: BLE001 - any refusal of the bridge is the same answer: this family is not run
        raise InputError(f"--backend transformerlens: TransformerLens' bridge cannot run {vlm.family} "
                         f"({type(e).__name__}: {str(e).split('. ')[0].splitlines()[0][:120]}); use --backend hooks") from None


class Recorder:
    """Runs a batch through the model and returns pooled block outputs, reduced inside the forward pass.

        >>> rec = Recorder(vlm, layers=[0, 4, 8])
        >>> pooled = rec(vlm.encode(pairs, run="image"), span="image")   # {"mean": [B, 3, d], "last": [B, 3, d]}

    Every backend of :data:`BACKENDS` pools with :func:`pool_block_output` as each block finishes (and
    :func:`pooled_states` at the end) and stops the forward after the deepest requested block. Under a device map
    each block pools on its own device; the pooled states are gathered to the CPU.
    """

    def __init__(self, vlm: VLM, layers: list[int], backend: str = DEFAULT_BACKEND):
        if backend not in BACKENDS:
            raise InputError(f"unknown recording backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.vlm = vlm
        self.layers = vlm.check_layers(layers)
        self.backend = backend
        if backend == "nnsight":
            from nnsight import NNsight

            self.traced = NNsight(vlm.model)
            parent = self.traced
            for part in vlm.layer_module_names[0].split(".")[:-1]:
                parent = getattr(parent, part)
            self.blocks = parent  # envoy of the decoder's ModuleList
        elif backend == "transformerlens":
            self.bridge = boot_bridge(vlm)

    @torch.no_grad()
    def __call__(self, batch: EncodedBatch, span: Literal["image", "caption"]) -> dict[str, torch.Tensor]:
        """Pooled outputs of the requested blocks: ``mean`` over the span and ``last`` prompt position, each ``[B, L, d]``."""
        mask = batch.image_mask if span == "image" else batch.caption_mask
        weights = pool_weights(mask, batch.last_index, self.vlm.dtype)
        pooled: list[torch.Tensor] = []  # per block [B, 2, d], on the input device

        def pool(hidden: torch.Tensor) -> None:
            pooled.append(pool_block_output(hidden, weights).to(weights.device))

        if self.backend == "hooks":
            with Trace(self.vlm.layers, self.layers, retain=False, edit_output=lambda _, h: pool(h), stop=True):
                self.vlm.model(**batch.inputs, use_cache=False)
        elif self.backend == "nnsight":
            with self.traced.trace(**batch.inputs) as tracer:
                for layer in self.layers:
                    hidden = self.blocks[layer].output
                    hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                    pooled.append(pool_block_output(hidden, weights).to(weights.device).save())
                tracer.stop()  # nothing past the deepest requested block is needed
        else:
            self._run_bridge(batch, pool)
        return pooled_states(pooled, mask.sum(dim=1).clamp(min=1))

    def _run_bridge(self, batch: EncodedBatch, pool) -> None:
        """One forward of the bridge with a pooling hook on ``blocks.{l}.hook_resid_post`` of every requested block."""
        deepest = self.layers[-1]

        def hook_for(layer: int):
            def hook(tensor: torch.Tensor, *, hook) -> None:
                pool(tensor)
                if layer == deepest:
                    raise StopForward(layer)
            return hook

        inputs = dict(batch.inputs)
        input_ids = inputs.pop("input_ids")
        with self.bridge.hooks(fwd_hooks=[(self.vlm.hook_name(l), hook_for(l)) for l in self.layers]):
            try:
                self.bridge(input_ids, return_type=None, use_cache=False, **inputs)
            except StopForward:
                pass


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
    backend: str = DEFAULT_BACKEND,
    processes: PartialState | None = None,
) -> PairStates:
    """Record pooled image-run and text-run states of every pair at ``layers`` (default: all blocks).

    With ``checkpoint``, finished batches are saved there as they complete and a later call with the same
    inputs resumes after them; the file is removed when the run ends. With ``processes`` (accelerate's state
    under ``accelerate launch``), each process records its share of whole batches into its own shard beside
    ``checkpoint`` (required then) and every process returns the merged states, in pair order.
    """
    layers = vlm.check_layers(list(range(vlm.n_layers)) if layers is None else layers)
    if not pairs:
        raise InputError("no pairs to record")
    if processes is not None and checkpoint is None:
        raise InputError("record() across several processes needs checkpoint= (its shards are written beside it)")
    recorder = Recorder(vlm, layers, backend)
    start, stop = batch_share(len(pairs), batch_size, processes)
    path = checkpoint if processes is None else shard_path(checkpoint, processes.process_index, processes.num_processes)
    share = _record_share(vlm, recorder, pairs[start:stop], batch_size, system_prompt, padding_side, path,
                          progress and (processes is None or processes.is_main_process))
    if processes is None:
        if checkpoint:
            Path(checkpoint).unlink(missing_ok=True)
        return share
    parts = gather_shards(processes, checkpoint, lambda shard: read_tensors(shard, "states shard")[0])
    return PairStates(**{name: torch.cat([part[name] for part in parts]) for name in STATE_NAMES}, layers=layers)


def _record_share(vlm: VLM, recorder: Recorder, pairs: list[Pair], batch_size: int, system_prompt: str | None,
                  padding_side: Literal["left", "right"], checkpoint: str | Path | None, progress: bool) -> PairStates:
    """:func:`record`'s loop over ``pairs`` (possibly none), checkpointed after every batch and resumed from it."""
    layers = recorder.layers
    key = run_key(vlm, pairs, layers, system_prompt, padding_side, batch_size, recorder.backend)
    done: dict[str, list[torch.Tensor]] = {name: [torch.zeros(0, len(layers), vlm.d_model)] for name in STATE_NAMES}
    if checkpoint:
        for name, parts in _resume_checkpoint(Path(checkpoint), key).items():
            done[name] += parts
    start = sum(t.shape[0] for t in done["image_mean"])

    def save() -> None:
        write_tensors(checkpoint, {name: torch.cat(done[name]) for name in STATE_NAMES}, {"run_key": key})

    bar = tqdm(total=len(pairs), initial=start, desc="record", unit="pair", disable=not progress)
    for i in range(start, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        image = recorder(vlm.encode(chunk, "image", system_prompt, padding_side), span="image")
        text = recorder(vlm.encode(chunk, "text", system_prompt, padding_side), span="caption")
        for name, value in zip(STATE_NAMES, (image["mean"], text["mean"], image["last"], text["last"])):
            done[name].append(value)
        if checkpoint:
            save()
        bar.update(len(chunk))
    bar.close()
    if checkpoint and start >= len(pairs):
        save()  # nothing ran (an empty share, or all resumed): the file still holds every finished pair
    return PairStates(**{name: torch.cat(done[name]) for name in STATE_NAMES}, layers=layers)
