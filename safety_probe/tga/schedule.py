"""The learning-rate schedule of every trainer in the project: linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The multiplier of the peak learning rate at 0-based ``step`` of ``total``, after ``warmup`` warm-up steps.

        >>> [round(warmup_cosine(s, 10, 2), 3) for s in (0, 1, 2, 9)]
        [0.5, 1.0, 1.0, 0.038]
    """
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
