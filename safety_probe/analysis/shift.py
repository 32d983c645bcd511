"""The semantic shift between image and caption hidden states, per layer, with baselines.

Method: Xu et al., "Cross-Modal Safety Mechanism Transfer in Large Vision-Language Models", ICLR 2025
(arXiv 2410.12662), §3: cos(mean image-token state, mean caption-token state) per layer, averaged over
pairs. Raw cosines of residual streams are inflated by a large component shared by all inputs, so this
module also reports a mismatched-pair baseline, the paired matched − mismatched gap, a mean-centred cosine
and linear CKA (Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019).
Linear CKA is biased upwards when d ≫ n (two independent representations can score near 1), so it comes
with the debiased estimator (the unbiased HSIC of Song et al., "Feature Selection via Dependence
Maximization", JMLR 2012, as used for CKA by Nguyen, Raghu & Kornblith, "Do Wide and Deep Networks Learn
the Same Things?", ICLR 2021) and, for each of the two, its own permutation null (captions re-paired with images
at random, the same re-pairings for both): a statistic is only ever read against its own null.

Inputs are the recorder's float tensors ``[n_pairs, n_layers, d_model]``; layer l = output of block l.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from safety_probe.analysis.scores import BOOT_SEED, LayerScores, column_layers, wilson_interval

Num = TypeVar("Num", torch.Tensor, np.ndarray, float)
MEAN_KEYS = ("image_mean", "caption_mean")
LAST_KEYS = ("image_last", "caption_last")
# Random re-pairings of captions with images for the CKA null; 200 resolve p down to 1/201.
N_PERM = 200
# The fewest pairs each metric needs: a mismatched or centred baseline needs a second pair; CKA's jackknife
# needs 3 (with 2 pairs every centred Gram is rank one and CKA is 1), and so does a re-pairing to mean
# anything; the unbiased HSIC divides by n − 3, so its jackknife (n − 1 pairs) needs 5.
MIN_PAIRS: dict[str, int] = {
    "cos_matched": 1,
    "cos_last": 1,
    "cos_mismatched": 2,
    "cos_centred": 2,
    "cos_gap": 2,
    "cka": 3,
    "cka_null": 3,
    "cka_p": 3,
    "cka_debiased": 5,
    "cka_debiased_null": 5,
    "cka_debiased_p": 5,
}


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` with no fixed point (seeded, by rejection)."""
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2, got {n}")
    rng = np.random.default_rng(seed)
    while True:  # ~e tries on average
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def pair_cosine(a: torch.Tensor, b: torch.Tensor, centre: bool = False) -> torch.Tensor:
    """Cosine between matching rows per layer: ``[n, L, d]`` × ``[n, L, d]`` → ``[n, L]`` (float64).

    ``centre=True`` first subtracts, per layer, each input's mean over the n rows.
    """
    out = torch.empty(a.shape[:2], dtype=torch.float64)
    for layer in range(a.shape[1]):  # one layer at a time keeps float64 copies to [n, d]
        x, y = a[:, layer].double(), b[:, layer].double()
        if centre:
            x, y = x - x.mean(0), y - y.mean(0)
        out[:, layer] = torch.nn.functional.cosine_similarity(x, y, dim=-1, eps=1e-12)
    return out


def mismatched_cosine(
    image: torch.Tensor, caption: torch.Tensor, mismatch: str = "all", seed: int = 0
) -> torch.Tensor:
    """Baseline cosine of each image with other pairs' captions ``[n, L, d]`` → ``[n, L]``.

    ``mismatch="all"``: per image, the mean cosine over all other captions (every off-diagonal pair);
    ``"derangement"``: one seeded fixed-point-free partner per image.
    """
    n = image.shape[0]
    if mismatch == "derangement":
        return pair_cosine(image, caption[torch.from_numpy(derangement(n, seed))])
    if mismatch != "all":
        raise ValueError(f"mismatch must be 'all' or 'derangement', got {mismatch!r}")
    if n < 2:
        raise ValueError("a mismatched baseline needs at least 2 pairs")
    out = torch.empty(n, image.shape[1], dtype=torch.float64)
    for layer in range(image.shape[1]):
        img = torch.nn.functional.normalize(image[:, layer].double(), dim=-1, eps=1e-12)
        cap = torch.nn.functional.normalize(caption[:, layer].double(), dim=-1, eps=1e-12)
        sims = img @ cap.T  # [n, n]
        out[:, layer] = (sims.sum(1) - sims.diagonal()) / (n - 1)
    return out


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same n examples, ``[n, d_x]`` and ``[n, d_y]``."""
    return float(_cka(_gram(x), _gram(y))[0])


def debiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Debiased linear CKA (unbiased HSIC) of ``[n, d_x]`` and ``[n, d_y]``, n >= 4; ≈ 0 for independent ones."""
    return float(_cka(_gram(x), _gram(y), unbiased=True)[0])


def cka_scores(
    image: torch.Tensor,
    caption: torch.Tensor,
    layers: Sequence[int] | None = None,
    n_perm: int = N_PERM,
    seed: int = BOOT_SEED,
) -> dict[str, LayerScores]:
    """Linear CKA across pairs per layer between ``[n, L, d]`` states, with its debiased value and their nulls.

    Returns ``cka`` and, for n >= 5, ``cka_debiased``, each with a jackknife 95% band (± 1.96 leave-one-out
    standard errors; a pair bootstrap duplicates pairs, which inflates CKA so much that its band can miss
    the estimate). With ``n_perm > 0``, for each of the two statistics ``{name}_null``, its mean over ``n_perm``
    seeded re-pairings of captions with images (band: their 2.5–97.5 percentiles), and ``{name}_p``, the one-sided
    permutation p-value (1 + #{null >= observed}) / (n_perm + 1) (band: Wilson 95% interval of its Monte Carlo
    error); both statistics see the same re-pairings. One Gram matrix per modality and layer serves all of them.
    """
    n, n_layers = image.shape[:2]
    if n < MIN_PAIRS["cka"]:
        raise ValueError(f"CKA across pairs with a jackknife band needs at least {MIN_PAIRS['cka']} pairs")
    if n_perm < 0:
        raise ValueError(f"n_perm must be >= 0, got {n_perm}")
    layers = column_layers(layers, n_layers, "cka")
    debias = n >= MIN_PAIRS["cka_debiased"]
    # Row 0 is the observed pairing, so the p-value's +1 correction is the observed value counting itself.
    rng = np.random.default_rng(seed)
    perms = np.stack([np.arange(n), *(rng.permutation(n) for _ in range(n_perm))])
    cka, debiased = np.empty((3, n_layers)), np.empty((3, n_layers))
    null, debiased_null = np.empty((n_perm + 1, n_layers)), np.empty((n_perm + 1, n_layers))
    for layer in range(n_layers):
        gx, gy = _gram(image[:, layer]), _gram(caption[:, layer])
        cka[:, layer] = _jackknife(_cka(gx, gy))
        if debias:
            debiased[:, layer] = _jackknife(_cka(gx, gy, unbiased=True))
        if n_perm:
            null[:, layer], debiased_null[:, layer] = _repaired_cka(gx, gy, perms)
    about = "linear CKA across pairs between image-token and caption-token mean states"
    out = {"cka": LayerScores("cka", layers, *cka, description=f"{about} (Kornblith et al. 2019)")}
    if debias:
        out["cka_debiased"] = LayerScores(
            "cka_debiased", layers, *debiased, description=f"debiased {about} (unbiased HSIC; Nguyen et al. 2021)"
        )
    if n_perm:
        out.update(_null_scores("cka", "linear CKA", null, layers, seed))
        if debias:
            out.update(_null_scores("cka_debiased", "debiased linear CKA", debiased_null, layers, seed))
    return out


def _null_scores(name: str, what: str, null: np.ndarray, layers: list[int], seed: int) -> dict[str, LayerScores]:
    """``{name}_null`` and ``{name}_p`` from ``null`` ``[1 + n_perm, L]`` (row 0: the observed pairing)."""
    n_perm = null.shape[0] - 1
    draws = null[1:]
    lower, upper = np.percentile(draws, [2.5, 97.5], axis=0)
    p = np.where(np.isnan(null[0]), np.nan, (null >= null[0]).sum(0) / (n_perm + 1))  # NaN: constant states
    return {
        f"{name}_null": LayerScores(
            f"{name}_null", layers, draws.mean(0), lower, upper,
            description=f"{what} with captions re-paired at random ({n_perm} permutations, seed {seed})",
        ),
        f"{name}_p": LayerScores(
            f"{name}_p", layers, p, *wilson_interval(p, n_perm + 1),
            description=f"permutation p-value of {name} against {name}_null (one-sided, +1 corrected)",
        ),
    }


@dataclass(frozen=True)
class ShiftResult:
    """The shift metrics ``n_pairs`` allow (``scores``) and, per metric left out, why (``skipped``)."""

    scores: dict[str, LayerScores]
    skipped: dict[str, str]


def semantic_shift(
    states: Mapping[str, torch.Tensor],
    layers: Sequence[int] | None = None,
    mismatch: str = "all",
    seed: int = BOOT_SEED,
    n_perm: int = N_PERM,
) -> ShiftResult:
    """All shift metrics from the recorder's states (each ``[n_pairs, n_layers, d_model]``).

    Needs ``image_mean`` and ``caption_mean``; ``image_last`` and ``caption_last`` are optional. Scores:

    * ``cos_matched``: cos(image_mean_i, caption_mean_i) per pair (the paper's §3 metric).
    * ``cos_mismatched``: the same with other pairs' captions (see :func:`mismatched_cosine`); the
      level a shared residual-stream component alone produces.
    * ``cos_gap``: cos_matched_i − cos_mismatched_i per pair, with a paired bootstrap band.
    * ``cos_centred``: matched cosine after subtracting, per layer, each modality's mean over pairs; this
      removes the shared component (chance ≈ 0), so what remains is pair-specific agreement.
    * ``cka``, ``cka_debiased``: linear CKA across pairs between image_mean and caption_mean and its debiased
      value, each with its own permutation null and p-value (``cka_null``, ``cka_p``, ``cka_debiased_null``,
      ``cka_debiased_p``; see :func:`cka_scores`); ``n_perm=0`` turns the nulls off, ``seed`` seeds them and the
      derangement.
    * ``cos_last`` (when the *_last states are given): cos(image_last_i, caption_last_i), the state the
      next-token prediction (and the refusal) is read from.

    A metric that needs more pairs than given (:data:`MIN_PAIRS`) is left out and named in ``skipped``.
    """
    for key in MEAN_KEYS:
        if key not in states:
            raise KeyError(f"semantic_shift needs {MEAN_KEYS}; missing {key!r}")
    keys = [*MEAN_KEYS, *(k for k in LAST_KEYS if k in states)]
    if len(keys) == 3:
        raise KeyError(f"give both {LAST_KEYS} or neither; got only {keys[2]!r}")
    t = {k: torch.as_tensor(states[k]) for k in keys}
    shapes = {k: tuple(v.shape) for k, v in t.items()}
    if len(set(shapes.values())) != 1 or len(shapes["image_mean"]) != 3:
        raise ValueError(f"states must all be [n_pairs, n_layers, d_model] of one shape; got {shapes}")
    image, caption = t["image_mean"], t["caption_mean"]
    n = image.shape[0]
    layers = column_layers(layers, image.shape[1], "semantic_shift")
    matched = pair_cosine(image, caption)
    out = {
        "cos_matched": LayerScores.from_pairs(
            "cos_matched", matched, layers, "cos(image-token mean, caption-token mean)"
        ),
    }
    if n >= MIN_PAIRS["cos_mismatched"]:
        mismatched = mismatched_cosine(image, caption, mismatch, seed)
        out["cos_mismatched"] = LayerScores.from_pairs(
            "cos_mismatched", mismatched, layers, f"cosine with mismatched captions ({mismatch})"
        )
        out["cos_gap"] = LayerScores.from_pairs(
            "cos_gap", matched - mismatched, layers, "cos_matched − cos_mismatched per pair (paired band)"
        )
        out["cos_centred"] = LayerScores.from_pairs(
            "cos_centred",
            pair_cosine(image, caption, centre=True),
            layers,
            "matched cosine after subtracting each modality's mean over pairs",
        )
    if n >= MIN_PAIRS["cka"]:
        out.update(cka_scores(image, caption, layers, n_perm, seed))
    if "image_last" in t:
        out["cos_last"] = LayerScores.from_pairs(
            "cos_last",
            pair_cosine(t["image_last"], t["caption_last"]),
            layers,
            "cos(last prompt position, image run; last prompt position, text run)",
        )
    wanted = [m for m in MIN_PAIRS if m != "cos_last" or "image_last" in t]
    skipped = {
        m: f"needs at least {MIN_PAIRS[m]} pairs, got {n}" if n < MIN_PAIRS[m] else "turned off (n_perm=0)"
        for m in wanted
        if m not in out
    }
    return ShiftResult(out, skipped)


def _gram(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x @ x.T


def _hollow(g: torch.Tensor) -> torch.Tensor:
    return g - torch.diag(g.diagonal())


def _cka(gx: torch.Tensor, gy: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """CKA of Grams ``[n, n]`` over all n examples (entry 0) and without example k (entry k + 1) → ``[n + 1]``.

    ``unbiased`` uses the unbiased HSIC (HSIC₁ of Song et al. 2012) on the Grams with their diagonals zeroed.
    """
    if unbiased:
        gx, gy = _hollow(gx), _hollow(gy)
    hxy, hxx, hyy = (_hsic(*_loo_sums(a, b), unbiased) for a, b in ((gx, gy), (gx, gx), (gy, gy)))
    denom = torch.sqrt(hxx * hyy)
    return torch.where(denom > 0, hxy / denom.clamp_min(1e-300), torch.nan)


def _hsic(trace: Num, cross: Num, totals: Num, m: Num, unbiased: bool) -> Num:
    """Either HSIC estimator of Grams a, b from their sums (:func:`_loo_sums`) over m examples, elementwise (tensors
    or arrays)."""
    if unbiased:  # a, b hollow; needs m >= 4
        return (trace + totals / ((m - 1) * (m - 2)) - 2 * cross / (m - 2)) / (m * (m - 3))
    return trace - 2 * cross / m + totals / m**2  # tr(HaHb), H the centring matrix; HSIC's 1/(m−1)² cancels


def _loo_sums(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Σ_ij a_ij b_ij, Σ_i (a1)_i (b1)_i, (1ᵀa1)(1ᵀb1) and m of symmetric ``[n, n]`` a, b, each ``[n + 1]``: over
    all n examples (entry 0) and without example k (entry k + 1)."""
    # Leaving k out removes row and column k from every sum, so all n jackknife samples cost O(n²), not O(n³).
    n, ab, ra, rb = a.shape[0], a * b, a.sum(1), b.sum(1)
    rab, da, db = ab.sum(1), a.diagonal(), b.diagonal()
    trace = torch.cat([ab.sum().reshape(1), ab.sum() - 2 * rab + ab.diagonal()])
    # Without k, row j sums to ra_j − a_jk; the products of those over j ≠ k, for every k at once.
    cross = torch.cat([(ra @ rb).reshape(1), ra @ rb - b @ ra - a @ rb + rab - (ra - da) * (rb - db)])
    totals = torch.cat([(a.sum() * b.sum()).reshape(1), (a.sum() - 2 * ra + da) * (b.sum() - 2 * rb + db)])
    return trace, cross, totals, torch.tensor([n, *[n - 1] * n], dtype=a.dtype)


def _jackknife(values: torch.Tensor) -> tuple[float, float, float]:
    """(estimate, lower, upper) from ``[estimate, leave-one-out values...]`` ``[n + 1]``: ± 1.96 jackknife SEs."""
    est, loo = float(values[0]), values[1:].numpy()
    n = loo.shape[0]
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    return est, est - 1.96 * se, est + 1.96 * se


def _repaired_cka(gx: torch.Tensor, gy: torch.Tensor, perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear CKA and debiased linear CKA of Grams ``[n, n]`` with image i paired to caption ``perms[b, i]``,
    ``[B, n]`` → two ``[B]`` (the debiased one NaN for n < 4)."""
    # Centring commutes with permutations, so re-pairing permutes the centred Gram's rows and columns: one
    # gather per draw, no new states or Gram; the norms do not change. The gather is the cost and is bound by
    # memory, so it runs in float32 (numpy's take, the fastest found): 2-4x faster, relative error ~1e-7.
    # The unbiased HSIC is unchanged by centring the states, so the debiased CKA is read from the same centred Grams
    # with their diagonals zeroed: the same gathered trace less its diagonal, and the permuted row sums.
    cx, cy = ((g - g.mean(0) - g.mean(1, keepdim=True) + g.mean()).numpy() for g in (gx, gy))
    flat, cy32 = cx.astype(np.float32).ravel(), cy.astype(np.float32)
    trace = np.array([flat @ cy32.take(p, 0).take(p, 1).ravel() for p in perms], dtype=np.float64)
    scale = np.linalg.norm(cx) * np.linalg.norm(cy)
    if scale == 0:  # a constant representation has no CKA (as in _cka)
        return np.full(len(perms), np.nan), np.full(len(perms), np.nan)
    n = cx.shape[0]
    if n < 4:
        return trace / scale, np.full(len(perms), np.nan)
    dx, dy = np.diagonal(cx), np.diagonal(cy)
    hx, hy = cx - np.diag(dx), cy - np.diag(dy)  # hollow
    rx, ry = hx.sum(1), hy.sum(1)
    m = float(n)
    hxy = _hsic(trace - dy[perms] @ dx, ry[perms] @ rx, hx.sum() * hy.sum(), m, True)
    hxx, hyy = (_hsic((h * h).sum(), r @ r, h.sum() ** 2, m, True) for h, r in ((hx, rx), (hy, ry)))
    norms = hxx * hyy  # the unbiased HSIC of a representation with itself may fall to or below 0 (as in _cka: no CKA)
    return trace / scale, hxy / np.sqrt(norms) if norms > 0 else np.full(len(perms), np.nan)
