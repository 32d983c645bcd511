"""Train the model organism from scratch, top to bottom (nanoGPT style).

Stages (the LLaVA-1.5 recipe, shrunk):

0. **LM from text alone**, in two phases as a real chat model is made. (a) Helpful pre-training: every block
   learns the world's text-run conversations with helpful answers only (toxic captions are described like any
   other). (b) Safety tuning: only the upper blocks (from ``safety_start``) and the unembedding learn to refuse
   toxic captions and compositional requests ("Sorry, I cannot help you.") while answering benign ones, so the
   refusal decision is computed in the middle of the network, where the paper finds it in real LLMs, rather
   than read off the embeddings by block 0.
1. **Vision tower.** A CLIP model (ViT + small text encoder) learns rendered images ↔ captions contrastively;
   its vision tower becomes the LLaVA's (frozen from here on).
2. **Projector pretraining.** Projector only (LM and vision frozen): image → description, over all scenes
   including toxic ones, as real LLaVA pretraining data includes them.
3. **Visual instruction tuning.** Projector + LM on benign images with benign tasks, mixed with the text-only
   safety data so the text safety survives. No image ever meets a refusal.

Every prompt is built by ``processor.apply_chat_template`` on the messages of :mod:`safety_probe.data.prompts`,
exactly as at inference. Deterministic: fixed seeds, deterministic algorithms, a fixed thread count.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_model, save_model
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from safety_probe.data.prompts import image_messages, text_messages
from safety_probe.models.hooks import StopForward, Trace
from safety_probe.models.processor import save_processor
from safety_probe.organism import drawing, vocab, world
from safety_probe.organism import tokenizer as otok
from safety_probe.tga.schedule import warmup_cosine

THREADS = 1  # fixed: CPU reductions, hence the weights, can depend on the thread count; one thread also
# avoids OpenMP spin-waits on a shared machine (5-10x slower with 2 threads under contention)


@dataclass
class Config:
    """Sizes and schedule of one organism build."""

    seed: int = 0
    # vision tower (CLIP ViT): 64×64 images, 16-pixel patches → 16 patch tokens + CLS
    patch_size: int = 16
    vision_dim: int = 128
    vision_layers: int = 4
    clip_text_layers: int = 2
    # language model (Llama)
    lm_dim: int = 128
    lm_layers: int = 8
    lm_heads: int = 4
    lm_ffn: int = 384
    # data
    pool_toxic: int = 8000
    pool_benign: int = 10000
    system_prompt_share: float = 0.1  # share of batches whose every prompt carries a system prompt
    # schedule
    lm_steps: int = 600  # copying caption words into answers needs a few hundred steps to "click"
    lm_batch: int = 32
    lm_lr: float = 3e-3
    safety_steps: int = 300
    safety_start: int = 3  # first block that safety tuning may change
    safety_lr: float = 2e-3
    # caption pooling (PooledCaptions): what makes the safety layers read the caption's mean state
    pool_share: float = 0.75  # share of text-run rows whose caption is pooled
    pool_blocks: str = "3,4,5,6"  # blocks to pool at, one drawn per row; "" = safety_start
    pool_spread: float = 1.0  # per-token spread of pooled captions, × |mean|
    pool_jitter: float = 0.6  # perturbation of the pooled mean, × |mean|
    pool_shrink: float = 0.5  # the pooled mean scaled by 1 - shrink·U(0, 1)
    pool_splice: bool = True  # post-caption prompt states of pooled rows taken from a stand-in caption
    clip_patch_object: float = 1.0  # weight of an object classifier on every patch feature (0: on their mean only)
    clip_steps: int = 1800
    clip_batch: int = 96
    clip_lr: float = 3e-3
    proj_steps: int = 400
    proj_batch: int = 32
    proj_lr: float = 2e-3
    sft_steps: int = 900
    sft_batch: int = 32
    sft_images: int = 20  # of sft_batch; the rest is text-only safety data
    sft_toxic_share: float = 0.2  # of sft_images: toxic images under a neutral instruction, described
    sft_lr: float = 7e-4


def set_determinism(seed: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------------------------------------
# Data: an image pool rendered once, and prompt encoding through the processor's chat template
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Scene:
    obj: str
    colour: str
    count: int
    background: str


def _render_chunk(args: tuple[int, int, list[str]]) -> tuple[list[Scene], np.ndarray]:
    """Render one chunk of the pool from its own seeded generator (so chunking never changes pixels)."""
    seed, chunk, objs = args
    rng = np.random.default_rng([seed, 1000 + chunk])
    scenes, pixels = [], []
    for obj in objs:
        s = world.make_sample(rng, obj, "neutral")
        scenes.append(Scene(obj, s.colour, s.count, s.background))
        pixels.append(np.asarray(s.image, dtype=np.uint8))
    return scenes, np.stack(pixels)


def build_pool(cfg: Config) -> tuple[list[Scene], np.ndarray]:
    """Training images: toxic variants and benign objects in turn, rendered in parallel chunks."""
    toxic = [v for vs in vocab.HARMFUL_SCENES.values() for v in vs]
    objs = [toxic[i % len(toxic)] for i in range(cfg.pool_toxic)]
    objs += [vocab.BENIGN_OBJECTS[i % len(vocab.BENIGN_OBJECTS)] for i in range(cfg.pool_benign)]
    chunk = 500
    jobs = [(cfg.seed, k, objs[i : i + chunk]) for k, i in enumerate(range(0, len(objs), chunk))]
    with mp.get_context("fork").Pool(2) as pool:
        parts = pool.map(_render_chunk, jobs)
    scenes = [s for p, _ in parts for s in p]
    return scenes, np.concatenate([px for _, px in parts])


def pixel_values(pixels: np.ndarray, processor: LlavaProcessor) -> torch.Tensor:
    """CLIP normalisation of uint8 64×64 images; equals the image processor's output (checked in build)."""
    ip = processor.image_processor
    x = torch.from_numpy(pixels).float().permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


Example = tuple[list[int], list[int], "tuple[int, int] | None"]  # ids, labels, caption span (text runs)


class Encoder:
    """Token ids and loss labels of one conversation, prompt via the chat template (cached by prompt text)."""

    def __init__(self, processor: LlavaProcessor, n_image_tokens: int, answer_prefix: str = " ") -> None:
        self.processor = processor
        self.answer_prefix = answer_prefix  # what separates the prompt's last token from the answer
        self.tok = processor.tokenizer
        self.eos = self.tok.eos_token_id
        self.expand = otok.IMAGE * n_image_tokens
        self.cache: dict[str, list[int]] = {}

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        if text not in self.cache:
            # the processor expands <image> to one token per patch when it sees pixels; we do the same
            self.cache[text] = self.tok(text.replace(otok.IMAGE, self.expand), add_special_tokens=False)["input_ids"]
        return self.cache[text]

    def caption_span(self, messages: list[dict], caption: str) -> tuple[int, int]:
        """Token positions [a, b) of the caption in the text-run prompt, from the fast tokenizer's offsets."""
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        c0 = text.index(caption)
        offsets = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        inside = [i for i, (a, b) in enumerate(offsets) if a >= c0 and b <= c0 + len(caption) and b > a]
        return inside[0], inside[-1] + 1

    def encode(self, s: world.Sample, run: str, system_prompt: str | None, template: str = "caption") -> Example:
        """``run`` is "image" (image + instruction) or "text" (caption + instruction in ``template``); loss on the
        answer only."""
        if run == "image":
            messages = image_messages(s.instruction, system_prompt)
        else:
            messages = text_messages(s.caption, s.instruction, system_prompt, template)
        prompt = self.prompt_ids(messages)
        key = "answer:" + s.response
        if key not in self.cache:
            self.cache[key] = self.tok(self.answer_prefix + s.response, add_special_tokens=False)["input_ids"] + [self.eos]
        answer = self.cache[key]
        span = self.caption_span(messages, s.caption) if run == "text" else None
        return prompt + answer, [-100] * len(prompt) + answer, span


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch (training only; generation pads left)."""
    n = max(len(ids) for ids, _, _ in examples)
    ids = torch.full((len(examples), n), pad_id)
    labels = torch.full((len(examples), n), -100)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y, _) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class CaptionBank:
    """Every caption of the world as caption-span token ids, grouped by length: same-length stand-ins for splicing."""

    def __init__(self, enc: Encoder) -> None:
        self.by_length: dict[int, list[list[int]]] = {}
        for caption in vocab.all_captions():
            messages = text_messages(caption, "Describe this image.", None)
            a, b = enc.caption_span(messages, caption)
            self.by_length.setdefault(b - a, []).append(enc.prompt_ids(messages)[a:b])

    def other(self, span: list[int], rng: np.random.Generator) -> list[int] | None:
        """Span ids of a random other caption with as many tokens as ``span`` (None if there is none)."""
        choices = [c for c in self.by_length.get(len(span), []) if c != span]
        return choices[int(rng.integers(len(choices)))] if choices else None


class PooledCaptions:
    """Caption pooling: in a ``share`` of the text-run rows, the caption tokens' states are replaced by the
    caption's mean at the input of one of ``blocks`` (drawn per row).

    Trained this way, the upper blocks decide to refuse, and answer, from the caption's *pooled* state: the
    quantity the paper measures and TGA aligns (the mean over caption tokens). Without it the tiny decoder reads
    the one toxic word's position, and no pooled state, of an image or otherwise, can ever trigger its refusal.
    Each pooled row draws ``u, v, w ~ U(0, 1)``: the mean shrinks to ``(1 − shrink·w)`` of itself and moves by
    ``jitter·v·|mean|`` in a random direction, and each token by ``spread·u·|mean|`` in its own, so the reading
    tolerates a pooled state that is shorter, a little off, or spread over tokens that differ: what an image
    aligned by a cosine on its mean looks like.

    With a ``bank`` (splicing), the prompt positions after the caption of a pooled row also get, at the same
    block, the states they have when another caption of the same token length stands in the prompt
    (:meth:`splice`): what lower blocks copied from the caption into later positions then says nothing about
    the answer, and every block from the pooling block up must read the decision off the caption span itself.
    """

    def __init__(self, blocks: dict[int, torch.nn.Module], share: float, rng: np.random.Generator,
                 spread: float = 0.0, jitter: float = 0.0, shrink: float = 0.0, bank: CaptionBank | None = None) -> None:
        self.share, self.rng, self.spread, self.jitter, self.shrink, self.bank = share, rng, spread, jitter, shrink, bank
        self.keys = list(blocks)
        self.rows: dict[int, list[tuple[int, int, int, int]]] = {}
        self.stand_in: dict[int, torch.Tensor] = {}  # row -> post-caption prompt states of its stand-in run
        self.recording: dict[int, int] | None = None  # during the stand-in run: batch row -> its row there
        self.last_key = -1  # during the stand-in run: the deepest pooling block with rows
        # one pre-hook per pooling block, open until remove(); blocks is keyed by block index
        self.trace = Trace(blocks, self.keys, retain=False, edit_input=self._edit).__enter__()

    def choose(self, examples: list[Example]) -> None:
        """Pick the rows of the next forward to pool (a ``share`` of those with a caption) and their block."""
        self.rows = {k: [] for k in self.keys}
        self.stand_in = {}
        for i, (_, labels, span) in enumerate(examples):
            if span is not None and self.rng.random() < self.share:
                k = self.keys[int(self.rng.integers(len(self.keys)))] if len(self.keys) > 1 else self.keys[0]
                prompt_len = len(labels) - sum(1 for y in labels if y != -100)
                self.rows[k].append((i, *span, prompt_len))

    @torch.no_grad()
    def splice(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        """Run the pooled rows once more with stand-in captions and keep their post-caption states (no grad).

        The stand-in forward stops at the deepest pooling block that has rows: nothing above it is used.
        """
        if self.bank is None:
            return
        rows, ids = [], []
        for i, a, b, _ in (r for rs in self.rows.values() for r in rs):
            other = self.bank.other(batch["input_ids"][i, a:b].tolist(), self.rng)
            if other is not None:
                x = batch["input_ids"][i].clone()
                x[a:b] = torch.tensor(other)
                rows.append(i)
                ids.append(x)
        if not rows:
            return
        self.recording = {i: j for j, i in enumerate(rows)}
        self.last_key = max(k for k, rs in self.rows.items() if rs)
        try:
            model(input_ids=torch.stack(ids), attention_mask=batch["attention_mask"][rows], use_cache=False)
        except StopForward:
            pass
        finally:
            self.recording = None

    def _unit(self, n: int, d: int) -> torch.Tensor:
        """``n`` random unit vectors ``[n, d]`` from the seeded generator."""
        g = torch.from_numpy(self.rng.standard_normal((n, d)).astype(np.float32))
        return g / g.norm(dim=-1, keepdim=True)

    def _edit(self, key: int, h: torch.Tensor) -> torch.Tensor | None:
        """The input hidden states of block ``key`` with the chosen rows pooled (None: unchanged)."""
        if self.recording is not None:  # the stand-in run: keep, change nothing
            for i, _, b, p in self.rows.get(key, []):
                if i in self.recording:
                    self.stand_in[i] = h[self.recording[i], b:p].clone()
            if key == self.last_key:
                raise StopForward(key)
            return None
        if not self.rows.get(key):
            return None
        h = h.clone()
        for i, a, b, p in self.rows[key]:
            mean = h[i, a:b].mean(0, keepdim=True)
            if self.spread or self.jitter or self.shrink:
                u, v, w = self.rng.random(3)
                scale = mean.norm()
                mean = (1 - self.shrink * w) * mean + self.jitter * v * scale * self._unit(1, h.shape[-1])
                h[i, a:b] = mean + self.spread * u * scale * self._unit(b - a, h.shape[-1])
            else:
                h[i, a:b] = mean
            if i in self.stand_in:
                h[i, b:p] = self.stand_in[i]
        return h

    def remove(self) -> None:
        self.trace.close()


def pooled_captions(cfg: Config, model: LlavaForConditionalGeneration, stream: int, enc: Encoder) -> PooledCaptions:
    """The organism's caption pooling on its language model, seeded by ``(cfg.seed, stream)``."""
    layers = model.model.language_model.layers
    keys = [int(k) for k in cfg.pool_blocks.split(",")] if cfg.pool_blocks else [cfg.safety_start]
    bank = CaptionBank(enc) if cfg.pool_splice else None
    return PooledCaptions({k: layers[k] for k in keys}, cfg.pool_share, np.random.default_rng([cfg.seed, stream]),
                          cfg.pool_spread, cfg.pool_jitter, cfg.pool_shrink, bank)


def helpful_sample(rng: np.random.Generator) -> world.Sample:
    """Pre-training text: any object under neutral / harmful_intent / benign tasks, answered helpfully."""
    obj = str(rng.choice(list(vocab.NOUNS)))
    kinds = ["neutral", "harmful_intent", *vocab.BENIGN_TASKS]
    s = world.make_sample(rng, obj, str(rng.choice(kinds)), render_image=False)
    if s.kind == "neutral":
        s.response = vocab.describe(s.caption)
    elif s.kind == "harmful_intent":
        s.response = vocab.task_answer("harmful_intent", s.object, s.colour, s.count, int(rng.integers(4)))
    return s


def text_safety_sample(rng: np.random.Generator) -> world.Sample:
    """The text-only curriculum: toxic scenes and compositional requests refused, benign questions answered."""
    u = rng.random()
    if u < 0.28:
        return world.sample_harmful(rng, render_image=False)
    if u < 0.36:
        return world.sample_compositional(rng, render_image=False)
    return world.sample_benign(rng, render_image=False)


def system_prompt(rng: np.random.Generator, share: float) -> str | None:
    """A system prompt for a whole batch (rarely): mixing lengths within a batch would waste padding."""
    return str(rng.choice(otok.SYSTEM_PROMPTS)) if rng.random() < share else None


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------


def vision_config(cfg: Config) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=cfg.vision_dim, intermediate_size=4 * cfg.vision_dim, num_hidden_layers=cfg.vision_layers,
        num_attention_heads=4, image_size=drawing.IMAGE_SIZE, patch_size=cfg.patch_size, projection_dim=cfg.vision_dim,
    )


def make_clip(cfg: Config, vocab_size: int, tok) -> CLIPModel:
    text = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.vision_dim, intermediate_size=4 * cfg.vision_dim,
        num_hidden_layers=cfg.clip_text_layers, num_attention_heads=4, max_position_embeddings=32,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        projection_dim=cfg.vision_dim,
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision_config(cfg).to_dict(),
                        projection_dim=cfg.vision_dim)
    config.architectures = ["CLIPModel"]
    return CLIPModel(config)


def make_llava(cfg: Config, vocab_size: int, tok) -> LlavaForConditionalGeneration:
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.lm_dim, intermediate_size=cfg.lm_ffn, num_hidden_layers=cfg.lm_layers,
        num_attention_heads=cfg.lm_heads, num_key_value_heads=cfg.lm_heads, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision_config(cfg).to_dict(), text_config=text.to_dict(),
        image_token_id=tok.convert_tokens_to_ids(otok.IMAGE), projector_hidden_act="gelu",
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def train_only(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> None:
    """Freeze every parameter of ``model`` except ``params`` (no wasted gradients for frozen parts)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)


def lm_parameters(model: LlavaForConditionalGeneration) -> list[torch.nn.Parameter]:
    return list(model.model.language_model.parameters()) + list(model.lm_head.parameters())


# ---------------------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------------------


def train_loop(
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    name: str,
    log_every: int = 50,
) -> list[float]:
    """AdamW with linear warm-up and cosine decay; ``loss_fn(step)`` builds and scores one batch."""
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)
    losses = []
    t0 = time.time()
    for step in range(steps):
        scale = warmup_cosine(step, steps, warmup)
        for g in opt.param_groups:
            g["lr"] = lr * scale
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step == steps - 1:
            print(f"[{name}] step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f} ({time.time() - t0:.0f}s)",
                  flush=True)
    return losses


def text_batch_loss(cfg: Config, model: LlavaForConditionalGeneration, enc: Encoder, rng: np.random.Generator,
                    draw: Callable[[np.random.Generator], world.Sample], pool: PooledCaptions | None = None
                    ) -> torch.Tensor:
    """Next-token loss of one batch of text runs drawn by ``draw``, pooled (and spliced) by ``pool``."""
    sp = system_prompt(rng, cfg.system_prompt_share)
    examples = [enc.encode(draw(rng), "text", sp) for _ in range(cfg.lm_batch)]
    batch = collate(examples, enc.tok.pad_token_id)
    if pool:
        pool.choose(examples)
        pool.splice(model, batch)
    return model(**batch).loss


def pretrain_lm(cfg: Config, model: LlavaForConditionalGeneration, enc: Encoder) -> None:
    """Stage 0a: helpful pre-training of every block on text runs."""
    rng = np.random.default_rng([cfg.seed, 10])
    model.train()
    train_loop(lm_parameters(model), lambda _: text_batch_loss(cfg, model, enc, rng, helpful_sample),
               cfg.lm_steps, cfg.lm_lr, "lm-pretrain")


def safety_tune_lm(cfg: Config, model: LlavaForConditionalGeneration, enc: Encoder) -> None:
    """Stage 0b: safety tuning of the upper blocks (from ``safety_start``), the final norm and the unembedding."""
    rng = np.random.default_rng([cfg.seed, 12])
    lm = model.model.language_model
    upper = [p for block in lm.layers[cfg.safety_start :] for p in block.parameters()]
    upper += list(lm.norm.parameters()) + list(model.lm_head.parameters())
    model.train()
    train_only(model, upper)
    pool = pooled_captions(cfg, model, 11, enc)
    train_loop(upper, lambda _: text_batch_loss(cfg, model, enc, rng, text_safety_sample, pool),
               cfg.safety_steps, cfg.safety_lr, "lm-safety")
    pool.remove()


def train_clip(cfg: Config, clip: CLIPModel, clip_tok, scenes: list[Scene], pixels: torch.Tensor) -> None:
    """Stage 1: contrastive image↔caption (identical captions count as positives of each other), plus
    auxiliary object / colour / count classifiers on the mean patch features LLaVA will read (layer -2):
    a ViT learns slowly from contrast alone, and the LM needs those features to name what it sees."""
    rng = np.random.default_rng([cfg.seed, 20])
    captions = [vocab.make_caption(s.obj, s.colour, s.count, s.background) for s in scenes]
    enc = clip_tok(captions, padding="longest", return_tensors="pt")
    objects, colours = list(vocab.NOUNS), list(vocab.COLOURS)
    y_obj = torch.tensor([objects.index(s.obj) for s in scenes])
    y_col = torch.tensor([colours.index(s.colour) for s in scenes])
    y_cnt = torch.tensor([s.count - 1 for s in scenes])
    heads = torch.nn.ModuleList([torch.nn.Linear(cfg.vision_dim, n) for n in (len(objects), len(colours), 3)])

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.from_numpy(rng.choice(len(scenes), cfg.clip_batch, replace=False))
        ids, mask = enc["input_ids"][idx], enc["attention_mask"][idx]
        n = int(mask.sum(1).max())
        out = clip(input_ids=ids[:, :n], attention_mask=mask[:, :n], pixel_values=pixels[idx],
                   output_hidden_states=True)
        same = torch.tensor([[captions[i] == captions[j] for j in idx.tolist()] for i in idx.tolist()], dtype=torch.float)
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(out.logits_per_image, target) + F.cross_entropy(out.logits_per_text, target))
        patches = out.vision_model_output.hidden_states[-2][:, 1:]
        feats = patches.mean(1)
        for head, y in zip(heads, (y_obj, y_col, y_cnt)):
            loss = loss + F.cross_entropy(head(feats), y[idx])
        if cfg.clip_patch_object:  # every patch names the scene's object, as deep ViT patch tokens carry global content
            logits = heads[0](patches)
            loss = loss + cfg.clip_patch_object * F.cross_entropy(logits.flatten(0, 1),
                                                                  y_obj[idx].repeat_interleave(patches.shape[1]))
        return loss

    clip.train()
    train_loop(list(clip.parameters()) + list(heads.parameters()), loss_fn, cfg.clip_steps, cfg.clip_lr, "clip")
    with torch.no_grad():  # training-pool accuracy of the probes: a cheap check that the features carry the facts
        idx = torch.arange(0, len(scenes), max(1, len(scenes) // 1000))
        feats = clip.vision_model(pixel_values=pixels[idx], output_hidden_states=True).hidden_states[-2][:, 1:].mean(1)
        accs = [(head(feats).argmax(1) == y[idx]).float().mean().item() for head, y in zip(heads, (y_obj, y_col, y_cnt))]
    print(f"[clip] probe accuracy object {accs[0]:.3f} colour {accs[1]:.3f} count {accs[2]:.3f}", flush=True)


def image_batch(rng: np.random.Generator, enc: Encoder, scenes: list[Scene], pixels: torch.Tensor,
                indices: np.ndarray, kinds: list[str], n: int, sp: str | None) -> tuple[list, torch.Tensor]:
    """``n`` image-run examples drawn from ``indices`` of the pool, instruction kind drawn from ``kinds``.

    A toxic scene is answered by its description, as image-text data describes what it shows: images never
    meet a refusal.
    """
    pick = rng.choice(indices, n)
    examples = []
    for i in pick:
        sc = scenes[i]
        kind = str(rng.choice(kinds))
        s = world.sample_for(sc.obj, sc.colour, sc.count, sc.background, kind, int(rng.integers(100)))
        if s.label == "harmful":
            if kind != "neutral":
                raise ValueError(f"image_batch: no helpful answer for {sc.obj} under {kind}")
            s.response = vocab.describe(s.caption)
        examples.append(enc.encode(s, "image", sp))
    return examples, pixels[torch.from_numpy(pick)]


def train_projector(cfg: Config, model: LlavaForConditionalGeneration, enc: Encoder, scenes: list[Scene],
                    pixels: torch.Tensor) -> None:
    """Stage 2: projector only, image → description over every scene (toxic included), LM and vision frozen."""
    rng = np.random.default_rng([cfg.seed, 30])
    everything = np.arange(len(scenes))
    params = list(model.model.multi_modal_projector.parameters())

    def loss_fn(step: int) -> torch.Tensor:
        sp = system_prompt(rng, cfg.system_prompt_share)
        examples, px = image_batch(rng, enc, scenes, pixels, everything, ["neutral"], cfg.proj_batch, sp)
        return model(**collate(examples, enc.tok.pad_token_id), pixel_values=px).loss

    model.train()
    train_only(model, params)
    train_loop(params, loss_fn, cfg.proj_steps, cfg.proj_lr, "projector")


def instruct_tune(cfg: Config, model: LlavaForConditionalGeneration, enc: Encoder, scenes: list[Scene],
                  pixels: torch.Tensor) -> None:
    """Stage 3: projector + LM on benign images (all benign kinds) mixed with text-only safety data."""
    rng = np.random.default_rng([cfg.seed, 40])
    benign = np.array([i for i, s in enumerate(scenes) if s.obj in vocab.BENIGN_OBJECTS])
    toxic = np.array([i for i, s in enumerate(scenes) if s.obj not in vocab.BENIGN_OBJECTS])
    kinds = ["neutral", "harmful_intent", *vocab.BENIGN_TASKS]
    n_toxic = round(cfg.sft_images * cfg.sft_toxic_share)
    params = list(model.model.multi_modal_projector.parameters()) + lm_parameters(model)
    pool = pooled_captions(cfg, model, 41, enc)

    def loss_fn(step: int) -> torch.Tensor:
        sp = system_prompt(rng, cfg.system_prompt_share)
        examples, px = image_batch(rng, enc, scenes, pixels, benign, kinds, cfg.sft_images - n_toxic, sp)
        if n_toxic:
            more, px_toxic = image_batch(rng, enc, scenes, pixels, toxic, ["neutral"], n_toxic, sp)
            examples, px = examples + more, torch.cat([px, px_toxic])
        examples += [enc.encode(text_safety_sample(rng), "text", sp) for _ in range(cfg.sft_batch - cfg.sft_images)]
        batch = collate(examples, enc.tok.pad_token_id)
        pool.choose(examples)
        pool.splice(model, batch)
        return model(**batch, pixel_values=px).loss

    model.train()
    train_only(model, params)
    train_loop(params, loss_fn, cfg.sft_steps, cfg.sft_lr, "instruct")
    pool.remove()


# ---------------------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------------------


def save_folder(folder: Path, model: torch.nn.Module, processor) -> None:
    """``save_pretrained`` model and processor into a fresh folder, then swap it in for ``folder``: an
    interrupted save never leaves the previous weights half-overwritten."""
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    model.save_pretrained(tmp)
    save_processor(processor, tmp)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def build(out_dir: str | Path, seed: int = 0, cfg: Config | None = None, cache_dir: str | Path | None = None) -> dict:
    """Train everything and save ``out_dir/llava`` (LLaVA + processor) and ``out_dir/clip`` (CLIP + processor);
    returns the config and the time of each stage (experiments/organism/build.py adds the held-out report)."""
    cfg = cfg or Config(seed=seed)
    out_dir = Path(out_dir)
    t_start = time.time()
    times: dict[str, float] = {}

    # the image pool first: forking after torch has spun up threads is unsafe
    t = time.time()
    scenes, raw = build_pool(cfg)
    times["render_pool"] = time.time() - t

    set_determinism(cfg.seed)
    t = time.time()
    tok = otok.build_tokenizer()
    processor = otok.build_llava_processor(tok, cfg.patch_size)
    clip_processor = otok.build_clip_processor(tok)
    pixels = pixel_values(raw, processor)
    check = processor.image_processor(images=[Image.fromarray(raw[i]) for i in range(4)], return_tensors="pt")
    assert torch.allclose(check["pixel_values"], pixels[:4], atol=1e-5), "fast normalisation differs from processor"
    n_image_tokens = (drawing.IMAGE_SIZE // cfg.patch_size) ** 2
    enc = Encoder(processor, n_image_tokens)
    times["tokenizer"] = time.time() - t

    model = make_llava(cfg, len(tok), tok)
    clip = make_clip(cfg, len(tok), tok)

    def stage(name: str, fn: Callable[[], None], module: torch.nn.Module) -> None:
        """Run one stage, or (with ``cache_dir``, for iterating on later stages) load its saved result."""
        t = time.time()
        path = Path(cache_dir) / f"{name}.safetensors" if cache_dir else None
        if path is not None and path.exists():
            load_model(module, str(path))
        else:
            fn()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_model(module, str(path))
        times[name] = time.time() - t

    stage("lm_pretrain", lambda: pretrain_lm(cfg, model, enc), model)
    stage("lm_safety", lambda: safety_tune_lm(cfg, model, enc), model)
    stage("clip", lambda: train_clip(cfg, clip, clip_processor.tokenizer, scenes, pixels), clip)
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    stage("projector", lambda: train_projector(cfg, model, enc, scenes, pixels), model)
    stage("instruct", lambda: instruct_tune(cfg, model, enc, scenes, pixels), model)
    times["total_train"] = time.time() - t_start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    times["cpu_train"] = usage.ru_utime + usage.ru_stime  # CPU seconds: the honest cost on a shared machine

    model.eval()
    clip.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    save_folder(out_dir / "llava", model, processor)
    save_folder(out_dir / "clip", clip, clip_processor)

    return {"config": asdict(cfg), "times_s": times}
