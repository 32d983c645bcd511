"""The model pass of probe-layers: every forward its analysis needs, each run of each pair encoded once.

    >>> states, measurements = measure(vlm, pairs)          # records the states in the same pass
    >>> measurements.save("runs/llava")                     # measurements.safetensors + measurements.json
    >>> result = analyze(states, measurements)              # pure: safety_probe.analysis

Per batch of pairs: the image run and the text run are encoded once; the image run's forward records its states and
its prompt-tail states; the text run's forward (eager attention) records its states, its tail states and the last
token's attention on the caption; the text run is answered greedily from the same encoding; the first
``patch_pairs`` harmful pairs are patched (caption mean into the image tokens, text tail into the image tail) at
every block. After the batches: the refusal-token pool (the first two tokens of every answer and the fallback word
list), the logit-lens trace of every text run, and P(pool token) of every patched and unpatched run — all that the
pure analysis reads, so the safety layers can be chosen again without the model.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from safety_probe.core.batches import Part, Ticks, run_batched
from safety_probe.core.errors import InputError
from safety_probe.core.files import read_json, read_tensors, write_json, write_tensors
from safety_probe.core.resume import run_key
from safety_probe.data.pairs import Pair, pairs_digest
from safety_probe.data.prompts import DEFAULT_PROMPTS, PromptSettings
from safety_probe.models.generate import generate_encoded
from safety_probe.models.hooks import Trace
from safety_probe.models.spans import aligned_tails, pool, span_counts
from safety_probe.models.vlm import VLM, EncodedBatch
from safety_probe.probe.config import MeasureOptions
from safety_probe.probe.lens import LensTrace, attention_on, eager_attention, lens_logprobs, lens_trace
from safety_probe.probe.patching import patch_caption, patch_tail
from safety_probe.probe.record import (
    DEFAULT_BACKEND,
    STATE_NAMES,
    PairStates,
    Recorder,
    pooled_states,
    states_of,
)
from safety_probe.probe.refusal import (
    RefusalTokens,
    TextRunResponses,
    ambiguous_tokens,
    fallback_refusal_tokens,
    judged,
    token_names,
    token_texts,
)

if TYPE_CHECKING:
    from accelerate import PartialState

PATCHINGS = ("caption", "tail")
PHASES = ("image_run", "text_run", "patch_caption", "patch_tail", "readouts")
"""The timed phases of the pass: the image run's forward (states, tails, what patching starts from), the text run
answered (its prompt's forward read on the way), each patching, and the lens readouts after the batches."""


@dataclass
class Measurements:
    """What the model pass measured besides the states, for n pairs (every pair's text run; patching on some).

    ``responses``: each pair's greedy text-run answer, judged. ``fallback``: K from the word list and the model's
    refusal phrase. ``pool``: id → token, every token whose lens probability is kept (K is drawn from it);
    ``pool_texts``: id → decoded. ``lens``: the :class:`~safety_probe.probe.lens.LensTrace` of every text run.
    ``attention`` ``[n, L]``: the last prompt token's attention on the caption tokens (text run), mean over heads.
    ``tail_cos`` ``[n, L]``: mean cosine of the image run's and the text run's states over their aligned prompt tails.
    ``patched`` ``[m]``: the pair indices patched; ``patch`` name → log p of the pool tokens at the last prompt
    position: ``image`` / ``text`` ``[m, P]`` unpatched, ``caption`` / ``tail`` ``[m, L, P]`` patched at each block.
    ``labels``: each pair's label (harmful, benign or None); ``settings``: the measure options and the prompts, and
    ``seconds``: the wall time of each phase of this process's pass (:data:`PHASES`);
    ``run_key``: the key of the pass (:func:`measurement_key`).
    ``cont_ids`` ``[A]``: the ambiguous first tokens (they open refusals and answers); ``cont_logprob``
    ``[n, A, L, P]``: log p of the pool tokens at position T+1 of each text run followed by each of them.
    """

    responses: TextRunResponses
    fallback: RefusalTokens
    pool: dict[int, str]
    pool_texts: dict[int, str]
    lens: LensTrace
    attention: torch.Tensor
    tail_cos: torch.Tensor
    patched: list[int]
    patch: dict[str, torch.Tensor]
    labels: list[str | None]
    settings: dict
    cont_ids: list[int]
    cont_logprob: torch.Tensor
    run_key: str | None = None

    def __repr__(self) -> str:
        refused = sum(self.responses.refused)
        return (f"Measurements({len(self.responses.texts)} text runs, {refused} refused; {len(self.pool)} pool tokens; "
                f"{len(self.patched)} patched pairs)")

    def save(self, out_dir: str | Path, key: str | None = None) -> Path:
        """Write ``measurements.safetensors`` and ``measurements.json`` into ``out_dir`` atomically, under the run key
        ``key`` (default: :attr:`run_key`)."""
        out_dir, key = Path(out_dir), key or self.run_key
        tensors = {**self.lens.tensors("lens."), "attention": self.attention, "tail_cos": self.tail_cos,
                   "patched": torch.as_tensor(self.patched, dtype=torch.long),
                   "cont.ids": torch.as_tensor(self.cont_ids, dtype=torch.long), "cont.logprob": self.cont_logprob,
                   **{f"patch.{k}": v for k, v in self.patch.items()}}
        write_tensors(out_dir / "measurements.safetensors", tensors, {"run_key": key or ""})
        return write_json(out_dir / "measurements.json", {
            "run_key": key, "settings": self.settings, "fallback_refusal_tokens": self.fallback.summary(),
            "pool": {str(i): {"token": t, "text": self.pool_texts[i]} for i, t in self.pool.items()},
            "labels": self.labels, "responses": self.responses.rows()})

    @staticmethod
    def stored_key(out_dir: str | Path) -> str | None:
        """The run key ``measurements.json`` in ``out_dir`` was written with (None: unreadable or none)."""
        try:
            meta = read_json(Path(out_dir) / "measurements.json", "measurements record")
        except InputError:
            return None
        return meta.get("run_key") if isinstance(meta, dict) else None

    @classmethod
    def load(cls, out_dir: str | Path) -> Measurements:
        """The measurements :meth:`save` wrote into ``out_dir``; InputError naming a missing or malformed file."""
        out_dir = Path(out_dir)
        meta = read_json(out_dir / "measurements.json", "measurements record")
        tensors, _ = read_tensors(out_dir / "measurements.safetensors", "measurements file")
        try:
            pool = {int(i): v for i, v in meta["pool"].items()}
            return cls(TextRunResponses.from_rows(meta["responses"]),
                       RefusalTokens.from_summary(meta["fallback_refusal_tokens"]),
                       {i: v["token"] for i, v in pool.items()}, {i: v["text"] for i, v in pool.items()},
                       LensTrace.from_tensors(tensors, "lens."), tensors["attention"], tensors["tail_cos"],
                       tensors["patched"].tolist(),
                       {k.removeprefix("patch."): v for k, v in tensors.items() if k.startswith("patch.")},
                       list(meta["labels"]), meta["settings"], tensors["cont.ids"].tolist(), tensors["cont.logprob"],
                       meta.get("run_key"))
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{out_dir}: malformed measurements ({type(e).__name__}: {e}); rerun probe-layers") from None


def measurement_key(vlm: VLM, pairs: list[Pair], prompts: PromptSettings, cfg: MeasureOptions, batch_size: int,
                    backend: str) -> str:
    """The key of a model pass: the model, the prompts, every measure option, the batching and the pairs."""
    return run_key(vlm.run_settings(), prompts.settings(), asdict(cfg), batch_size, backend, pairs_digest(pairs))


def harmful_index(pairs: list[Pair]) -> list[int]:
    """Indices of the harmful pairs; every pair when none is labelled."""
    if not any(p.label for p in pairs):
        return list(range(len(pairs)))
    return [i for i, p in enumerate(pairs) if p.label == "harmful"]


class _Pass:
    """One batch of the model pass (see the module docstring): everything but the lens readouts."""

    def __init__(self, vlm: VLM, pairs: list[Pair], prompts: PromptSettings, cfg: MeasureOptions, backend: str,
                 progress: bool = False):
        self.vlm, self.pairs, self.prompts, self.cfg, self.progress = vlm, pairs, prompts, cfg, progress
        self.layers = list(range(vlm.n_layers))
        self.recorder = Recorder(vlm, self.layers, backend) if backend != DEFAULT_BACKEND else None
        self.patched = set(harmful_index(pairs)[:cfg.patch_pairs])
        self.answering: dict[int, EncodedBatch] = {}  # batch start -> its left-padded text run, for continuations
        self.ticks = Ticks(self.cost, unit="block")
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def cost(self, start: int, stop: int) -> int:
        """Block runs of the pairs ``[start, stop)``, the progress unit: about L each for the image run, the text run
        and its answer, and for a patched pair L(L − 1) more (each of the two patchings runs the blocks above the
        patched one, at every block), so the first batches, where the patched pairs are, do not skew the ETA."""
        n = len(self.layers)
        return sum(3 * n + (n * (n - 1) if i in self.patched else 0) for i in range(start, stop))

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of the block to ``seconds[phase]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def reader(self, batch: EncodedBatch, span: str, tail: torch.Tensor, keep: list[int]) -> tuple[Callable, dict]:
        """The per-block reader of a forward of ``batch`` (its first call of each block only, the prompt's: in
        generation the later calls are the generated tokens) and what it fills: ``pooled`` (span sum and last position,
        unless another backend records), ``tails`` (``[ΣK, d]`` states at the ``tail`` positions) and ``below`` (the
        whole block output of the rows ``keep``, for patching)."""
        weights, width = Recorder.weights(self.vlm, batch, span), batch.inputs["input_ids"].shape[1]
        got: dict = {"pooled": [], "tails": {}, "below": {}}

        def read(layer: int, hidden: torch.Tensor) -> None:
            if hidden.shape[1] != width or layer in got["tails"]:
                return
            if self.recorder is None:
                got["pooled"].append(pool(hidden, weights).to(weights.device))
            got["tails"][layer] = hidden[tail.to(hidden.device)].float().cpu()
            if keep:
                got["below"][layer] = hidden[torch.as_tensor(keep, device=hidden.device)]

        return read, got

    def states(self, batch: EncodedBatch, span: str, got: dict) -> dict[str, torch.Tensor]:
        """The pooled states of ``batch`` (``mean``, ``last``, each ``[B, L, d]``): from the reader, or the backend."""
        if self.recorder is not None:
            return self.recorder(batch, span)
        weights = Recorder.weights(self.vlm, batch, span)
        return pooled_states(got["pooled"], span_counts(weights[:, 0].bool()))

    @torch.no_grad()
    def image_run(self, batch: EncodedBatch, tail: torch.Tensor, keep: list[int]) -> tuple[dict, dict]:
        """One forward of the image run, stopped after the last block: its states and what the reader kept."""
        read, got = self.reader(batch, "image", tail, keep)
        with Trace(self.vlm.layers, self.layers, retain=False, edit_output=read, stop=True):
            self.vlm.model(**batch.inputs, use_cache=False)
        return self.states(batch, "image", got), got

    @torch.no_grad()
    def text_run(self, batch: EncodedBatch, tail: torch.Tensor, start: int) -> tuple[dict, dict, torch.Tensor, list]:
        """The text run answered greedily (eager attention), its prompt's forward read on the way: its states, what
        the reader kept, the attention mass on the caption ``[B, L]`` and the answers. With right padding the answer
        needs a left-padded encoding of its own; that encoding is kept for the continuations (:func:`continuations`)."""
        vlm, tokens = self.vlm, self.cfg.answer_tokens
        read, got = self.reader(batch, "caption", tail, [])
        reading, mass = attention_on(vlm, batch.caption_mask, batch.last_index)
        left = self.prompts.padding_side == "left"
        with eager_attention(vlm), Trace(vlm.layers, self.layers, retain=False, edit_output=read), reading:
            if left:
                replies = generate_encoded(vlm, batch, tokens)
            else:
                vlm.model(**batch.inputs, use_cache=False)
        answering = batch if left else vlm.encode(self.pairs[start:start + len(batch)], "text", self.prompts, "left")
        if not left:
            replies = generate_encoded(vlm, answering, tokens)
        self.answering[start] = answering
        return self.states(batch, "caption", got), got, torch.stack([mass[l] for l in self.layers], dim=1), replies

    def __call__(self, start: int, stop: int) -> Part:
        vlm, cfg, index = self.vlm, self.cfg, list(range(start, stop))
        chunk = self.pairs[start:stop]
        image = vlm.encode(chunk, "image", self.prompts)
        text = vlm.encode(chunk, "text", self.prompts)
        image_tail, text_tail = aligned_tails(image.image_mask, image.last_index, text.caption_mask, text.last_index)
        rows = [i for i, pair in enumerate(index) if pair in self.patched]
        with self.timed("image_run"):
            image_states, image_got = self.image_run(image, image_tail, rows)
        self.ticks.advance(len(index) * len(self.layers))
        with self.timed("text_run"):
            text_states, text_got, attention, replies = self.text_run(text, text_tail, start)
        self.ticks.advance(2 * len(index) * len(self.layers))
        counts = image_tail.sum(dim=1).cpu()
        cosines = [torch.nn.functional.cosine_similarity(image_got["tails"][l], text_got["tails"][l], dim=-1)
                   for l in self.layers]
        tensors = {
            **dict(zip(STATE_NAMES, (image_states["mean"], text_states["mean"], image_states["last"],
                                     text_states["last"]))),
            "attention": attention,
            "tail_cos": torch.stack([_row_means(c, counts) for c in cosines], dim=1),
        }
        if rows:
            sub, below = image.select(rows), image_got["below"]
            owner = torch.repeat_interleave(torch.arange(len(index)), counts)
            keep = torch.isin(owner, torch.as_tensor(rows))
            tensors["patched"] = torch.as_tensor([index[r] for r in rows], dtype=torch.long)
            with self.timed("patch_caption"):
                tensors["patched_caption"] = patch_caption(vlm, sub, below, text_states["mean"][rows], self.layers,
                                                           cfg.patch_mode, self.ticks.advance)
            with self.timed("patch_tail"):
                tensors["patched_tail"] = patch_tail(vlm, sub, below, image_tail[rows],
                                                     {l: text_got["tails"][l][keep] for l in self.layers},
                                                     self.layers, self.ticks.advance)
        return Part(tensors, [{"pair": i, "text": t, "token_ids": ids} for i, (t, ids) in zip(index, replies)])


def _row_means(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[B]`` means of consecutive runs of ``values`` ``[ΣK]`` of lengths ``counts`` ``[B]``."""
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
    sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, owner, values.double())
    return (sums / counts.clamp(min=1)).float()


def pool_ids(responses: TextRunResponses, fallback: RefusalTokens, size: int, ranked: Sequence[int],
             ambiguous: Sequence[int] = ()) -> list[int]:
    """The ``size`` tokens whose lens probability is kept (more only when the refusals need more): the first two tokens
    of every refusal, the fallback K and the second tokens of every run that opens with an ambiguous token (every K
    and every continuation test is drawn from these), then the first two tokens of the answers by frequency, then
    ``ranked`` (the last block's most probable tokens) — a fixed size, so a run's bytes are known in advance."""
    needed = {int(t) for ids, refused in zip(responses.token_ids, responses.refused) if refused for t in ids[:2]}
    needed |= set(fallback.ids) | {int(ids[1]) for ids in responses.token_ids if len(ids) > 1 and ids[0] in ambiguous}
    answers = Counter(int(t) for ids, refused in zip(responses.token_ids, responses.refused) if not refused
                      for t in ids[:2])
    pool = list(dict.fromkeys([*sorted(needed), *(t for t, _ in answers.most_common()), *map(int, ranked)]))
    return sorted(pool[:max(size, len(needed))])


def measure(
    vlm: VLM,
    pairs: list[Pair],
    cfg: MeasureOptions | None = None,
    *,
    prompts: PromptSettings = DEFAULT_PROMPTS,
    batch_size: int = 8,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    backend: str = DEFAULT_BACKEND,
    processes: PartialState | None = None,
) -> tuple[PairStates, Measurements | None]:
    """Record every block's states of every pair and measure what the analysis reads (the module docstring), each run
    of each pair encoded once (the text run a second time for answering only when ``prompts`` pad on the right).

    Progress counts block runs (:meth:`_Pass.cost`), ticking after each run and each patched block, so its ETA holds
    from the first batch. With ``checkpoint`` every finished batch is saved there and a rerun with the same settings
    resumes after them; with ``processes`` each process runs its share of the batches, every process returns the
    states and the main process the measurements (the others None). With a ``backend`` other than hooks, the states
    come from a forward of that backend and the measurements from a second (hooks) forward.
    """
    cfg = cfg or MeasureOptions()
    cfg.validate()
    if not pairs:
        raise InputError("no pairs to measure")
    step = _Pass(vlm, pairs, prompts, cfg, backend, progress and (processes is None or processes.is_main_process))
    key = measurement_key(vlm, pairs, prompts, cfg, batch_size, backend)
    done = run_batched(len(pairs), batch_size, step, key=key, checkpoint=checkpoint, processes=processes,
                       progress=progress, desc="measure", what="measurement checkpoint", ticks=step.ticks)
    if checkpoint and processes is None:
        Path(checkpoint).unlink(missing_ok=True)
    states = states_of(done, step.layers, vlm, key)
    if processes is not None and not processes.is_main_process:
        return states, None
    with step.timed("readouts"):
        measurements = readouts(vlm, done, states, cfg, step, batch_size)
    measurements.settings["seconds"] = {k: round(v, 3) for k, v in step.seconds.items()}
    measurements.run_key = key
    return states, measurements


@torch.no_grad()
def continuations(vlm: VLM, step: _Pass, batch_size: int, tokens: list[int]) -> torch.Tensor:
    """``[n, A, L, d]``: for every text run and each of ``tokens``, every block's state at position T+1 of the prompt
    followed by that token (one more position per run and token; the run's kept encoding, re-encoded only for batches
    a resumed pass did not encode); a progress bar counts the forwards, per pair and token."""
    out = []
    bar = tqdm(total=len(step.pairs) * len(tokens), desc="continuations", unit="forward", disable=not step.progress)
    for start in range(0, len(step.pairs), batch_size):
        batch = step.answering.get(start) or step.vlm.encode(step.pairs[start:start + batch_size], "text",
                                                              step.prompts, "left")
        per_token = []
        for token in tokens:
            with Trace(vlm.layers, step.layers, stop=True) as trace:
                vlm.model(**batch.appended(token).inputs, use_cache=False)
            per_token.append(torch.stack([trace.outputs[l][:, -1].float().cpu() for l in step.layers], dim=1))
            bar.update(len(batch))
        out.append(torch.stack(per_token, dim=1) if per_token else torch.zeros(len(batch), 0, vlm.n_layers, vlm.d_model))
    bar.close()
    return torch.cat(out)


def readouts(vlm: VLM, done: Part, states: PairStates, cfg: MeasureOptions, step: _Pass,
             batch_size: int) -> Measurements:
    """The :class:`Measurements` of a finished pass: answers judged, the continuations of ambiguous first tokens, the
    pool, and every lens readout."""
    labels = [p.label for p in step.pairs]
    replies = sorted(done.rows, key=lambda r: r["pair"])
    phrases = (cfg.refusal_phrase,) if cfg.refusal_phrase else ()
    responses = judged([r["pair"] for r in replies], [(r["text"], r["token_ids"]) for r in replies], phrases)
    fallback = fallback_refusal_tokens(vlm.tokenizer, phrases)
    harmful = set(harmful_index(step.pairs))
    ambiguous = ambiguous_tokens(responses, [i in harmful for i in responses.index], cfg.ambiguity)
    last = vlm.n_layers - 1
    ranked = lens_logprobs(vlm, states.caption_last[:, last]).exp().mean(0).argsort(descending=True)[:cfg.pool_size]
    ids = pool_ids(responses, fallback, cfg.pool_size, ranked.tolist(), ambiguous)
    lens = lens_trace(vlm, states.caption_last, ids, cfg.lens_top)
    patched = done.tensors.get("patched", torch.zeros(0, dtype=torch.long)).tolist()
    columns = torch.as_tensor(ids, dtype=torch.long)

    def pool_logprob(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.numel() == 0:
            return torch.zeros(*hidden.shape[:-1], len(ids))
        return lens_logprobs(vlm, hidden)[..., columns]

    patch = {"image": pool_logprob(states.image_last[patched, last]),
             "text": pool_logprob(states.caption_last[patched, last])}
    for name in PATCHINGS:
        patch[name] = pool_logprob(done.tensors.get(f"patched_{name}", torch.zeros(0, vlm.n_layers, vlm.d_model)))
    cont = pool_logprob(continuations(vlm, step, batch_size, ambiguous)) if ambiguous else \
        torch.zeros(len(step.pairs), 0, vlm.n_layers, len(ids))
    return Measurements(responses, fallback, token_names(vlm.tokenizer, ids), token_texts(vlm.tokenizer, ids), lens,
                        done.tensors["attention"], done.tensors["tail_cos"], patched, patch, labels,
                        {**asdict(cfg), "prompts": step.prompts.settings(), "pool_size": len(ids)}, ambiguous, cont)
