"""Locate the safety layers: Algorithm 1, the released-code start/end rule and side-by-side locators.

Method: Xu et al., "Cross-Modal Safety Mechanism Transfer in Large Vision-Language Models", ICLR 2025
(arXiv 2410.12662), §3 and Algorithm 1; refusal direction after Arditi et al., "Refusal in Language Models
Is Mediated by a Single Direction", 2024.

Layer convention: layer ``l`` is the output of decoder block ``l``, 0-based (TransformerLens
``blocks.{l}.hook_resid_post``). The paper counts Hugging Face ``hidden_states`` indices, so the paper's
layer ``j`` is our ``l = j - 1``.

Every locator returns a :class:`~safety_probe.scores.LayerScores` (per-layer mean with a 95% band over pairs), so the
locators can be tabulated and plotted side by side. All functions are pure: they take tensors that the
caller computed (logit lens, attention, states) and never run a model. Per-pair functions treat pairs
independently, so callers may stream batches of pairs and concatenate the outputs (see :class:`LensStats`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from safety_probe.layers import check_range
from safety_probe.scores import BOOT_SEED, LayerScores, as_numpy, column_layers

#: Phrases whose first sub-token enters the refusal token set K (paper §3: "Sorry", "I" as in
#: "I cannot", "cannot", "unable", "apolog…"), plus the keyword-judge prefixes of §5.
DEFAULT_REFUSAL_PHRASES: tuple[str, ...] = (
    "Sorry",
    "sorry",
    "I'm sorry",
    "I am sorry",
    "I cannot",
    "I can't",
    "cannot",
    "unable",
    "I apologize",
    "apologize",
    "Apologies",
    "Unfortunately",
)

# A first sub-token shorter than this that is not the whole word ("a" of "apologize" in a small BPE)
# would stand for far more than refusals, so it stays out of K.
MIN_PIECE_CHARS = 3

def refusal_token_ids(
    tokenizer,
    phrases: Sequence[str] = DEFAULT_REFUSAL_PHRASES,
    extra_phrases: Sequence[str] = (),
) -> dict[int, str]:
    """Refusal token set K: token id → token string, from the first sub-token of each phrase's variants.

    Works with any Hugging Face tokenizer (slow or fast, byte-level BPE or SentencePiece). For each phrase
    (``extra_phrases`` adds e.g. the model's own refusal sentence) it takes the first non-blank sub-token of
    the phrase encoded as is and with a leading space, plus the first word looked up directly in the
    vocabulary bare and with the SentencePiece ``▁`` / byte-level ``Ġ`` space marker. Unknown tokens are
    dropped, and so is a sub-token that is neither the whole first word nor ``MIN_PIECE_CHARS`` long.
    """
    vocab: Mapping[str, int] = tokenizer.get_vocab()
    unk = getattr(tokenizer, "unk_token_id", None)
    ids: set[int] = set()
    for phrase in (*phrases, *extra_phrases):
        phrase = phrase.strip()
        if not phrase:
            continue
        word = phrase.split()[0]
        for text in (phrase, " " + phrase):
            first = _first_content_token(tokenizer, text)
            piece = tokenizer.decode([first]).strip() if first is not None else ""
            if piece == word or len(piece) >= MIN_PIECE_CHARS:
                ids.add(first)
        ids.update(vocab[w] for w in (word, "▁" + word, "Ġ" + word) if w in vocab)
    ids.discard(unk)
    return {i: tokenizer.convert_ids_to_tokens(i) for i in sorted(ids)}


def _first_content_token(tokenizer, text: str) -> int | None:
    """First sub-token of ``text`` that is not a bare space marker (SentencePiece may emit a lone ``▁``)."""
    for i in tokenizer.encode(text, add_special_tokens=False):
        if tokenizer.decode([i]).strip():
            return int(i)
    return None


@dataclass(frozen=True)
class LensStats:
    """Per-pair logit-lens summaries of the text run; concatenate batches with :meth:`concat`.

    ``alg1`` / ``code_start`` / ``code_end`` hold a block index per pair, or -1 where the rule never fires
    (use :meth:`as_layers` for ``int | None``). ``refusal_prob`` ``[n, L]`` is the lens probability mass
    on K per layer.
    """

    alg1: np.ndarray
    code_start: np.ndarray
    code_end: np.ndarray
    refusal_prob: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[LensStats]) -> LensStats:
        """Stack the per-pair outputs of several batches in order."""
        if not parts:
            raise ValueError("LensStats.concat needs at least one batch")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    @staticmethod
    def as_layers(per_pair: np.ndarray) -> list[int | None]:
        """Per-pair layers with the -1 sentinel mapped to None."""
        return [int(v) if v >= 0 else None for v in per_pair]


def lens_stats(lens_logprobs: torch.Tensor, refusal_ids: Collection[int], top_k: int = 5) -> LensStats:
    """Algorithm 1, the released-code start/end layers and P(refusal) per pair from lens log-probs ``[n, L, V]``.

    ``lens_logprobs[i, l]`` is the log-softmax of the logit lens at the last prompt position after block
    ``l``; the L layers must be consecutive from block 0. Memory stays at a few ``[n, V]`` slices.

    * Algorithm 1 (paper): D_l = log p_l − log p_{l−1}, l = 1..L−1; the first l whose argmax D_l is in K.
      Where no layer fires the paper returns its layer 1 (our block 0); we return -1 (None) instead.
    * Released code: start = first l ≥ 1 with a K token in the top-``top_k`` of p_l − p_{l−1};
      end = last l with argmax p_l in K.
    """
    lp = torch.as_tensor(lens_logprobs)
    if lp.ndim != 3:
        raise ValueError(f"lens_logprobs must be [n_pairs, n_layers, vocab], got shape {tuple(lp.shape)}")
    n, n_layers, vocab = lp.shape
    if n_layers < 2:
        raise ValueError(f"Algorithm 1 needs at least 2 consecutive layers, got {n_layers}")
    dev = lp.device  # works where the lens ran (GPU or CPU); only [n]-sized results come back
    k = torch.tensor(sorted(refusal_ids), dtype=torch.long, device=dev)
    if k.numel() == 0 or int(k.min()) < 0 or int(k.max()) >= vocab:
        raise ValueError(f"refusal_ids must be non-empty token ids in [0, {vocab})")
    alg1, start, end = (torch.full((n,), -1, dtype=torch.long, device=dev) for _ in range(3))
    refusal_prob = torch.empty(n, n_layers, dtype=torch.float64, device=dev)
    prev_lp = prev_p = None
    for layer in range(n_layers):
        cur_lp = lp[:, layer].float()
        cur_p = cur_lp.exp()
        refusal_prob[:, layer] = cur_p[:, k].sum(-1).double()
        end = torch.where(torch.isin(cur_p.argmax(-1), k), layer, end)
        if prev_lp is not None:
            hit = torch.isin((cur_lp - prev_lp).argmax(-1), k)
            alg1 = torch.where((alg1 < 0) & hit, layer, alg1)
            in_top = torch.isin((cur_p - prev_p).topk(min(top_k, vocab), dim=-1).indices, k).any(-1)
            start = torch.where((start < 0) & in_top, layer, start)
        prev_lp, prev_p = cur_lp, cur_p
    return LensStats(*(t.cpu().numpy() for t in (alg1, start, end, refusal_prob)))


def algorithm1_layers(lens_logprobs: torch.Tensor, refusal_ids: Collection[int]) -> list[int | None]:
    """Algorithm 1 per pair from lens log-probs ``[n, L, V]``: first block l ≥ 1 with argmax D_l ∈ K, else None."""
    return LensStats.as_layers(lens_stats(lens_logprobs, refusal_ids).alg1)


def code_start_end(stats: LensStats) -> dict[str, float | None]:
    """Released-code summary: mean start and end blocks over the pairs where each rule fired (None if none did)."""
    out: dict[str, float | None] = {}
    for key, per_pair in (("start", stats.code_start), ("end", stats.code_end)):
        fired = per_pair[per_pair >= 0]
        out[f"{key}_mean"] = float(fired.mean()) if fired.size else None
        out[f"{key}_n"] = int(fired.size)
    return out


def refusal_prob_scores(refusal_prob: np.ndarray, layers: Sequence[int] | None = None) -> LayerScores:
    """P(refusal) per layer: lens probability mass on K ``[n, L]`` → mean and 95% band over pairs."""
    return LayerScores.from_pairs(
        "refusal_prob", refusal_prob, layers, "logit-lens probability of the refusal tokens K (text run)"
    )


def attention_mass_scores(
    attention_mass: np.ndarray | torch.Tensor, layers: Sequence[int] | None = None
) -> LayerScores:
    """Last token's attention mass on caption tokens, head-averaged, ``[n, L]`` → mean and 95% band."""
    return LayerScores.from_pairs(
        "attention_mass", attention_mass, layers, "last-token attention on caption tokens, mean over heads"
    )


def patching_gain_scores(
    patched: np.ndarray | torch.Tensor,
    baseline: np.ndarray | torch.Tensor,
    layers: Sequence[int] | None = None,
) -> LayerScores:
    """Activation-patching gain: P(refusal) after patching at each layer ``[n, L]`` minus unpatched ``[n]``."""
    patched_np, base = as_numpy(patched), as_numpy(baseline)
    if patched_np.ndim != 2 or base.shape != (patched_np.shape[0],):
        raise ValueError(f"patched must be [n, L] and baseline [n]; got {patched_np.shape} and {base.shape}")
    return LayerScores.from_pairs(
        "patching_gain", patched_np - base[:, None], layers, "P(refusal) after patching minus unpatched"
    )


def refusal_direction(
    harmful: torch.Tensor,
    benign: torch.Tensor,
    layers: Sequence[int] | None = None,
    n_boot: int = 200,
    seed: int = BOOT_SEED,
) -> tuple[LayerScores, torch.Tensor]:
    """Difference-in-means refusal direction per layer and its cross-fitted AUROC (Arditi et al. 2024).

    ``harmful`` ``[n_h, L, d]`` and ``benign`` ``[n_b, L, d]`` are last-token states of text prompts.
    Returns (scores, directions): directions ``[L, d]`` = mean_harmful − mean_benign on all prompts
    (unnormalised; normalise for directional ablation). The score is the AUROC of harmful vs benign
    projections onto r̂_l, cross-fitted over two seeded halves of each class (the direction is fitted on
    one half and the other half is projected), so noise layers score ≈ 0.5 instead of trivially 1.
    The band is a stratified bootstrap of the out-of-fold projections.
    """
    h, b = torch.as_tensor(harmful), torch.as_tensor(benign)
    if h.ndim != 3 or b.ndim != 3 or h.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"harmful {tuple(h.shape)} and benign {tuple(b.shape)} must be [n, L, d] with equal L, d"
        )
    if min(h.shape[0], b.shape[0]) < 2:
        raise ValueError("refusal_direction needs at least 2 harmful and 2 benign prompts for cross-fitting")
    n_h, n_b, n_layers = h.shape[0], b.shape[0], h.shape[1]
    layers = column_layers(layers, n_layers, "refusal_direction")
    gen = torch.Generator().manual_seed(seed)
    folds_h, folds_b = torch.randperm(n_h, generator=gen) % 2, torch.randperm(n_b, generator=gen) % 2
    rng = np.random.default_rng(seed)
    counts_h = rng.multinomial(n_h, np.full(n_h, 1.0 / n_h), size=n_boot).astype(np.float64)
    counts_b = rng.multinomial(n_b, np.full(n_b, 1.0 / n_b), size=n_boot).astype(np.float64)
    mean, lower, upper = (np.empty(n_layers) for _ in range(3))
    directions = torch.empty(n_layers, h.shape[2])
    for layer in range(n_layers):  # one layer at a time keeps float64 copies to [n, d]
        hl, bl = h[:, layer].double(), b[:, layer].double()
        directions[layer] = (hl.mean(0) - bl.mean(0)).float()
        ph, pb = torch.empty(n_h, dtype=torch.float64), torch.empty(n_b, dtype=torch.float64)
        for f in (0, 1):
            r = hl[folds_h != f].mean(0) - bl[folds_b != f].mean(0)  # fitted on the other fold
            r_hat = r / r.norm().clamp_min(1e-12)
            ph[folds_h == f], pb[folds_b == f] = hl[folds_h == f] @ r_hat, bl[folds_b == f] @ r_hat
        # Mann–Whitney form of the AUROC; ties count one half.
        wins = ((ph[:, None] > pb[None, :]) + 0.5 * (ph[:, None] == pb[None, :])).numpy()
        mean[layer] = wins.mean()
        boot = ((counts_h @ wins) * counts_b).sum(1) / (n_h * n_b)
        lower[layer], upper[layer] = np.percentile(boot, [2.5, 97.5])
    scores = LayerScores(
        "refusal_direction_auroc",
        layers,
        mean,
        lower,
        upper,
        None,
        "cross-fitted AUROC of harmful vs benign projections on the difference-in-means direction",
    )
    return scores, directions


SAFETY_LAYER_RULES = ("default", "code")


def choose_safety_layers(
    n_layers: int,
    alg1: Sequence[int | None] = (),
    code_start: Sequence[int | None] = (),
    code_end: Sequence[int | None] = (),
    rule: str = "default",
    override: Sequence[int] | None = None,
) -> list[int]:
    """The safety layers as a sorted list of block indices (0-based).

    Rules (per-pair inputs may hold None / -1 for pairs where the locator did not fire; those are skipped):

    * ``"default"``: s = lower median of the Algorithm-1 layers, e = round-half-up(mean code end layer),
      e = max(e, s); returns s..e.
    * ``"code"`` (released code): round-half-up(mean code start) .. round-half-up(mean code end).
    * ``override``: the given blocks, validated against ``n_layers``; wins over ``rule``.
    """
    if override is not None:
        chosen = check_range(override, n_layers, "safety layer")
        if not chosen:
            raise ValueError("override must name at least one layer")
        return chosen
    if rule == "default":
        s = _lower_median(_fired(alg1, "alg1"))
        e = max(_round_half_up(float(np.mean(_fired(code_end, "code_end")))), s)
    elif rule == "code":
        s = _round_half_up(float(np.mean(_fired(code_start, "code_start"))))
        e = max(_round_half_up(float(np.mean(_fired(code_end, "code_end")))), s)
    else:
        raise ValueError(f"unknown safety-layer rule {rule!r}; choose one of {SAFETY_LAYER_RULES}")
    if not 0 <= s <= e < n_layers:
        raise ValueError(f"rule {rule!r} gave layers {s}..{e}, outside 0..{n_layers - 1}")
    return list(range(s, e + 1))


def layer_histogram(per_pair_layers: Sequence[int | None], n_layers: int) -> dict[str, list[int] | int]:
    """Counts of per-pair layers → ``{"counts": [L] (index = block), "n_none": pairs with no layer}``."""
    values = [int(v) for v in per_pair_layers if v is not None and v >= 0]
    bad = [v for v in values if v >= n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} is out of range: valid layers are 0..{n_layers - 1}")
    counts = np.bincount(np.asarray(values, dtype=np.int64), minlength=n_layers)
    return {"counts": [int(c) for c in counts], "n_none": len(per_pair_layers) - len(values)}


def _fired(per_pair: Sequence[int | None], what: str) -> np.ndarray:
    values = np.asarray([v for v in per_pair if v is not None and v >= 0], dtype=np.int64)
    if values.size == 0:
        raise ValueError(f"no pair has a {what} layer; cannot choose safety layers (pass override=...)")
    return values


def _lower_median(values: np.ndarray) -> int:
    return int(np.sort(values)[(values.size - 1) // 2])


def _round_half_up(x: float) -> int:
    # Python's round() rounds half to even (round(10.5) == 10); layer choices should not depend on parity.
    return math.floor(x + 0.5)


