"""The semantic shift between image and caption hidden states, per layer, with baselines.

Method: Xu et al., "Cross-Modal Safety Mechanism Transfer in Large Vision-Language Models", ICLR 2025
(arXiv 2410.12662), §3: cos(mean image-token state, mean caption-token state) per layer, averaged over
pairs. Raw cosines of residual streams are inflated by a large component shared by all inputs, so this
module also reports a mismatched-pair baseline, a mean-centred cosine and linear CKA (Kornblith et al.,
"Similarity of Neural Network Representations Revisited", ICML 2019).

Inputs are the recorder's float tensors ``[n_pairs, n_layers, d_model]``; layer l = output of block l.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from safety_probe.scores import LayerScores, column_layers

MEAN_KEYS = ("image_mean", "caption_mean")
LAST_KEYS = ("image_last", "caption_last")


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
    return float(_weighted_cka(_gram(x), _gram(y), torch.ones(1, x.shape[0], dtype=torch.float64))[0])


def cka_scores(
    image: torch.Tensor, caption: torch.Tensor, layers: Sequence[int] | None = None
) -> LayerScores:
    """Linear CKA across pairs per layer between ``[n, L, d]`` states, with a jackknife 95% band.

    The band is CKA ± 1.96 jackknife standard errors (leave one pair out). A pair bootstrap is not used:
    resampling with replacement duplicates pairs, which inflates CKA so much that the bootstrap band
    can miss the estimate.
    """
    n, n_layers = image.shape[:2]
    if n < 3:
        raise ValueError("CKA across pairs with a jackknife band needs at least 3 pairs")
    # Row 0 keeps every pair (the estimate); row k+1 leaves pair k out.
    weights = torch.cat([torch.ones(1, n), 1 - torch.eye(n)]).double()
    mean, lower, upper = (np.empty(n_layers) for _ in range(3))
    for layer in range(n_layers):
        cka = _weighted_cka(_gram(image[:, layer]), _gram(caption[:, layer]), weights).numpy()
        loo = cka[1:]
        se = np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
        mean[layer], lower[layer], upper[layer] = cka[0], cka[0] - 1.96 * se, cka[0] + 1.96 * se
    return LayerScores(
        "cka",
        column_layers(layers, n_layers, "cka"),
        mean,
        lower,
        upper,
        None,
        "linear CKA across pairs between image-token and caption-token mean states (Kornblith et al. 2019)",
    )


def semantic_shift(
    states: Mapping[str, torch.Tensor],
    layers: Sequence[int] | None = None,
    mismatch: str = "all",
    seed: int = 0,
) -> dict[str, LayerScores]:
    """All shift metrics from the recorder's states (each ``[n_pairs, n_layers, d_model]``).

    Needs ``image_mean`` and ``caption_mean``; ``image_last`` and ``caption_last`` are optional. Returns:

    * ``cos_matched``: cos(image_mean_i, caption_mean_i) per pair (the paper's §3 metric).
    * ``cos_mismatched``: the same with other pairs' captions (see :func:`mismatched_cosine`); the
      level a shared residual-stream component alone produces.
    * ``cos_centred``: matched cosine after subtracting, per layer, each modality's mean over pairs; this
      removes the shared component (chance ≈ 0), so what remains is pair-specific agreement.
    * ``cka``: linear CKA across pairs between image_mean and caption_mean.
    * ``cos_last`` (when the *_last states are given): cos(image_last_i, caption_last_i), the state the
      next-token prediction (and the refusal) is read from.
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
    layers = column_layers(layers, image.shape[1], "semantic_shift")
    out = {
        "cos_matched": LayerScores.from_pairs(
            "cos_matched", pair_cosine(image, caption), layers, "cos(image-token mean, caption-token mean)"
        ),
        "cos_mismatched": LayerScores.from_pairs(
            "cos_mismatched",
            mismatched_cosine(image, caption, mismatch, seed),
            layers,
            f"cosine with mismatched captions ({mismatch})",
        ),
        "cos_centred": LayerScores.from_pairs(
            "cos_centred",
            pair_cosine(image, caption, centre=True),
            layers,
            "matched cosine after subtracting each modality's mean over pairs",
        ),
        "cka": cka_scores(image, caption, layers),
    }
    if "image_last" in t:
        out["cos_last"] = LayerScores.from_pairs(
            "cos_last",
            pair_cosine(t["image_last"], t["caption_last"]),
            layers,
            "cos(last prompt position, image run; last prompt position, text run)",
        )
    return out


def _gram(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x @ x.T


def _weighted_cka(gx: torch.Tensor, gy: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """CKA of Gram matrices ``[n, n]`` with example i counted ``w[b, i]`` times, for each row b of ``w`` ``[B, n]`` → ``[B]``.

    HSIC of a reweighted sample (e.g. leave-one-out) is a weighted sum over the original n×n entries, so
    no ``[B, n, n]`` tensor is built.
    """
    hxy, hxx, hyy = (_weighted_hsic(a, b, w) for a, b in ((gx, gy), (gx, gx), (gy, gy)))
    denom = torch.sqrt(hxx * hyy)
    return torch.where(denom > 0, hxy / denom.clamp_min(1e-300), torch.nan)


def _weighted_hsic(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # Σ_ij w_i w_j Ca_ij Cb_ij with Ca the w-weighted double-centred a. Because Ca's weighted row sums
    # vanish, this equals Σ w_i w_j Ca_ij b_ij = wᵀ(a∘b)w − 2n Σ_i w_i ā_i b̄_i + n² α β (ā = a w / n, α = wᵀā / n).
    n = w.sum(1, keepdim=True)
    a_bar, b_bar = (w @ a) / n, (w @ b) / n
    alpha, beta = (w * a_bar).sum(1) / n[:, 0], (w * b_bar).sum(1) / n[:, 0]
    return ((w @ (a * b)) * w).sum(1) - 2 * n[:, 0] * (w * a_bar * b_bar).sum(1) + n[:, 0] ** 2 * alpha * beta
