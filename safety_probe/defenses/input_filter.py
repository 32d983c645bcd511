"""The input-filter defense row: a CLIP zero-shot classifier on the image that answers a flagged input with the
refusal, the upper bound an alignment method is compared with (paper reviewers' question (d)).

    >>> flags = filter_flags(pairs, "models/clip", ["gun", "knife"], ["cup", "ball"], ["a photo of {}"])
    >>> metrics = filtered_metrics(base_rows, flags, PromptSettings())       # flagged images answered by REFUSAL
"""

from __future__ import annotations

from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import REFUSAL, PromptSettings
from safety_probe.eval.evaluate import metrics_of
from safety_probe.eval.tables import benchmark_table
from safety_probe.models.clip import Retriever


def filter_flags(pairs: list[Pair], clip: str | Retriever, toxic: list[str], benign: list[str],
                 templates: list[str], threshold: float = 0.5) -> list[bool]:
    """CLIP zero-shot input filter: True where the ``toxic`` descriptors take more than ``threshold`` of the
    probability mass against ``benign``, each descriptor ensembled over ``templates``."""
    retriever = clip if isinstance(clip, Retriever) else Retriever(clip)
    probs = retriever.zero_shot([p.load_image() for p in pairs], toxic + benign, templates)
    return (probs[:, :len(toxic)].sum(dim=1) > threshold).tolist()


def filtered_metrics(rows: list[dict], flags: list[bool], prompts: PromptSettings) -> dict:
    """The base model's judged rows with flagged images answered by the refusal (image run only)."""
    new = []
    for row, flag in zip(rows, flags):
        row = dict(row)
        if flag:
            row["image_response"], row["image_refused"], row["image_correct"] = REFUSAL, True, False
        row["filtered"] = flag
        new.append(row)
    toxic = [f for r, f in zip(rows, flags) if r["label"] == "harmful" and r.get("scene") != "compositional"]
    benign = [f for r, f in zip(rows, flags) if r["label"] == "benign"]
    first = rows[0] if rows else {}
    metrics = metrics_of(new, first.get("judge"), prompts, first.get("harm_judge"))
    metrics["benchmarks"] = benchmark_table(new)
    metrics["filter"] = {"flag_rate_toxic_images": round(sum(toxic) / len(toxic), 4) if toxic else None,
                         "flag_rate_benign": round(sum(benign) / len(benign), 4) if benign else None}
    return metrics
