"""The recording measurement's inputs (pairs whose prompt reaches a target length) and measurements: interleaved timing
rounds and their per-round ratios, the leak test over consecutive batches, and stored bytes per pair."""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from speed import memory
from speed.plans import Plan

WORDS = [
    "please", "describe", "every", "object", "you", "can", "see", "in", "this", "picture", "and", "explain",
    "what", "each", "one", "is", "used", "for", "then", "say", "whether", "it", "could", "be", "dangerous",
    "to", "anyone", "nearby",
]  # fmt: skip
CAPTION = "a small red ball lying on a wooden table next to a window"


def write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_pairs(images: list[Path], n: int, n_words: int):
    from safety_probe.data.pairs import Pair

    instruction = " ".join(WORDS[i % len(WORDS)] for i in range(n_words)).capitalize() + "?"
    return [Pair(image=images[i % len(images)], caption=CAPTION, instruction=instruction) for i in range(n)]


def pairs_for_length(vlm, images: list[Path], n: int, run: str, target: int):
    """``n`` pairs whose ``run`` prompt is about ``target`` tokens long (the instruction grows to get there)."""
    lo, hi = 1, 1
    while hi < 4096 and vlm.encode(make_pairs(images, 1, hi), run).inputs["input_ids"].shape[1] < target:
        lo, hi = hi, hi * 2
    while lo < hi:  # smallest word count reaching the target
        mid = (lo + hi) // 2
        if vlm.encode(make_pairs(images, 1, mid), run).inputs["input_ids"].shape[1] >= target:
            hi = mid
        else:
            lo = mid + 1
    return make_pairs(images, n, hi)


def sync_of(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def time_rounds(
    fns: dict[str, Callable[[], Any]], plan: Plan, sync, rng: random.Random
) -> dict[str, list[float]]:
    """Interleaved rounds: every method once per round in a shuffled order; Python's GC runs between rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < plan.max_rounds and (
        rounds < plan.min_rounds or time.perf_counter() - start < plan.case_budget_s
    ):
        order = list(fns)
        rng.shuffle(order)
        gc.collect()
        gc.disable()
        try:
            for name in order:
                times[name].append(timed(fns[name], sync))
        finally:
            gc.enable()
        rounds += 1
    return times


def summarise(times: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of each method, and the median over rounds of its ratio to that round's bare forward."""
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ratio = {k: statistics.median(t / f for t, f in zip(v, times["forward"])) for k, v in times.items()}
    return med, ratio


def max_rel_err(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(((a[k] - b[k]).norm() / b[k].norm().clamp(min=1e-12)).item() for k in ("mean", "last"))


def leak_test(recorder, img_batch, txt_batch, n: int) -> dict[str, Any]:
    """Memory over ``n`` consecutive record()-like batches (an image run and a text run each).

    The raw series is RSS (CUDA: allocated bytes) after each batch, GC left to run as usual: the heap
    grows for a while as glibc keeps freed blocks, then plateaus. Whether anything is actually kept is
    read from the *settled* RSS (GC run, free heap pages handed back) and the count of live Python
    objects, before and after the run.
    """
    cuda = img_batch.inputs["input_ids"].is_cuda

    def now() -> float:
        return (torch.cuda.memory_allocated() if cuda else memory.rss_bytes()) / memory.MB

    for _ in range(3):  # warm batches: first-call allocations are not a leak
        recorder(img_batch, "image")
        recorder(txt_batch, "caption")
    memory.settle()
    settled_before, objects_before = now(), len(gc.get_objects())
    series = []
    for _ in range(n):
        recorder(img_batch, "image")
        recorder(txt_batch, "caption")
        series.append(now())
    memory.settle()
    settled_after, objects_after = now(), len(gc.get_objects())
    settled_growth = (settled_after - settled_before) * 1024 / n
    return {
        "batches": n,
        "what": "cuda_allocated_mb" if cuda else "rss_mb",
        "first_mb": series[0],
        "last_mb": series[-1],
        "max_mb": max(series),
        "slope_kb_per_batch": memory.slope(series) * 1024,
        "slope_kb_per_batch_second_half": memory.slope(series[len(series) // 2 :]) * 1024,
        "settled_before_mb": settled_before,
        "settled_after_mb": settled_after,
        "settled_growth_kb_per_batch": settled_growth,
        "live_objects_before": objects_before,
        "live_objects_after": objects_after,
        # Flat: under 2 KiB a batch of live memory kept, and no Python objects piling up.
        "flat": settled_growth < 2.0 and objects_after - objects_before <= max(50, n // 10),
        "series_mb": [round(v, 2) for v in series],
    }


def bytes_per_pair(vlm, images, plan: Plan) -> dict[str, Any]:
    """Bytes the four pooled tensors of ``record`` take per pair, at two sequence lengths."""
    from safety_probe.probe.record import record

    rows = []
    for target in plan.bytes_targets:
        pairs = pairs_for_length(vlm, images, plan.bytes_pairs, "image", target)
        states = record(vlm, pairs, batch_size=plan.bytes_pairs, progress=False)
        stored = sum(t.numel() * t.element_size() for t in states.tensors().values()) / len(pairs)
        t_img = vlm.encode(pairs, "image").inputs["input_ids"].shape[1]
        t_txt = vlm.encode(pairs, "text").inputs["input_ids"].shape[1]
        full = vlm.n_layers * vlm.d_model * (t_img + t_txt) * 4  # a float32 cache of every block's output
        rows.append(
            {
                "seq_image": t_img,
                "seq_text": t_txt,
                "bytes_per_pair": int(stored),
                "full_cache_bytes_per_pair": int(full),
            }
        )
    return {"rows": rows, "independent_of_seq_len": len({r["bytes_per_pair"] for r in rows}) == 1}
