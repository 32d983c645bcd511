"""Where a refusal forms, per text run and block: the refusal tokens K per run and block, the per-pair tests, and the
band drawn from their contrast between refused and answered runs. Pure functions of the measured lens trace.

    >>> w = k_weights(trace, first, second, refused, harmful, k_ids, cont_ids, cont_logprob)   # [n, L, P]
    >>> e = peak_rise(trace.pool_logprob.numpy(), w, refused)                                  # Evidence [n, L]
    >>> band, contrast = contrast_band(e.fires, refused, ~refused, margin=0.2)

Paper: Xu et al., ICLR 2025, §3 and Algorithm 1; the released code's rule; refusal direction after Arditi et al. 2024.
The measurements behind the default (the peak K-mass rise, continuation-disambiguated K, a contrast band) are in
``experiments/locate/REPORT.md`` and docs/science.md: on planted models, the organism and organism-smol it locates
the refusals at the planted blocks with no answered run firing, where Algorithm 1 fires on 0.60 of the organism's
benign runs and on answers that share the refusals' first token.

Every test returns an :class:`Evidence`: ``fires`` ``[n, L]`` (the test fires for run i at block l) and ``score``
``[n, L]`` (the continuous evidence behind it, for AUROCs; higher = more refusal-like). Block 0 never fires: every
test reads a change from block l−1 to block l.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safety_probe.analysis.scores import auroc_with_interval, share_with_interval, wilson_interval

#: A block whose largest candidate log-probability rise is below this (nats) changes nothing and never fires.
MIN_RISE = 1e-3
#: Score where no refusal token is among a test's candidates.
NO_K = -50.0


@dataclass(frozen=True)
class Evidence:
    """``fires`` ``[n, L]`` bool and ``score`` ``[n, L]`` float of one per-pair test."""

    fires: np.ndarray
    score: np.ndarray


# ------------------------------------------------------------------------------------------------------------- K
def k_weights(pool_ids: np.ndarray, n_layers: int, k_ids: list[int], first: np.ndarray, second: np.ndarray,
              refused: np.ndarray, cont_ids: np.ndarray | None = None,
              cont_logprob: np.ndarray | None = None) -> np.ndarray:
    """K as 0/1 weights ``[n, L, P]`` over ``pool_ids`` ``[P]``: every token of ``k_ids`` at every run and block,
    except an ambiguous one (``cont_ids`` ``[A]``), which counts at run i and block l only where the lens at position
    T+1 of (prompt_i + t), ``cont_logprob`` ``[n, A, L, P]``, puts at least as much mass on t's refusal continuations
    (the second tokens of the refusals opening with t) as on its answer continuations. ``first`` / ``second`` ``[n]``:
    each run's first two generated tokens (-1: none); ``refused`` ``[n]``: the verdicts."""
    index = {int(t): j for j, t in enumerate(pool_ids)}
    w = np.zeros((len(first), n_layers, len(pool_ids)))
    ambiguous = [] if cont_ids is None else [int(t) for t in cont_ids]
    for t in k_ids:
        if t in index and t not in ambiguous:
            w[:, :, index[t]] = 1.0
    for a, t in enumerate(ambiguous):
        if t not in index or t not in k_ids:
            continue
        opens = first == t
        to_refusal = [index[int(s)] for s in set(second[opens & refused]) if int(s) in index]
        to_answer = [index[int(s)] for s in set(second[opens & ~refused]) if int(s) in index]
        lp = cont_logprob[:, a]  # [n, L, P]
        w[:, :, index[t]] = np.exp(lp[..., to_refusal]).sum(-1) >= np.exp(lp[..., to_answer]).sum(-1)
    return w


def _weights_of(ids: np.ndarray, pool_ids: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The K weight ``[n, L, k]`` of token ids ``[n, L, k]`` (0 outside the pool)."""
    order = np.argsort(pool_ids)
    pos = np.clip(np.searchsorted(pool_ids[order], ids), 0, len(pool_ids) - 1)
    hit = pool_ids[order][pos] == ids
    return np.where(hit, np.take_along_axis(w, order[pos], axis=-1), 0.0)


def k_logmass(pool_logprob: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``[n, L]`` log P_l(K) = log Σ_t w_t p_l(t) from pool log-probs ``[n, L, P]``; -inf where K is empty."""
    with np.errstate(divide="ignore"):
        x = pool_logprob + np.log(w)
    top = x.max(-1, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return (safe + np.log(np.exp(x - safe).sum(-1, keepdims=True)))[..., 0]


def k_mass_rise(pool_logprob: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(log P_l(K), log P_l(K) − log P_{l−1}(K))``, each ``[n, L]``, block l's K on both sides (a rise of 0 at block
    0 and where K is empty)."""
    mass = k_logmass(pool_logprob, w)
    before = np.concatenate([mass[:, :1], k_logmass(pool_logprob[:, :-1], w[:, 1:])], 1)
    with np.errstate(invalid="ignore"):
        rise = np.nan_to_num(mass - before, nan=0.0, posinf=0.0, neginf=0.0)
    return mass, rise


# ------------------------------------------------------------------------------------------------- per-pair tests
def folds_of(y: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    """``[n]`` fold index 0..k−1, stratified by the boolean ``y`` ``[n]`` (seeded)."""
    rng, folds = np.random.default_rng(seed), np.zeros(len(y), dtype=np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        folds[rng.permutation(idx)] = np.arange(len(idx)) % k
    return folds


def answered_floor(mass: np.ndarray, refused: np.ndarray, q: float, k: int = 5, seed: int = 0) -> np.ndarray:
    """``[n, L]``: per run, the ``q``-quantile of ``mass`` ``[n, L]`` (probabilities) over the answered runs of the other
    folds (cross-fitted, so a run never sets its own floor); 0 without answered runs."""
    folds, floor = folds_of(refused, k, seed), np.zeros_like(mass)
    for f in range(k):
        others = (folds != f) & ~refused
        if others.any():
            floor[folds == f] = np.quantile(mass[others], q, axis=0)
    return floor


def peak_rise(pool_logprob: np.ndarray, w: np.ndarray, refused: np.ndarray, min_mass: float = 0.01,
              min_rise: float = 1.0, quantile: float = 0.99) -> Evidence:
    """The default test, Algorithm 1 turned around: a run fires at the block where log P_l(K) rises the most, among
    the blocks where P_l(K) ≥ ``min_mass`` and above the ``quantile`` of the answered runs' P_l(K) there
    (:func:`answered_floor`; 0 turns it off), if that peak rise is at least ``min_rise`` nats. Score: the rise where
    eligible, else 0. A refusal that is already on its way rises less in log terms than where it formed, so the
    readout block, where every refusal is completed, is not taken for where it forms."""
    mass, rise = k_mass_rise(pool_logprob, w)
    prob = np.exp(mass)  # 0 where K is empty: quantiles of probabilities stay finite
    eligible = prob >= min_mass
    if quantile:
        eligible &= prob > answered_floor(prob, refused, quantile)
    score = np.where(eligible, rise, 0.0)
    score[:, 0] = 0.0
    peak = score.max(1, keepdims=True)
    return Evidence((score >= peak) & (peak >= min_rise) & (score > 0), score)


def log_rise(top_ids: np.ndarray, top_logprob: np.ndarray, top_prev: np.ndarray, pool_ids: np.ndarray,
             w: np.ndarray, candidates: int = 10) -> Evidence:
    """Algorithm 1's test at every block, with a candidate floor: the largest log p_l − log p_{l−1} among the
    ``candidates`` most probable tokens of p_l is a K token (and a real rise, > :data:`MIN_RISE`). Score: the best K
    rise minus the best other rise among the candidates."""
    ids, rise = top_ids[..., :candidates], (top_logprob - top_prev)[..., :candidates]
    is_k = _weights_of(ids, pool_ids, w) >= 0.5
    best_k = np.where(is_k, rise, -np.inf).max(-1)
    best_other = np.where(~is_k, rise, -np.inf).max(-1)
    fires = (best_k >= best_other) & (np.maximum(best_k, best_other) > MIN_RISE)
    score = np.where(np.isfinite(best_k), best_k - np.where(np.isfinite(best_other), best_other, 0.0), NO_K)
    fires[:, 0], score[:, 0] = False, NO_K
    return Evidence(fires, score)


def verbatim(rise_argmax: np.ndarray, pool_ids: np.ndarray, w: np.ndarray) -> Evidence:
    """The paper's test verbatim: the argmax over the whole vocabulary of log p_l − log p_{l−1} is a K token."""
    fires = _weights_of(rise_argmax[..., None], pool_ids, w)[..., 0] >= 0.5
    fires[:, 0] = False
    return Evidence(fires, fires.astype(float))


def gain(gain_top_ids: np.ndarray, pool_ids: np.ndarray, w: np.ndarray, top: int = 5) -> Evidence:
    """The released code's test: a K token is among the ``top`` largest p_l − p_{l−1}. Score: top minus its rank."""
    is_k = _weights_of(gain_top_ids[..., :top], pool_ids, w) >= 0.5
    score = np.where(is_k.any(-1), top - is_k.argmax(-1), 0).astype(float)
    fires = is_k.any(-1)
    fires[:, 0], score[:, 0] = False, 0.0
    return Evidence(fires, score)


def rank_entry(top_ids: np.ndarray, pool_ids: np.ndarray, w: np.ndarray, rank: int = 1) -> Evidence:
    """A K token enters the ``rank`` most probable tokens of p_l (none was there at l−1): where the refusal wins."""
    inside = (_weights_of(top_ids[..., :rank], pool_ids, w) >= 0.5).any(-1)
    fires = np.zeros_like(inside)
    fires[:, 1:] = inside[:, 1:] & ~inside[:, :-1]
    return Evidence(fires, fires.astype(float))


def direction(last_state: np.ndarray, refused: np.ndarray, z0: float = 3.0, k: int = 5, seed: int = 0) -> Evidence:
    """The refusal direction per block (Arditi et al. 2024), of the block's step h_l − h_{l−1} at the last prompt
    position ``last_state`` ``[n, L, d]``, cross-fitted over ``k`` folds stratified by ``refused``: a held-out run's
    projection, standardised by the training answered runs, is at least ``z0``, and the training refused mean itself
    lies ``z0`` answered s.d. above theirs (a block that separates nothing never fires). Score: that z."""
    x = np.asarray(last_state, dtype=np.float64)
    x = np.concatenate([np.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)
    folds = folds_of(refused, k, seed)
    z, fires = np.zeros(x.shape[:2]), np.zeros(x.shape[:2], dtype=bool)
    for f in range(k):
        train, test = folds != f, folds == f
        if not (train & refused).any() or (train & ~refused).sum() < 2:
            continue
        r = x[train & refused].mean(0) - x[train & ~refused].mean(0)  # [L, d]
        r /= np.maximum(np.linalg.norm(r, axis=-1, keepdims=True), 1e-12)
        seen, held = np.einsum("nld,ld->nl", x[train], r), np.einsum("nld,ld->nl", x[test], r)
        mu, sd = seen[~refused[train]].mean(0), np.maximum(seen[~refused[train]].std(0, ddof=1), 1e-12)
        gate = (seen[refused[train]].mean(0) - mu) / sd >= z0
        z[test] = (held - mu) / sd
        fires[test] = (z[test] >= z0) & gate
    fires[:, 0], z[:, 0] = False, 0.0
    return Evidence(fires, z)


# ---------------------------------------------------------------------------------------------------------- bands
def share_difference(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """k1/n1 − k2/n2 with Newcombe's hybrid-score 95% interval (from the two Wilson intervals)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = (tuple(map(float, wilson_interval(p, n))) for p, n in ((p1, n1), (p2, n2)))
    d = p1 - p2
    return d, d - np.hypot(p1 - l1, u2 - p2), d + np.hypot(u1 - p1, p2 - l2)


def contrast_band(fires: np.ndarray, refused: np.ndarray, answered: np.ndarray, margin: float = 0.2,
                  min_support: int = 5) -> tuple[list[int], list[list[float]]]:
    """The blocks where refused runs fire more often than answered runs by ``margin`` at the lower end of the 95%
    interval of the difference of shares (Newcombe), and per block ``[difference, lower, upper]``; no band from fewer
    than ``min_support`` runs in either group (then the per-block rows are empty too)."""
    n1, n2 = int(refused.sum()), int(answered.sum())
    if min(n1, n2) < min_support:
        return [], []
    k1, k2 = fires[refused].sum(0), fires[answered].sum(0)
    rows = [list(share_difference(int(a), n1, int(b), n2)) for a, b in zip(k1, k2)]
    return [l for l, (_, lower, _) in enumerate(rows) if lower >= margin], rows


def share_band(fires: np.ndarray, share: float = 0.5) -> list[int]:
    """The blocks where at least ``share`` of the runs ``fires`` ``[n, L]`` fire (the earlier default, on refusals)."""
    return [int(l) for l in np.flatnonzero(fires.mean(0) >= share)] if len(fires) else []


# ------------------------------------------------------------------------------------------------- separation
def located(fires: np.ndarray, layers: list[int]) -> np.ndarray:
    """``[n]``: the test fires for the run at one of ``layers`` (block 0 excluded)."""
    cols = [l for l in layers if l >= 1]
    return fires[:, cols].any(1) if cols else np.zeros(len(fires), dtype=bool)


def separation(e: Evidence, groups: dict[str, np.ndarray], band: list[int], n_boot: int = 200) -> dict:
    """How well one test separates refused from answered text runs: per block the runs that fire in each group and
    the AUROC of its score (refused vs answered, with a stratified bootstrap interval), and per pair the shares that
    fire in ``band`` and anywhere (Wilson intervals) and the AUROC of each run's best score in the band."""
    refused, answered = groups["refused"], groups["answered"]
    in_band, anywhere = located(e.fires, band), located(e.fires, list(range(e.fires.shape[1])))
    best = e.score[:, [l for l in band if l >= 1]].max(1) if [l for l in band if l >= 1] else None
    return {
        "band": band,
        "per_layer": {"fired": {name: e.fires[mask].sum(0).tolist() for name, mask in groups.items()},
                      "n": {name: int(mask.sum()) for name, mask in groups.items()},
                      "auroc": [auroc_with_interval(e.score[refused, l], e.score[answered, l], n_boot)
                                for l in range(e.fires.shape[1])]},
        "in_band": {name: share_with_interval(int(in_band[mask].sum()), int(mask.sum())) for name, mask in groups.items()},
        "anywhere": {name: share_with_interval(int(anywhere[mask].sum()), int(mask.sum()))
                     for name, mask in groups.items()},
        "pair_auroc": auroc_with_interval(best[refused], best[answered]) if best is not None else None,
    }
