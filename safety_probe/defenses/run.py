"""A defense measured against the undefended model on the same pairs: its metrics, its report and its cost.

    >>> result = evaluate_defense(vlm, test_pairs, defense, options)
    >>> result.metrics["overall"]["image_dsr"], result.metrics["cost"]["ratio"], result.plain.metrics["overall"]

The metrics are those of ``safety-probe eval`` (:func:`safety_probe.eval.evaluate.evaluate`, keyword judge with the
model's refusal sentence); the cost is the wall time of answering both runs of the pairs, defended over plain, the
fastest of interleaved repeats after a warm-up batch of each (the first forwards of a fresh model run several times
slower, and other work on the machine only ever adds time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from safety_probe.data.pairs import Pair
from safety_probe.defenses.base import Defense, DefenseOptions
from safety_probe.eval.evaluate import Responder, evaluate
from safety_probe.eval.judges import KeywordJudge
from safety_probe.eval.results import EvalResult
from safety_probe.models.vlm import VLM


@dataclass
class DefenseResult:
    """The defended evaluation (``rows``, ``metrics`` with ``cost``, ``defense`` and the defense's report) and the
    plain one it is compared with (``plain``, ``plain_seconds``)."""

    rows: list[dict]
    metrics: dict
    plain: EvalResult
    plain_seconds: float


def timed_evaluate(vlm: VLM, pairs: list[Pair], options: DefenseOptions, responder: Responder | None = None,
                   desc: str | None = None) -> tuple[EvalResult, float]:
    """:func:`evaluate` of ``pairs`` (plain, or answered by ``responder``) and its wall time in seconds; a progress bar
    named ``desc`` when given."""
    started = time.perf_counter()
    result = evaluate(vlm, pairs, KeywordJudge(options.phrases()), prompts=options.prompts,
                      batch_size=options.batch_size, max_new_tokens=options.max_new_tokens, progress=desc is not None,
                      responder=responder, desc=desc or "")
    return result, time.perf_counter() - started


def evaluate_defense(vlm: VLM, pairs: list[Pair], defense: Defense, options: DefenseOptions,
                     repeats: int = 3) -> DefenseResult:
    """Evaluate ``pairs`` undefended and defended, ``repeats`` times each, interleaved after a warm-up batch of each;
    the cost compares the fastest run of each (timing noise only ever adds time)."""
    for responder in (None, defense):
        timed_evaluate(vlm, pairs[:options.batch_size], options, responder)
    plain, defended, plain_times, times = None, None, [], []
    for i in range(1, max(repeats, 1) + 1):
        plain, seconds = timed_evaluate(vlm, pairs, options, desc=f"plain ({i}/{max(repeats, 1)})")
        plain_times.append(seconds)
        defended, seconds = timed_evaluate(vlm, pairs, options, defense, desc=f"{defense.name} ({i}/{max(repeats, 1)})")
        times.append(seconds)
    state = defense.state()
    metrics = {**defended.metrics, **defense.report(defended.rows),
               "cost": {"plain_seconds": round(min(plain_times), 3), "defended_seconds": round(min(times), 3),
                        "ratio": round(min(times) / min(plain_times), 3), "n_pairs": len(pairs),
                        "repeats": len(times), "torch_threads": torch.get_num_threads(),
                        "what": "wall time of answering both runs of the pairs (generation + keyword judge), "
                                "defended over plain: the fastest of interleaved repeats, after a warm-up batch"},
               "defense": {"method": state.method, "layers": state.layers, "settings": state.settings}}
    return DefenseResult(defended.rows, metrics, plain, min(plain_times))
