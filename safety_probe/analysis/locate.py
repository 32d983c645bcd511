"""Locate the safety layers: Algorithm 1, the released-code start/end rule and side-by-side locators.

Method: Xu et al., "Cross-Modal Safety Mechanism Transfer in Large Vision-Language Models", ICLR 2025
(arXiv 2410.12662), §3 and Algorithm 1; refusal direction after Arditi et al., "Refusal in Language Models
Is Mediated by a Single Direction", 2024.

Layer convention: layer ``l`` is the output of decoder block ``l``, 0-based (TransformerLens
``blocks.{l}.hook_resid_post``). The paper counts Hugging Face ``hidden_states`` indices, so the paper's
layer ``j`` is our ``l = j - 1``.

Every locator returns a :class:`~safety_probe.analysis.scores.LayerScores` (per-layer mean with a 95% band over pairs), so the
locators can be tabulated and plotted side by side. All functions are pure: they take tensors that the
caller computed (logit lens, attention, states) and never run a model. Per-pair functions treat pairs
independently, so callers may stream batches of pairs and concatenate the outputs (see :class:`LensStats`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from safety_probe.analysis.scores import BOOT_SEED, LayerScores, as_numpy, auroc_band, auroc_wins, column_layers
from safety_probe.models.layers import checked_layers
from safety_probe.probe.config import SAFETY_LAYER_RULES, LocateOptions
from safety_probe.probe.lens import LensTrace
from safety_probe.probe.refusal import refusal_logprob

#: Algorithm 1 takes the argmax of D_j over the lens' ``candidates`` most probable tokens at layer j: a floor at the
#: k-th largest probability, which adapts to vocabularies of 800 to 256k tokens and to flat early-layer lenses where a
#: fixed floor would not (docs/science.md gives the measurements behind the default k = 10).
ALG1_CANDIDATES = LocateOptions.candidates

# A block whose largest candidate log-ratio is below this (nats) changes nothing, so it cannot fire.
MIN_RISE = 1e-3


@dataclass(frozen=True)
class LensStats:
    """Per-pair logit-lens summaries of the text run; concatenate batches with :meth:`concat`.

    ``fires`` ``[n, L]`` bool: at layer l ≥ 1, the largest rise D_l = log p_l − log p_{l−1} among the lens'
    candidate tokens (see :data:`ALG1_CANDIDATES`) belongs to K and is a real rise (> :data:`MIN_RISE`).
    ``alg1`` ``[n]``: the first such layer (Algorithm 1 with the candidate floor); ``alg1_paper`` ``[n]``: the
    paper's rule verbatim, argmax over all tokens; ``code_start`` / ``code_end`` ``[n]``: the released code's
    rules. Per-pair layers are -1 where a rule never fires (use :meth:`as_layers` for ``int | None``).
    ``refusal_prob`` ``[n, L]`` is the lens probability mass on K per layer.
    """

    alg1: np.ndarray
    alg1_paper: np.ndarray
    fires: np.ndarray
    code_start: np.ndarray
    code_end: np.ndarray
    refusal_prob: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[LensStats]) -> LensStats:
        """Stack the per-pair outputs of several batches in order."""
        if not parts:
            raise ValueError("LensStats.concat needs at least one batch")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def subset(self, index: Sequence[int]) -> LensStats:
        """The rows of the pairs at ``index``."""
        idx = np.asarray(index, dtype=np.int64)
        return LensStats(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @property
    def decision_end(self) -> np.ndarray:
        """``[n]``: the last layer where the pair fires (-1 if it never does): where K stops rising the most."""
        n_layers = self.fires.shape[1]
        last = n_layers - 1 - np.argmax(self.fires[:, ::-1], axis=1)
        return np.where(self.fires.any(axis=1), last, -1)

    @staticmethod
    def as_layers(per_pair: np.ndarray) -> list[int | None]:
        """Per-pair layers with the -1 sentinel mapped to None."""
        return [int(v) if v >= 0 else None for v in per_pair]


def lens_stats(trace: LensTrace, refusal_ids: Collection[int], top_k: int = 5,
               candidates: int = ALG1_CANDIDATES) -> LensStats:
    """Algorithm 1 (floored and verbatim), its per-layer firing, the released-code layers and P(refusal) of n text
    runs, read from their :class:`~safety_probe.probe.lens.LensTrace` (blocks consecutive from 0).

    * Algorithm 1 (paper): D_l = log p_l − log p_{l−1}, l = 1..L−1; the first l whose argmax D_l is in K.
      Here the argmax runs over the ``candidates`` most probable tokens of p_l (0: all tokens, which makes
      ``alg1`` equal ``alg1_paper``). Where no layer fires the paper returns its layer 1; we return -1 (None).
    * Released code: start = first l ≥ 1 with a K token in the top-``top_k`` of p_l − p_{l−1};
      end = last l with argmax p_l in K.
    """
    n, n_layers = trace.rise_argmax.shape
    if n_layers < 2:
        raise ValueError(f"Algorithm 1 needs at least 2 consecutive layers, got {n_layers}")
    if candidates < 0:
        raise ValueError(f"candidates must be >= 0 (0 = all tokens), got {candidates}")
    if candidates > trace.top_ids.shape[-1]:
        raise ValueError(f"candidates {candidates} exceeds the {trace.top_ids.shape[-1]} lens tokens measured "
                         "(rerun probe-layers with a larger --lens-top)")
    k = torch.tensor(sorted(refusal_ids), dtype=torch.long)
    if k.numel() == 0:
        raise ValueError("refusal_ids must name at least one token")
    refusal_prob = refusal_logprob(trace.pool_logprob, trace.pool_columns(k.tolist())).exp().double()
    end = _last_true(torch.isin(trace.top_ids[..., 0], k))
    paper_fires = torch.isin(trace.rise_argmax, k)
    if candidates:
        rise = trace.top_logprob[..., :candidates] - trace.top_prev_logprob[..., :candidates]
        best = rise.max(-1)
        fires = torch.isin(trace.top_ids[..., :candidates].gather(-1, best.indices.unsqueeze(-1)).squeeze(-1), k)
        fires &= best.values > MIN_RISE
    else:
        fires = paper_fires.clone()
    fires[:, 0] = False
    start = _first_true(torch.isin(trace.gain_top_ids[..., :top_k], k).any(-1))
    return LensStats(*(t.numpy() for t in (_first_true(fires), _first_true(paper_fires), fires, start, end,
                                             refusal_prob)))


def _first_true(x: torch.Tensor) -> torch.Tensor:
    """``[n]``: per row of ``[n, L]`` bool the first True column, -1 where none."""
    return torch.where(x.any(-1), x.long().argmax(-1), -1)


def _last_true(x: torch.Tensor) -> torch.Tensor:
    """``[n]``: per row of ``[n, L]`` bool the last True column, -1 where none."""
    last = x.shape[1] - 1 - x.flip(-1).long().argmax(-1)
    return torch.where(x.any(-1), last, -1)


def code_start_end(stats: LensStats) -> dict[str, float | None]:
    """Released-code summary: mean start and end blocks over the pairs where each rule fired (None if none did)."""
    out: dict[str, float | None] = {}
    for key, per_pair in (("start", stats.code_start), ("end", stats.code_end)):
        fired = per_pair[per_pair >= 0]
        out[f"{key}_mean"] = float(fired.mean()) if fired.size else None
        out[f"{key}_n"] = int(fired.size)
    return out


def fire_share_scores(fires: np.ndarray, name: str = "alg1_fire_share", what: str = "harmful text runs") -> LayerScores:
    """Per layer, the share of pairs whose largest candidate rise is a refusal token ``[n, L]`` → mean and 95% band."""
    return LayerScores.from_pairs(name, np.asarray(fires, dtype=np.float64), None,
                                  f"share of {what} where a refusal token rises the most (Algorithm 1's test)")


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
    name: str = "patching_gain",
    what: str = "patching",
) -> LayerScores:
    """Activation-patching gain: P(refusal) after patching at each layer ``[n, L]`` minus unpatched ``[n]``."""
    patched_np, base = as_numpy(patched), as_numpy(baseline)
    if patched_np.ndim != 2 or base.shape != (patched_np.shape[0],):
        raise ValueError(f"patched must be [n, L] and baseline [n]; got {patched_np.shape} and {base.shape}")
    return LayerScores.from_pairs(name, patched_np - base[:, None], layers, f"P(refusal) after {what} minus unpatched")


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
        # The same seeded resamples at every layer, so the bands of layers are comparable.
        mean[layer], lower[layer], upper[layer] = auroc_band(auroc_wins(ph.numpy(), pb.numpy()), n_boot, seed)
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




def choose_safety_layers(
    n_layers: int,
    fires: np.ndarray | None = None,
    code_start: Sequence[int | None] = (),
    code_end: Sequence[int | None] = (),
    rule: str = "default",
    override: Sequence[int] | None = None,
    band_share: float = LocateOptions.band_share,
) -> list[int]:
    """The safety layers as a sorted list of block indices (0-based).

    Rules (per-pair inputs may hold None / -1 for pairs where the locator did not fire; those are skipped):

    * ``"default"`` (where the decision forms): every layer at which at least ``band_share`` of the pairs in
      ``fires`` ``[n, L]`` (the refusing pairs) fire, i.e. a refusal token is the largest rise among the lens'
      candidates. A block that changes nothing never fires; the readout block joins only if K rises most there.
    * ``"code"`` (released code): round-half-up(mean code start) .. round-half-up(mean code end).
    * ``override``: the given blocks, validated against ``n_layers``; wins over ``rule``.
    """
    if override is not None:
        chosen = checked_layers(override, n_layers, "safety layer")
        if not chosen:
            raise ValueError("override must name at least one layer")
        return chosen
    if rule == "default":
        if fires is None or len(fires) == 0:
            raise ValueError("no refusing pair to draw the band from; cannot choose safety layers")
        share = np.asarray(fires, dtype=np.float64).mean(0)
        chosen = [int(l) for l in np.flatnonzero(share >= band_share)]
        if not chosen:
            raise ValueError(f"no layer fires for {band_share:.0%} of the refusing pairs (largest share "
                             f"{share.max():.2f} at block {int(share.argmax())})")
        return chosen
    if rule == "code":
        s = _round_half_up(float(np.mean(_fired(code_start, "code_start"))))
        e = max(_round_half_up(float(np.mean(_fired(code_end, "code_end")))), s)
        if not 0 <= s <= e < n_layers:
            raise ValueError(f"rule 'code' gave layers {s}..{e}, outside 0..{n_layers - 1}")
        return list(range(s, e + 1))
    raise ValueError(f"unknown safety-layer rule {rule!r}; choose one of {SAFETY_LAYER_RULES}")


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


def lower_median(per_pair: Sequence[int | None]) -> int | None:
    """The lower median of the per-pair layers that fired (an actual layer, never a half-way value); None if none did."""
    values = np.sort([int(v) for v in per_pair if v is not None and v >= 0])
    return int(values[(values.size - 1) // 2]) if values.size else None


def _round_half_up(x: float) -> int:
    # Python's round() rounds half to even (round(10.5) == 10); layer choices should not depend on parity.
    return math.floor(x + 0.5)




PATCHING_CURVES = {"tail": "tail_patching_gain", "caption": "patching_gain"}
"""The patching curves of a layers.json that :func:`patching_band` reads: the prompt after the image (tail) and the
image tokens moved onto the caption's mean (caption)."""


def patching_band(layers_json: dict, curve: str = "tail", share: float = 0.5) -> list[int]:
    """The blocks where a patching curve of a ``probe-layers`` layers.json restores at least ``share`` of its largest
    gain below the readout block (``scores.<curve>.per_layer``; the readout block is left out: its output at the last
    position is the answer itself, so aligning it would distil the text run's answer rather than align states).

    ``curve``: ``tail`` (the blocks the tail guide aligns) or ``caption`` (where the image tokens' pooled state carries
    the refusal). Raises ValueError when the file has no such curve or it restores nothing.
    """
    if curve not in PATCHING_CURVES:
        raise ValueError(f"unknown patching curve {curve!r}: use {' or '.join(PATCHING_CURVES)}")
    key = PATCHING_CURVES[curve]
    scores = layers_json.get("scores", {})
    if key not in scores:
        raise ValueError(f"the layers.json has no {key} curve (run probe-layers with --patch-pairs)")
    gain = {int(k): float(v) for k, v in scores[key]["per_layer"].items()}
    readout = int(layers_json["n_layers"]) - 1
    below = {k: v for k, v in gain.items() if k < readout}
    best = max(below.values(), default=0.0)
    if best <= 0:
        raise ValueError(f"{key}: patching restores no refusal below the readout block; nothing to align")
    return [k for k in sorted(below) if below[k] >= share * best]
