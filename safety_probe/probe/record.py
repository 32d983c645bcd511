"""Record each pair's per-layer hidden states, pooled inside the forward (plain hooks, nnsight or TransformerLens).

    >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf")
    >>> states = record(vlm, load_pairs("pairs.jsonl"))     # every block
    >>> states.image_mean.shape                              # [n_pairs, n_layers, d_model]

Stored size does not grow with sequence length: each block's output is reduced to a mean over a token span and the
last prompt position while the forward runs, and the forward stops after the deepest requested block. Under
``accelerate launch`` the pairs are split between the processes (``processes=``) and the merged states equal a
single-process run's bit for bit. :func:`~safety_probe.probe.measure.measure` records the same states in the pass
that makes every other measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from einops import rearrange

from safety_probe.core.batches import Part, run_batched
from safety_probe.core.errors import InputError
from safety_probe.core.files import read_tensors, write_tensors
from safety_probe.core.resume import resumable, run_key
from safety_probe.data.pairs import Pair, pairs_digest
from safety_probe.data.prompts import DEFAULT_PROMPTS, PromptSettings
from safety_probe.models.hooks import StopForward, Trace
from safety_probe.models.spans import pool, pool_weights, span_counts
from safety_probe.models.vlm import VLM, EncodedBatch

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
    ``blocks.{l}.hook_resid_post``). ``metadata``: what the states file records beside them (``model``,
    ``model_family``, ``run_key`` of the pass that recorded them).
    """

    image_mean: torch.Tensor
    caption_mean: torch.Tensor
    image_last: torch.Tensor
    caption_last: torch.Tensor
    layers: list[int]
    metadata: dict[str, str] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        n, _, d = self.image_mean.shape
        return f"PairStates({n} pairs, blocks {_span(self.layers)}, d_model {d})"

    def tensors(self) -> dict[str, torch.Tensor]:
        """The four tensors by name."""
        return {name: getattr(self, name) for name in STATE_NAMES}

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write the four tensors to a safetensors file atomically; ``layers``, :attr:`metadata` and ``metadata`` go in
        its metadata."""
        return write_tensors(path, self.tensors(), {**self.metadata, **(metadata or {}), "layers": json.dumps(self.layers)})

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
        kept = {k: v for k, v in metadata.items() if k != "layers"}
        return cls(**{name: tensors[name] for name in STATE_NAMES}, layers=layers, metadata=kept), metadata

    @classmethod
    def resume(cls, path: str | Path, key: str) -> PairStates | None:
        """The states at ``path`` if the run ``key`` recorded them, else None (absent; or unreadable or of other
        settings, which is said in one line)."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            states, metadata = cls._read(path)
        except InputError:
            states, metadata = None, {}
        return states if resumable(path, metadata.get("run_key"), key, "states") else None


def _span(layers: list[int]) -> str:
    """``0-7`` for consecutive blocks, else the list."""
    if layers and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


#: Recording backends: plain forward hooks (the default: the fastest), an nnsight trace (the path that also serves
#: remote execution and interventions), TransformerLens' ``TransformerBridge`` hooks ``blocks.{l}.hook_resid_post``.
BACKENDS = ("hooks", "nnsight", "transformerlens")
DEFAULT_BACKEND = "hooks"


def pooled_states(pooled: list[torch.Tensor], count: torch.Tensor) -> dict[str, torch.Tensor]:
    """The span sums and last positions of each requested block (``[B, 2, d]`` each, :func:`~safety_probe.models.spans.pool`)
    and the span lengths ``count`` ``[B]`` -> ``mean`` and ``last``, each ``[B, L, d]`` float32 on the CPU."""
    stats = rearrange(torch.stack(pooled).float(), "layer batch stat d -> stat batch layer d")
    return {"mean": (stats[0] / count[:, None, None].to(stats.device)).cpu(), "last": stats[1].cpu()}


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

    Every backend of :data:`BACKENDS` pools with :func:`~safety_probe.models.spans.pool` as each block finishes
    and stops the forward after the deepest requested block. Under a device map each block pools on its own device;
    the pooled states are gathered to the CPU.
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

    @staticmethod
    def weights(vlm: VLM, batch: EncodedBatch, span: Literal["image", "caption"]) -> torch.Tensor:
        """The pooling weights ``[B, 2, T]`` of ``span`` and the last prompt position of ``batch``."""
        return pool_weights(batch.image_mask if span == "image" else batch.caption_mask, batch.last_index, vlm.dtype)

    @torch.no_grad()
    def __call__(self, batch: EncodedBatch, span: Literal["image", "caption"]) -> dict[str, torch.Tensor]:
        """Pooled outputs of the requested blocks: ``mean`` over the span and ``last`` prompt position, each ``[B, L, d]``."""
        weights = self.weights(self.vlm, batch, span)
        pooled: list[torch.Tensor] = []  # per block [B, 2, d], on the input device

        def keep(hidden: torch.Tensor) -> None:
            pooled.append(pool(hidden, weights).to(weights.device))

        if self.backend == "hooks":
            with Trace(self.vlm.layers, self.layers, retain=False, edit_output=lambda _, h: keep(h), stop=True):
                self.vlm.model(**batch.inputs, use_cache=False)
        elif self.backend == "nnsight":
            with self.traced.trace(**batch.inputs) as tracer:
                for layer in self.layers:
                    hidden = self.blocks[layer].output
                    hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                    pooled.append(pool(hidden, weights).to(weights.device).save())
                tracer.stop()  # nothing past the deepest requested block is needed
        else:
            self._run_bridge(batch, keep)
        return pooled_states(pooled, span_counts(weights[:, 0].bool()))

    def _run_bridge(self, batch: EncodedBatch, keep) -> None:
        """One forward of the bridge with a pooling hook on ``blocks.{l}.hook_resid_post`` of every requested block."""
        deepest = self.layers[-1]

        def hook_for(layer: int):
            def hook(tensor: torch.Tensor, *, hook) -> None:
                keep(tensor)
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


def recording_key(vlm: VLM, pairs: list[Pair], layers: list[int], prompts: PromptSettings, batch_size: int,
                  backend: str) -> str:
    """The key of a recording: every setting that changes the states (model, weights, dtype, device, prompts, layers,
    batching, backend) and the pairs."""
    return run_key(vlm.run_settings(), prompts.settings(), layers, batch_size, backend, pairs_digest(pairs))


def record(
    vlm: VLM,
    pairs: list[Pair],
    *,
    layers: list[int] | None = None,
    prompts: PromptSettings = DEFAULT_PROMPTS,
    batch_size: int = 8,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    backend: str = DEFAULT_BACKEND,
    processes: PartialState | None = None,
) -> PairStates:
    """Record pooled image-run and text-run states of every pair at ``layers`` (default: all blocks).

    With ``checkpoint``, finished batches are saved there and a later call with the same inputs resumes after them;
    the file is removed when the run ends. With ``processes`` (accelerate's state under ``accelerate launch``), each
    process records its share of whole batches and every process returns the merged states, in pair order.
    """
    layers = vlm.check_layers(list(range(vlm.n_layers)) if layers is None else layers)
    if not pairs:
        raise InputError("no pairs to record")
    recorder = Recorder(vlm, layers, backend)

    def work(start: int, stop: int) -> Part:
        chunk = pairs[start:stop]
        image = recorder(vlm.encode(chunk, "image", prompts), span="image")
        text = recorder(vlm.encode(chunk, "text", prompts), span="caption")
        return Part(dict(zip(STATE_NAMES, (image["mean"], text["mean"], image["last"], text["last"]))))

    key = recording_key(vlm, pairs, layers, prompts, batch_size, backend)
    done = run_batched(len(pairs), batch_size, work, key=key, checkpoint=checkpoint, processes=processes,
                       progress=progress, desc="record", what="states checkpoint")
    if checkpoint and processes is None:
        Path(checkpoint).unlink(missing_ok=True)
    return states_of(done, layers, vlm, key)


def states_of(part: Part, layers: list[int], vlm: VLM, key: str) -> PairStates:
    """The :class:`PairStates` in a finished :class:`~safety_probe.core.batches.Part` of the run ``key`` of ``vlm``."""
    empty = torch.zeros(0, len(layers), vlm.d_model)
    return PairStates(**{name: part.tensors.get(name, empty) for name in STATE_NAMES}, layers=layers,
                      metadata={"model": vlm.name, "model_family": vlm.family, "run_key": key})
