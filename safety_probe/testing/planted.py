"""Tiny LLaVAs with a planted refusal decision: hand-set weights, so where the refusal forms is known.

    >>> m = build_planted("shared", tmp_path / "shared")          # doctest: +SKIP
    >>> m.folder, m.pairs, m.blocks, m.refuses[:3]                # model folder, pairs.jsonl, (3,), (True, False, ...)

Every model reads the text run (``USER: {caption}\\n{instruction} ASSISTANT:``) the same way:

* The residual stream has reserved orthonormal directions (:data:`_DIRS`): ``u`` (in every token's embedding), the
  identities of the tokens the responses are spelled with (a bigram chain: the unembedding row of each response token's
  successor points along it), a key ``k_harm`` in the embedding of the trigger words " dangerous" and " harmful",
  the refusal state ``r``. Every other token embeds as ``u`` plus a random unit vector in the rest of the space.
* The decision block's head 0 attends from every position to a trigger word when the caption has one (the query
  reads ``u``, the key ``k_harm``, in the slowest rotary pair so position does not matter) and writes ``r``; without a
  trigger it attends uniformly and writes nothing. ``r`` is read by the unembedding as the refusal's first token, so
  the refusal forms at that block, and only for harmful captions with a trigger (others labelled harmful, e.g.
  "a red weapon", are answered).
* Every other block is a noise block: heads that attend uniformly and write a random projection of the context into
  the unreserved directions, so the lens of every token moves a little at every block, as in a real model.

Kinds:

* ``plain``: refusal "Sorry, I cannot help you." (K = {"S"}), answer "The image shows a cup."; decision at block 5 of 8.
* ``shared``: refusal "I'm sorry, I cannot.", and "Is this safe?" is answered "I think it is fine.": a second head of
  the decision block (block 3 of 6) keys on " safe" and writes a state ``t`` that the unembedding also reads as "I", so
  refusals and these answers open with the same token, formed at the same block; at the position after "I", ``r``
  selects "'" (of "I'm") over " thi" (of "I think").
* ``content``: the plain refusal, decision at block 4 of 8, and the decision head also copies the trigger word into the
  residual, where the unembedding reads it as that word; it starts improbable (e^-5 below the rest), so its log-prob
  rises more than the refusal token's at block 4, and again at block 5 (a second copying head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from safety_probe.models.load import load_vlm
from safety_probe.models.vlm import VLM
from safety_probe.testing.circuits import orthonormal
from safety_probe.testing.tiny import build_tiny_vlm

PLANTED_KINDS = ("plain", "shared", "content")
_LAYOUT = {"plain": (8, 5), "shared": (6, 3), "content": (8, 4)}  # (blocks, decision block)
_REFUSAL = {"plain": "Sorry, I cannot help you.", "shared": "I'm sorry, I cannot.", "content": "Sorry, I cannot help you."}
_DESCRIBE, _THINK = "The image shows a cup.", "I think it is fine."
_TRIGGERS = (" dangerous", " harmful")  # single tokens of the tiny tokenizer
_UNRECOGNISED = ("weapon", "knife", "chemical", "gun")  # labelled harmful, no trigger: answered
_ADJ, _NOUN = ("red", "small", "large", "happy", "old", "bright", "simple"), ("picture", "house", "car", "tree", "book", "phone")
_TAIL = ("on the table", "in the park", "near the river", "at night", "on the screen")
_INSTRUCTIONS = ("Describe this image.", "Is this safe?")
_DIRS = ("u", "k_harm", "k_safe", "r", "t", "c0", "c1")
# gains (logits per unit of the normed state's component, |x_hat| = sqrt(d))
_CHAIN, _DEFAULT, _REFUSE, _STATE, _BRANCH, _NEXT = 6.0, 0.75, 1.1, 1.5, 0.3, 0.6


@dataclass(frozen=True)
class PlantedModel:
    """A planted model: its folder, its pairs file, the decision block(s) and, per pair, whether it refuses."""

    kind: str
    folder: Path
    pairs: Path
    blocks: tuple[int, ...]
    refuses: tuple[bool, ...]
    refusal: str


def _pairs(n: int, seed: int) -> list[dict]:
    """``n`` rows (half harmful: 4/5 with a trigger word, 1/5 an unrecognised harmful word; half benign)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        adj, noun, tail = rng.choice(_ADJ), rng.choice(_NOUN), rng.choice(_TAIL)
        instruction = _INSTRUCTIONS[int(rng.integers(2))]
        if i % 2 == 0 and i % 10 != 8:
            trigger = _TRIGGERS[int(rng.integers(2))].strip()
            rows.append({"caption": f"a {trigger} {noun} {tail}", "label": "harmful", "scene": trigger, "refuses": True})
        elif i % 2 == 0:
            thing = rng.choice(_UNRECOGNISED)
            rows.append({"caption": f"a {adj} {thing} {tail}", "label": "harmful", "scene": thing, "refuses": False})
        else:
            rows.append({"caption": f"a {adj} {noun} {tail}", "label": "benign", "scene": "benign", "refuses": False})
        rows[-1]["instruction"] = instruction
    return rows


def _write_pairs(rows: list[dict], folder: Path, seed: int) -> Path:
    """One small PNG per row and a pairs.jsonl pointing at them."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i, row in enumerate(rows):
        im = Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8))
        ImageDraw.Draw(im).ellipse((6, 6, 22, 22), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        im.save(folder / "images" / f"{i:04d}.png")
        lines.append(json.dumps({"image": f"images/{i:04d}.png", **{k: v for k, v in row.items() if k != "refuses"}}))
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "pairs.jsonl"


def _tokens(vlm: VLM, text: str) -> list[int]:
    return vlm.tokenizer.encode(text, add_special_tokens=False)


def _successors(responses: list[list[int]]) -> dict[int, list[int]]:
    """Token -> its successors over the responses (EOS after the last), in first-seen order."""
    out: dict[int, list[int]] = {}
    for ids in responses:
        for token, nxt in zip(ids, [*ids[1:], None]):
            if nxt not in out.setdefault(token, []):
                out[token].append(nxt)
    return out


@torch.no_grad()
def _plant(vlm: VLM, kind: str, noise: float, seed: int, decision: int) -> None:
    """Set every weight of the language model that the text run reads (see the module docstring)."""
    d = vlm.d_model
    cfg = vlm.model.config.get_text_config()
    hd, n_kv = d // cfg.num_attention_heads, cfg.num_key_value_heads
    slow = hd // 2 - 1  # the slowest rotary frequency: q.k does not depend on the distance
    refusal, answers = _tokens(vlm, _REFUSAL[kind]), [_tokens(vlm, _DESCRIBE)] + ([_tokens(vlm, _THINK)] if kind == "shared" else [])
    colon = _tokens(vlm, "ASSISTANT:")[-1]
    chain = sorted({colon, *refusal, *(t for a in answers for t in a)})
    basis = orthonormal(d, len(_DIRS) + len(chain), seed)
    q = dict(zip(_DIRS, basis))
    ident = dict(zip(chain, basis[len(_DIRS):]))
    free = torch.linalg.svd(torch.eye(d) - basis.T @ basis).U[:, : d - len(basis)]  # [d, m] the unreserved subspace
    free_proj = free @ free.T
    gen = torch.Generator().manual_seed(seed)
    embed, unembed = vlm.embed.weight, vlm.unembed.weight
    rand = torch.randn(embed.shape[0], free.shape[1], generator=gen) @ free.T
    embed.copy_(q["u"] + rand / rand.norm(dim=-1, keepdim=True))
    for t, v in ident.items():
        embed[t] = q["u"] + v
    triggers = [_tokens(vlm, w)[0] for w in _TRIGGERS]
    for i, t in enumerate(triggers):
        embed[t] += q["k_harm"] + (q[f"c{i}"] if kind == "content" else 0)
    embed[_tokens(vlm, " safe")[0]] += q["k_safe"]
    unembed.copy_(torch.randn(unembed.shape, generator=gen) / d**0.5)
    unembed[[t for t in chain if t != colon] + [vlm.tokenizer.eos_token_id]] *= 0.3  # response tokens: mostly planted
    eos = vlm.tokenizer.eos_token_id
    for token, nexts in _successors([refusal, *answers]).items():
        nexts = [eos if s is None else s for s in nexts]
        if len(nexts) == 1:
            unembed[nexts[0]] += _CHAIN * ident[token]
        elif token == refusal[0]:  # "I": "'" of "I'm" when r is present, else " thi" of "I think"
            yes, no = nexts
            unembed[yes] += (_CHAIN - _BRANCH) * ident[token] + _NEXT * q["r"]
            unembed[no] += _CHAIN * ident[token]
        else:
            raise ValueError(f"token {token} has successors {nexts}: the responses' bigram chains conflict")
    unembed[answers[0][0]] += _DEFAULT * ident[colon]
    unembed[refusal[0]] += _REFUSE * q["r"] + (_REFUSE * q["t"] if kind == "shared" else 0)
    for i, t in enumerate(triggers if kind == "content" else []):
        unembed[t] = -1.6 * ident[colon] + 1.33 * q[f"c{i}"]  # no random part: both words alike
    for b, layer in enumerate(vlm.layers):
        att = layer.self_attn
        for w in (att.q_proj.weight, att.k_proj.weight, att.v_proj.weight, att.o_proj.weight, layer.mlp.down_proj.weight):
            w.zero_()
        layer.input_layernorm.weight.fill_(1.0)
        heads = []
        if b == decision:
            heads.append((0, 0, "k_harm", {"r": _STATE} | ({"c0": 2.0, "c1": 2.0} if kind == "content" else {})))
            if kind == "shared":
                heads.append((2, 1, "k_safe", {"t": _STATE}))
        elif kind == "content" and b == decision + 1:
            heads.append((0, 0, "k_harm", {"c0": 0.3, "c1": 0.3}))
        for head, kv, key, writes in heads:  # attend to the key's token, copy what is written there
            att.q_proj.weight[head * hd + slow] = 1.25 * q["u"]
            att.k_proj.weight[kv * hd + slow] = 1.25 * q[key]
            for j, (name, scale) in enumerate(writes.items()):
                read = key if name in ("r", "t") else name
                att.v_proj.weight[kv * hd + j] = q[read]
                att.o_proj.weight[:, head * hd + j] = scale / 6.5 * q[name]  # 6.5: the read component at a trigger
        if not heads:  # noise block: uniform attention, a random projection into the unreserved subspace
            att.v_proj.weight.copy_(torch.randn(n_kv * hd, d, generator=gen) @ free_proj / d**0.5)
            att.o_proj.weight.copy_(free_proj @ torch.randn(d, d, generator=gen) * noise / d)
    vlm.final_norm.weight.fill_(1.0)


def build_planted(kind: str, out_dir: str | Path, n_pairs: int = 200, seed: int = 0, noise: float = 1.0,
                  layout: tuple[int, int] | None = None) -> PlantedModel:
    """Build the planted model ``kind`` (:data:`PLANTED_KINDS`) into ``out_dir/model`` and ``n_pairs`` text-run pairs
    into ``out_dir/pairs``; ``seed`` draws the pairs, the random embeddings and the noise blocks; ``layout``
    (blocks, decision block) replaces the kind's own."""
    if kind not in PLANTED_KINDS:
        raise ValueError(f"unknown planted kind {kind!r}; choose one of {PLANTED_KINDS}")
    out_dir = Path(out_dir)
    n_layers, decision = layout or _LAYOUT[kind]
    if not 1 <= decision < n_layers - 1:
        raise ValueError(f"the decision block {decision} must lie in 1..{n_layers - 2} of {n_layers} blocks")
    folder = build_tiny_vlm("llava", out_dir / "model", seed=seed, num_hidden_layers=n_layers, hidden_size=128)
    vlm = load_vlm(folder)
    _plant(vlm, kind, noise, seed, decision)
    vlm.model.save_pretrained(folder)
    rows = _pairs(n_pairs, seed)
    pairs = _write_pairs(rows, out_dir / "pairs", seed)
    return PlantedModel(kind, folder, pairs, (decision,), tuple(r["refuses"] for r in rows), _REFUSAL[kind])
