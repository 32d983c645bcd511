"""The TGA trainer on accelerate: one script for CPU, one GPU, or ``accelerate launch`` on several GPUs.

    L = L_LM + λ · Σ_{j∈J} [ −cos(I_j, C_j) + softplus(−(cos(I_j, C_j) − cos(R_j, C_j))) ]

Hidden states come from forward hooks on the decoder blocks (:class:`~safety_probe.models.hooks.Trace`, gradients
kept) during the image run; C from a no-grad text-only forward of the same model that stops after the deepest
block in J; the guide's rows are :func:`~safety_probe.tga.loss.guide_states`. Every step takes the exact shortcuts of
:mod:`safety_probe.tga.shortcuts` unless ``RunConfig.shortcuts`` is off. The trainer receives a loaded model
and trains it where it lies (``train(vlm, cfg, examples, out_dir)``). Checkpoints (:mod:`safety_probe.tga.state`:
trainable parameters, optimizer and RNG states in safetensors, step counter in ``trainer_state.json``, nothing
pickled) are written every ``save_every`` steps with the run's key (:func:`~safety_probe.core.resume.run_key`); a
rerun with the same settings resumes from the newest one and ends bitwise equal to an uninterrupted run on CPU, one
with other settings starts afresh and says so (:func:`~safety_probe.core.resume.resumable`).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from safety_probe.core.errors import InputError
from safety_probe.core.files import write_json
from safety_probe.core.resume import resumable, run_key
from safety_probe.models.hooks import Trace
from safety_probe.models.layers import resolve_layers
from safety_probe.models.processor import save_processor
from safety_probe.models.vlm import VLM
from safety_probe.tga.batch import TGABatch, TGACollator
from safety_probe.tga.config import TGAConfig
from safety_probe.tga.data import TGAExample, row_counts
from safety_probe.tga.loss import GuideForm, GuideSpan, GuideStates, anneal_weights, guide_loss, guide_states
from safety_probe.tga.params import setup_trainable, trainable_names, weights_hash
from safety_probe.tga.schedule import warmup_cosine
from safety_probe.tga.shortcuts import (
    LOW_PRECISION,
    CaptionTargets,
    SharedPrefix,
    Shortcuts,
    frozen_linears_in,
    without_prefix,
)
from safety_probe.tga.state import checkpoints, load_checkpoint, read_state, remove_checkpoint, save_checkpoint

# ---------------------------------------------------------------------------------------------------------
# The loss of one batch
# ---------------------------------------------------------------------------------------------------------


FILL_NEW_TENSORS = False
"""Whether deterministic mode (on for CPU training) fills every new tensor with NaN, torch's default: a guard against
reading memory no operation wrote. Nothing in a step reads such memory (the weights are bit-identical either way,
tests/test_tga.py), so the fills are pure overhead: one write over every tensor a step allocates."""


def tga_loss(model: nn.Module, vlm: VLM, batch: TGABatch | Sequence[TGABatch], layers: list[int],
             guide_weight: float, form: GuideForm = "paper", weights: tuple[float, float] = (1.0, 1.0),
             caption_vlm: VLM | None = None, lm_weight: float = 1.0, centre: bool | str = False,
             span: GuideSpan = "image", layer_mean: bool = False,
             shortcuts: Shortcuts | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """lm_weight·L_LM + λ·L_guide for one batch (or the parts of one, :meth:`TGACollator.parts
    <safety_probe.tga.batch.TGACollator.parts>`) and its logging scalars. L_LM averages over every answer token of
    the batch (logits at the positions before them only); the guide term pools the rows of ``batch.guided`` only.
    ``model`` runs the image run (may be DDP-wrapped); ``caption_vlm`` (default ``vlm``: the model being trained)
    runs the no-grad caption run, stopped after the deepest block of ``layers``; a part without answers stops there
    too. ``span`` (see :attr:`TGAMethod.guide_span <safety_probe.tga.config.TGAMethod.guide_span>`): "image" pools
    image and caption tokens; "tail" pairs the prompt tokens after them one by one, "last" the last prompt token
    alone. ``centre``: False/True or none/batch/position (:func:`~safety_probe.tga.loss.guide_loss`); ``layer_mean``:
    the guide's mean over layers instead of its sum. ``shortcuts``: the run's exact shortcuts
    (:mod:`safety_probe.tga.shortcuts`, which then runs the caption run); None computes every forward whole."""
    parts = [batch] if isinstance(batch, TGABatch) else list(batch)
    guide_on = guide_weight != 0 and len(layers) > 0
    use_guide = guide_on and any(bool(part.guided.any()) for part in parts)
    if use_guide and any(part.caption is None for part in parts if part.guided.any()):
        raise InputError("the guide loss needs the caption run")
    targets = shortcuts.targets if shortcuts else CaptionTargets(caption_vlm or vlm, layers, span)
    prefix = shortcuts.prefix if shortcuts else None
    answer_ce, answers, guided = torch.zeros((), device=vlm.device), 0, []
    for part in parts:
        guide_here = use_guide and bool(part.guided.any())
        tokens = int((part.inputs["labels"][:, 1:] != -100).sum())
        if not (guide_here or tokens):
            continue
        caption = targets(part) if guide_here else None
        outputs, ce, seen = _image_run(model, vlm, part, layers if guide_here else [], prefix)
        answer_ce, answers = answer_ce + ce, answers + tokens
        if guide_here:
            guided.append((guide_states(seen, outputs, caption, span), int(part.guided.sum())))
    lm = answer_ce / answers if answers else answer_ce
    stats = {"lm": lm.item()}
    loss = lm_weight * lm
    if use_guide:
        g = GuideStates.cat([g for g, _ in guided], [n for _, n in guided])
        guide, gstats = guide_loss(g.image, g.caption, g.retrieved, form, weights, g.ranked, centre, g.position,
                                   layer_mean)
        loss = loss + guide_weight * guide
        stats["guide"] = guide.item()
        stats.update(gstats)
    elif guide_on:
        stats["guide"] = 0.0  # no row of this batch has an image with a caption
    stats["loss"] = loss.item()
    return loss, stats


def _image_run(model: nn.Module, vlm: VLM, part: TGABatch, layers: list[int], prefix: SharedPrefix | None
               ) -> tuple[dict[int, torch.Tensor], torch.Tensor, TGABatch]:
    """One forward of ``part``'s image run: the block outputs at ``layers`` (the forward stops after the deepest when
    no row has answers), the summed cross-entropy of its answer tokens, and ``part`` as wide as those outputs (without
    the shared prefix ``prefix`` skipped, if any)."""
    inputs = dict(part.inputs)
    labels = inputs.pop("labels")
    following = F.pad(labels[:, 1:], (0, 1), value=-100)  # the token each position predicts, as transformers shifts
    scored = following != -100
    if prefix is not None:
        n = prefix.length(inputs["input_ids"], part.image_mask, part.retrieved_mask, scored)
        inputs, part = prefix.split(inputs, n), without_prefix(part, n)
        following, scored = following[:, n:], scored[:, n:]
    answered = bool(scored.any())
    with Trace(vlm.layers, layers, stop=not answered) as trace:
        out = model(**inputs, use_cache=False, logits_to_keep=scored)
    if not answered:
        return trace.outputs, torch.zeros((), device=vlm.device), part
    return trace.outputs, F.cross_entropy(out.logits.float(), following[scored], reduction="sum"), part


# ---------------------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------------------


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


class _FixedOrder(torch.utils.data.Sampler):
    """A precomputed index sequence (all epochs concatenated): resuming = skipping its first batches."""

    def __init__(self, order: list[int]):
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def _whole(collator: TGACollator):
    """A collate function giving the batch as one part (no shortcuts)."""
    return lambda examples: [collator(examples)]


def data_order(n: int, seed: int, n_examples_needed: int) -> list[int]:
    """Seeded per-epoch permutations of range(n), concatenated up to ``n_examples_needed`` indices."""
    order: list[int] = []
    epoch = 0
    while len(order) < n_examples_needed:
        order += np.random.default_rng([seed, 1000 + epoch]).permutation(n).tolist()
        epoch += 1
    return order[:n_examples_needed]


def guide_only_rows(examples: list[TGAExample], labels: list[str]) -> frozenset[str]:
    """Ids of the examples whose data ``label`` is one of ``labels`` (trained without answer loss).

    A listed label that no example carries raises: a misspelt label would otherwise change nothing silently.
    """
    found = {ex.extra.get("label") for ex in examples}
    missing = sorted(set(labels) - found)
    if missing:
        raise InputError(f"guide_only_labels {missing}: no training example has that 'label' "
                         f"(labels present: {sorted(str(x) for x in found)})")
    return frozenset(ex.id for ex in examples if ex.extra.get("label") in set(labels))


def plain_rows(examples: list[TGAExample], share: float, seed: int) -> frozenset[str]:
    """Ids of a seeded ``share`` of ``examples`` trained on the plain image run, without R in the prompt."""
    if not 0 <= share <= 1:
        raise InputError(f"plain_share must lie in [0, 1], got {share}")
    draw = np.random.default_rng([seed, 7]).random(len(examples))
    return frozenset(ex.id for ex, u in zip(examples, draw) if u < share)


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """Where a training run left its model (None when stopped early by ``stop_after``) and its log."""

    model_dir: Path | None
    steps: int
    total_steps: int
    log: list[dict]
    weights_hash: str | None = None
    guide_only_rows: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    """:func:`~safety_probe.tga.data.row_counts` of the training examples."""


def data_digest(examples: list[TGAExample]) -> str:
    """Hash of everything of the training examples that training reads (ids, images, texts, extra fields)."""
    return run_key([(ex.id, str(ex.image), ex.instruction, ex.response, ex.caption, ex.retrieved, ex.followups,
                     ex.extra) for ex in examples])


def _lr_at(step: int, total: int, peak: float, warmup_ratio: float) -> float:
    warm = max(1, round(total * warmup_ratio)) if warmup_ratio > 0 else 0
    return peak * warmup_cosine(step, total, warm)


def train(vlm: VLM, cfg: TGAConfig, examples: list[TGAExample], out_dir: str | Path,
          guide_only_ids: frozenset[str] | None = None) -> TrainResult:
    """Train the loaded ``vlm`` on ``examples`` in place, where it lies (its device; under ``accelerate launch``
    each process's model on that process's device).

    Checkpoints go to ``out_dir/checkpoints``, the final model to ``out_dir/model``, the record to
    ``out_dir/train.json``. ``guide_only_ids`` overrides the rows chosen by ``cfg.method.guide_only_labels``.

        >>> result = train(load_vlm("runs/llava-base"), TGAConfig.of(layers="9-17", stage=1), examples, "runs/tga")
    """
    cfg.validate()
    prev = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
            torch.utils.deterministic.fill_uninitialized_memory)
    device = vlm.device
    try:  # a single process on cuda:N: accelerate's "cuda" is the current device
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
            return _train(vlm, cfg, examples, Path(out_dir), guide_only_ids)
    finally:  # leave the process as we found it
        torch.use_deterministic_algorithms(prev[0])
        torch.set_num_threads(prev[1])
        torch.utils.deterministic.fill_uninitialized_memory = prev[2]


def _train(vlm: VLM, cfg: TGAConfig, examples: list[TGAExample], out_dir: Path,
           guide_only_ids: frozenset[str] | None) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    method, optim, run = cfg.method, cfg.optim, cfg.run
    rows = row_counts(examples)
    if method.guide_weight != 0 and not rows["guided"]:
        raise InputError("no training row has an image with an 'image_caption': the guide loss has nothing to align "
                         "(add captions, or train with guide weight 0)")
    if run.threads:
        torch.set_num_threads(run.threads)
    accelerator = Accelerator(cpu=vlm.device.type == "cpu", gradient_accumulation_steps=optim.grad_accum,
                              mixed_precision=optim.mixed_precision)
    if accelerator.device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = FILL_NEW_TENSORS
    set_seed(optim.seed)
    accelerator.print("[tga] rows: " + ", ".join(f"{k} {v}" for k, v in rows.items()))

    layers = resolve_layers(method.layers, vlm.n_layers)
    run_settings = vlm.run_settings()
    frozen_target = method.caption_target == "frozen" and method.stage == 2 and method.guide_weight != 0
    caption_vlm = copy.deepcopy(vlm) if frozen_target else None  # None: the model being trained
    peft_model = setup_trainable(vlm, method.stage, method.lora, method.lora_r, method.lora_alpha)
    model = vlm.model
    names = trainable_names(model)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = optim.peak_lr(method.stage)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=optim.weight_decay)

    collator = TGACollator(vlm, cfg.prompts, retrieved_in_context=method.retrieved_in_context,
                           caption_run=method.guide_weight != 0,
                           plain_ids=plain_rows(examples, method.plain_share, optim.seed),
                           unsupervised_ids=guide_only_rows(examples, method.guide_only_labels)
                           if guide_only_ids is None else guide_only_ids)
    per_step = optim.batch_size * optim.grad_accum * accelerator.num_processes
    total = optim.max_steps or max(1, (optim.epochs * len(examples)) // per_step)
    order = data_order(len(examples), optim.seed, total * per_step)
    # its own generator: starting an iteration draws a seed, which must not advance the RNG a checkpoint restores
    loader = torch.utils.data.DataLoader(_ListDataset(examples), batch_size=optim.batch_size,
                                         sampler=_FixedOrder(order), num_workers=0,
                                         collate_fn=collator.parts if run.shortcuts else _whole(collator),
                                         generator=torch.Generator().manual_seed(optim.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    vlm.model = accelerator.unwrap_model(model)
    if caption_vlm is not None:
        caption_vlm.model.requires_grad_(False).to(accelerator.device)

    key = run_key(cfg.key_settings(), run_settings, layers, total, data_digest(examples),
                  sorted(collator.unsupervised_ids))
    ckpt_dir = out_dir / "checkpoints"
    step, log = 0, []
    existing = checkpoints(ckpt_dir) if run.resume and ckpt_dir.is_dir() else []
    state = read_state(existing[-1]) if existing else None
    if state is not None and not resumable(existing[-1], state.get("run_key"), key, "TGA checkpoint"):
        state = None
    if state is None and ckpt_dir.is_dir() and accelerator.is_main_process:
        shutil.rmtree(ckpt_dir)  # a fresh run: old checkpoints would mix with the new ones
    accelerator.wait_for_everyone()

    def prune() -> None:
        if accelerator.is_main_process:  # older ones go, and any a kill left half-written or half-deleted
            keep = set(checkpoints(ckpt_dir)[-run.keep_checkpoints:])
            for old in [p for p in ckpt_dir.glob("step_*") if p not in keep]:
                remove_checkpoint(old)
        accelerator.wait_for_everyone()

    def save() -> None:
        save_checkpoint(ckpt_dir / f"step_{step}", accelerator, model, optimizer, names,
                        {"step": step, "total_steps": total, "trainable": len(names), "run_key": key,
                         "log": log})
        prune()

    if state is not None:
        load_checkpoint(existing[-1], accelerator, model, optimizer, state)
        step, log = state["step"], state.get("log", [])
        accelerator.print(f"[tga] resumed from {existing[-1]} at step {step}/{total}")
        prune()  # a kill between a checkpoint and the pruning after it left one too many
        loader_iter = accelerator.skip_first_batches(loader, step * optim.grad_accum)
    else:
        loader_iter = loader
    shortcuts = None
    if run.shortcuts:
        coming = Counter(examples[i].id for i in order[step * per_step:])
        shortcuts = Shortcuts.of(vlm, caption_vlm, layers, method.guide_span, coming, run.keep_targets_mb)

    model.train()
    t0 = time.time()
    if step < total:
        with frozen_linears_in(vlm.model, LOW_PRECISION.get(optim.mixed_precision)):
            for parts in loader_iter:
                parts = [part.to(accelerator.device) for part in parts]
                with accelerator.accumulate(model):
                    weights = anneal_weights(step, total) if method.anneal else (1.0, 1.0)
                    loss, stats = tga_loss(model, vlm, parts, layers, method.guide_weight, method.guide_form, weights,
                                           caption_vlm=caption_vlm, centre=method.centring(), span=method.guide_span,
                                           layer_mean=method.guide_layer_mean, shortcuts=shortcuts)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and optim.max_grad_norm:
                        accelerator.clip_grad_norm_(params, optim.max_grad_norm)
                    for g in optimizer.param_groups:
                        g["lr"] = _lr_at(step, total, lr, optim.warmup_ratio)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                step += 1
                log.append({"step": step, **{k: round(v, 6) for k, v in stats.items()}})
                if step % 10 == 0 or step == total:
                    accelerator.print(f"[tga] step {step}/{total} " + " ".join(f"{k} {v:.4f}" for k, v in stats.items())
                                      + f" ({time.time() - t0:.0f}s)")
                if step % run.save_every == 0 or step == total:
                    save()
                if run.stop_after is not None and step >= run.stop_after and step < total:
                    return TrainResult(None, step, total, log, guide_only_rows=len(collator.unsupervised_ids), rows=rows)
                if step >= total:
                    break

    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(model)
    if peft_model is not None:
        final = peft_model.merge_and_unload()
    model_dir = out_dir / "model"
    digest = weights_hash(final)
    if accelerator.is_main_process:
        model_dir.mkdir(parents=True, exist_ok=True)
        final.save_pretrained(model_dir, safe_serialization=True)
        save_processor(vlm.processor, model_dir)
        write_json(out_dir / "train.json", {"config": asdict(cfg), "model": run_settings, "safety_layers": layers,
                                            "guide_only_rows": len(collator.unsupervised_ids), "rows": rows,
                                            "lr": lr, "total_steps": total, "trainable": names,
                                            "weights_sha256": digest, "log": log})
    accelerator.wait_for_everyone()
    return TrainResult(model_dir, step, total, log, digest, len(collator.unsupervised_ids), rows)
