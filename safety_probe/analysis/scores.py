"""Per-layer scores with their uncertainty: the common return type of every locator and shift metric.

    >>> s = LayerScores.from_pairs("cos_matched", per_pair)        # per_pair [n_pairs, n_layers]
    >>> s.mean, s.lower, s.upper                                   # [n_layers] each: mean, 95% bootstrap band
    >>> scores_frame([s, t])                                       # one row per layer (layers.csv)

Bands are percentile bootstraps of the mean over pairs, seeded so that saved results are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

# Bootstrap resamples for the 95% band over pairs; seeded so that saved results are reproducible.
N_BOOT = 1000
BOOT_SEED = 0


@dataclass(frozen=True)
class LayerScores:
    """One per-layer score with a 95% band over pairs; the common return type of every locator/metric.

    ``mean``, ``lower`` and ``upper`` have shape ``[L]``; ``per_pair`` (when the score is a per-pair
    average) has shape ``[n, L]``. ``layers`` are the block indices the columns refer to.
    """

    name: str
    layers: list[int]
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    per_pair: np.ndarray | None = None
    description: str = ""

    @classmethod
    def from_pairs(
        cls,
        name: str,
        per_pair: np.ndarray | torch.Tensor,
        layers: Sequence[int] | None = None,
        description: str = "",
        n_boot: int = N_BOOT,
        seed: int = BOOT_SEED,
    ) -> LayerScores:
        """Mean over pairs of ``per_pair`` ``[n, L]`` with a percentile-bootstrap 95% band of that mean."""
        x = as_numpy(per_pair).astype(np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"{name}: per_pair must be [n_pairs >= 1, n_layers], got shape {x.shape}")
        layers = column_layers(layers, x.shape[1], name)
        lower, upper = bootstrap_mean_band(x, n_boot=n_boot, seed=seed)
        return cls(name, layers, x.mean(0), lower, upper, x, description)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, name: str, description: str = "") -> LayerScores:
        """Rebuild a score from the ``layer``, ``{name}_mean``, ``{name}_lower``, ``{name}_upper`` columns."""
        cols = [f"{name}_mean", f"{name}_lower", f"{name}_upper"]
        missing = [c for c in ["layer", *cols] if c not in frame.columns]
        if missing:
            raise KeyError(f"frame lacks columns {missing} for score {name!r}")
        rows = frame.dropna(subset=[cols[0]]).sort_values("layer")
        mean, lower, upper = (rows[c].to_numpy(dtype=np.float64) for c in cols)
        return cls(name, [int(v) for v in rows["layer"]], mean, lower, upper, None, description)

    def to_frame(self) -> pd.DataFrame:
        """Per-layer table with columns ``layer``, ``{name}_mean``, ``{name}_lower``, ``{name}_upper``."""
        return pd.DataFrame(
            {
                "layer": self.layers,
                f"{self.name}_mean": self.mean,
                f"{self.name}_lower": self.lower,
                f"{self.name}_upper": self.upper,
            }
        )


def scores_frame(scores: Iterable[LayerScores]) -> pd.DataFrame:
    """Outer-join several scores' ``to_frame()`` on ``layer`` (the layout of ``layers.csv``)."""
    frame: pd.DataFrame | None = None
    for s in scores:
        f = s.to_frame()
        frame = f if frame is None else frame.merge(f, on="layer", how="outer")
    if frame is None:
        return pd.DataFrame({"layer": pd.Series(dtype=int)})
    return frame.sort_values("layer").reset_index(drop=True)


def bootstrap_mean_band(
    per_pair: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap 95% interval of the mean over pairs of ``per_pair`` ``[n, L]`` → (lower, upper) ``[L]``."""
    n = per_pair.shape[0]
    if n < 2:  # one pair has no spread to resample
        m = per_pair.mean(0)
        return m, m.copy()
    rng = np.random.default_rng(seed)
    # Resampling as multinomial counts turns every bootstrap mean into one matmul: [B, n] @ [n, L].
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    means = counts @ per_pair / n
    lower, upper = np.percentile(means, [2.5, 97.5], axis=0)
    return lower, upper


def auroc_wins(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """``[n_pos, n_neg]`` Mann–Whitney wins of each positive score over each negative one (ties count one half);
    their mean is the AUROC."""
    pos, neg = np.asarray(positive, dtype=np.float64)[:, None], np.asarray(negative, dtype=np.float64)[None, :]
    return (pos > neg) + 0.5 * (pos == neg)


def auroc_band(wins: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """AUROC of :func:`auroc_wins` ``[n_pos, n_neg]`` with a stratified percentile-bootstrap 95% interval
    (each class resampled on its own) → (auroc, lower, upper)."""
    n_pos, n_neg = wins.shape
    rng = np.random.default_rng(seed)
    # Resampled pairs enter as multinomial counts per class, so each bootstrap AUROC is one weighted sum.
    counts_pos = rng.multinomial(n_pos, np.full(n_pos, 1.0 / n_pos), size=n_boot).astype(np.float64)
    counts_neg = rng.multinomial(n_neg, np.full(n_neg, 1.0 / n_neg), size=n_boot).astype(np.float64)
    boot = ((counts_pos @ wins) * counts_neg).sum(1) / (n_pos * n_neg)
    lower, upper = np.percentile(boot, [2.5, 97.5])
    return float(wins.mean()), float(lower), float(upper)


def auroc_with_interval(positive: np.ndarray, negative: np.ndarray, n_boot: int = N_BOOT,
                        seed: int = BOOT_SEED) -> dict[str, float | int | None]:
    """AUROC of scores ``[n_pos]`` against ``[n_neg]`` (higher = positive) with its 95% bootstrap interval:
    ``{"auroc", "lower", "upper", "n_positive", "n_negative"}`` (None values when a class is empty)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    out: dict[str, float | int | None] = {"auroc": None, "lower": None, "upper": None,
                                          "n_positive": int(pos.size), "n_negative": int(neg.size)}
    if pos.size and neg.size:
        auroc, lower, upper = auroc_band(auroc_wins(pos, neg), n_boot, seed)
        out.update(auroc=round(auroc, 4), lower=round(lower, 4), upper=round(upper, 4))
    return out


def wilson_interval(p: np.ndarray | float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score 95% interval of proportions ``p`` (any shape) observed in ``n`` trials → (lower, upper)."""
    z = 1.959963984540054
    p = np.asarray(p, dtype=np.float64)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def share_with_interval(k: int, n: int) -> dict[str, float | int | None]:
    """A proportion k/n with its 95% Wilson score interval: ``{"k", "n", "share", "lower", "upper"}`` (None when n = 0)."""
    if n == 0:
        return {"k": 0, "n": 0, "share": None, "lower": None, "upper": None}
    lower, upper = wilson_interval(k / n, n)
    return {"k": int(k), "n": int(n), "share": round(k / n, 4), "lower": round(float(lower), 4),
            "upper": round(float(upper), 4)}


def paired_exact_test(first: Sequence[bool], second: Sequence[bool]) -> dict[str, int | float]:
    """Exact McNemar test of two models' verdicts on the same items: ``{"first_only", "second_only", "p"}``.

    ``first``, ``second``: ``[n]`` booleans (e.g. "defended") in item order. The null is that an item on which the
    two disagree is as likely to favour either, so the two-sided p is the binomial tail of the discordant pairs.
    """
    if len(first) != len(second):
        raise ValueError(f"paired_exact_test: {len(first)} verdicts against {len(second)}")
    b = sum(bool(x) and not bool(y) for x, y in zip(first, second))
    c = sum(bool(y) and not bool(x) for x, y in zip(first, second))
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n if n else 1.0
    return {"first_only": b, "second_only": c, "p": min(1.0, 2 * tail)}


def column_layers(layers: Sequence[int] | None, n_layers: int, name: str) -> list[int]:
    """Layer indices for ``n_layers`` score columns: ``range(n_layers)`` by default, else checked for length."""
    if layers is None:
        return list(range(n_layers))
    layers = [int(v) for v in layers]
    if len(layers) != n_layers:
        raise ValueError(f"{name}: {len(layers)} layer indices given for {n_layers} layer columns")
    return layers


def as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
