"""Benchmark recording every block against the bare forward: time, peak memory, leak, bytes per pair.

    python -m benchmarks.run                   # organism + a 1B-shaped random LLaVA, CPU (make bench)
    python -m benchmarks.run --quick           # two tiny models, a few seconds of work (the test)
    python -m benchmarks.run --device cuda --dtype bfloat16 --shape 7b

Writes ``benchmarks/results.json`` (``--out``) and prints the tables; docs/benchmarks.md explains columns.
Timings are medians over interleaved rounds (every method once per round, shuffled) after warm-up, and each
ratio is the median of the per-round ratios to the bare forward of the same round, so load from other
processes shifts numerator and denominator alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks import memory
from benchmarks.hook_recorder import HookRecorder
from benchmarks.methods import (
    boot_bridge,
    check_bridge,
    make_forward,
    make_hidden_states,
    make_hook_cache,
    make_record,
    make_tl,
    make_trunk,
    shared_copy,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
TARGET = 1.05  # recording all layers should cost at most this multiple of the bare forward

# Decoder shapes of the random-weight "large" LLaVA (text model; the vision tower stays tiny).
SHAPES: dict[str, dict[str, int]] = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 5632,
           "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000, "image_size": 28},
    "7b": {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008,
           "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "image_size": 336},
    # --quick only
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
             "num_attention_heads": 4, "num_key_value_heads": 2, "image_size": 28},
    "small": {"hidden_size": 128, "num_hidden_layers": 4, "intermediate_size": 256,
              "num_attention_heads": 4, "num_key_value_heads": 2, "image_size": 28},
}  # fmt: skip
# The organism's sizes (safety_probe/organism/train.py): used to build a stand-in until it is trained.
ORGANISM_LIKE = {"hidden_size": 128, "num_hidden_layers": 8, "intermediate_size": 384, "num_attention_heads": 4,
                 "num_key_value_heads": 4, "vocab_size": 1024, "image_size": 56}  # fmt: skip

WORDS = [
    "please", "describe", "every", "object", "you", "can", "see", "in", "this", "picture", "and", "explain",
    "what", "each", "one", "is", "used", "for", "then", "say", "whether", "it", "could", "be", "dangerous",
    "to", "anyone", "nearby",
]  # fmt: skip
CAPTION = "a small red ball lying on a wooden table next to a window"


@dataclass
class Case:
    """One timed configuration: which run of the pair, how many pairs, and the sequence length aimed at."""

    run: str  # "image" | "text"
    batch_size: int
    seq_target: int


@dataclass
class Plan:
    """What to measure on one model."""

    key: str
    cases: list[Case]
    methods: list[str]
    warmup_rounds: int  # rounds of every method before the first case (fresh models run slow at first)
    min_rounds: int
    max_rounds: int
    case_budget_s: float  # stop adding timed rounds past this (after min_rounds)
    leak_batches: int
    leak_batch_size: int
    bytes_targets: tuple[int, int]
    bytes_pairs: int
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------
def _sync(device: str) -> Callable[[], None]:
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
    from safety_probe.probe import record

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


def bench_model(label: str, path: str, plan: Plan, args, images: list[Path], log) -> dict[str, Any]:
    from safety_probe.models.vlm import load_vlm
    from safety_probe.probe import Recorder

    t0 = time.perf_counter()
    vlm = load_vlm(path, device=args.device, dtype=args.dtype)
    layers = list(range(vlm.n_layers))
    n_params = sum(p.numel() for p in vlm.model.parameters())
    log(
        f"[bold]{label}[/]: {path} — {vlm.n_layers} blocks, d={vlm.d_model}, {n_params / 1e6:.1f} M parameters"
    )
    # Recorder and bridge wrap weight-sharing copies, so `forward` runs on an untouched module tree.
    rec_vlm = shared_copy(vlm)
    recorder = Recorder(rec_vlm, layers)
    hook_vlm = shared_copy(vlm)
    hook_recorder = HookRecorder(hook_vlm, layers)
    tl_mode, bridge = "bridge", None
    if args.no_bridge:
        tl_mode = "hook_cache fallback: --no-bridge"
    elif any(m.startswith("tl_") for m in plan.methods):
        try:
            bridge = boot_bridge(
                path if Path(path).is_dir() else str(vlm.model.name_or_path), vlm, args.device, vlm.dtype
            )
        except Exception as e:  # noqa: BLE001 - any failure means: use the hook fallback and say why
            tl_mode = f"hook_cache fallback: bridge failed to boot ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    sync = _sync(args.device)
    rng = random.Random(0)
    result: dict[str, Any] = {
        "path": str(path),
        "n_layers": vlm.n_layers,
        "d_model": vlm.d_model,
        "n_params": n_params,
        "dtype": str(vlm.dtype).replace("torch.", ""),
        "device": args.device,
        "plan": asdict(plan),
        "cases": [],
    }
    for i, case in enumerate(plan.cases):
        span = "image" if case.run == "image" else "caption"
        pairs = pairs_for_length(vlm, images, case.batch_size, case.run, case.seq_target)
        batch = vlm.encode(pairs, case.run)
        seq = int(batch.inputs["input_ids"].shape[1])
        fns: dict[str, Callable[[], Any]] = {}
        for m in plan.methods:
            if m == "forward":
                fns[m] = make_forward(vlm, batch)
            elif m == "trunk":
                fns[m] = make_trunk(vlm, batch)
            elif m == "record":
                fns[m] = make_record(recorder, batch, span)
            elif m == "record_hooks":
                fns[m] = make_record(hook_recorder, batch, span)
            elif m == "hidden_states":
                fns[m] = make_hidden_states(vlm, batch, span)
            elif m.startswith("tl_"):
                if bridge is not None and i == 0:
                    try:
                        check_bridge(bridge, vlm, batch, span, recorder(batch, span))
                    except Exception as e:  # noqa: BLE001
                        tl_mode, bridge = (
                            f"hook_cache fallback: bridge misran ({type(e).__name__}: {e})"[:200],
                            None,
                        )
                if bridge is not None:
                    fns[m] = make_tl(bridge, vlm, batch, span, every_hook=(m == "tl_all"))
                elif "hook_cache" not in fns:
                    fns["hook_cache"] = make_hook_cache(vlm, batch, span)
        # Correctness before speed: ours, the hook prototype and an independent hook cache agree.
        ref = make_hook_cache(vlm, batch, span)()
        errs = {"record": max_rel_err(fns["record"](), ref)}
        if "record_hooks" in fns:
            errs["record_hooks"] = max_rel_err(fns["record_hooks"](), ref)
        warm = plan.warmup_rounds if i == 0 else 1
        for _ in range(warm):
            for fn in fns.values():
                timed(fn, sync)
        peak = {name: memory.peak_memory(fn, args.device) for name, fn in fns.items()}
        times = time_rounds(fns, plan, sync, rng)
        med, ratio = summarise(times)
        row = {
            "run": case.run,
            "span": span,
            "batch_size": case.batch_size,
            "seq_len": seq,
            "rounds": len(times["forward"]),
            "median_ms": med,
            "ratio_to_forward": ratio,
            "times_ms": {k: [round(t * 1e3, 3) for t in v] for k, v in times.items()},
            "peak_mb": {k: v["peak_mb"] for k, v in peak.items()},
            "abs_peak_mb": {k: v["abs_peak_mb"] for k, v in peak.items()},
            "memory_how": next(iter(peak.values()))["how"],
            "max_rel_err_vs_hook_cache": errs,
        }
        result["cases"].append(row)
        log(
            f"  {case.run} B={case.batch_size} T={seq}: forward {med['forward']:.1f} ms, record ×{ratio['record']:.3f}"
            f" ({row['rounds']} rounds, {time.perf_counter() - t0:.0f} s)"
        )
    result["tl_mode"] = tl_mode
    ratios = [c["ratio_to_forward"]["record"] for c in result["cases"]]
    result["record_over_forward"] = max(ratios)
    result["record_over_forward_median"] = statistics.median(ratios)
    if "trunk" in plan.methods:
        # Same statistic as ratio_to_forward: the median over rounds of record / trunk of that round.
        result["record_over_trunk"] = max(
            statistics.median(r / t for r, t in zip(c["times_ms"]["record"], c["times_ms"]["trunk"]))
            for c in result["cases"]
        )
    result["meets_target"] = result["record_over_forward"] <= TARGET
    # Leak: record()-like batches (image run + text run) on the shortest case.
    leak_pairs = pairs_for_length(vlm, images, plan.leak_batch_size, "image", plan.cases[0].seq_target)
    result["leak"] = leak_test(
        recorder, vlm.encode(leak_pairs, "image"), vlm.encode(leak_pairs, "text"), plan.leak_batches
    )
    leak = result["leak"]
    log(
        f"  leak: {plan.leak_batches} batches, RSS {leak['first_mb']:.1f} -> {leak['last_mb']:.1f} MiB (slope"
        f" {leak['slope_kb_per_batch']:.1f} KiB/batch); settled {leak['settled_before_mb']:.1f} ->"
        f" {leak['settled_after_mb']:.1f} MiB, live objects {leak['live_objects_before']} -> {leak['live_objects_after']}"
    )
    result["bytes_per_pair"] = bytes_per_pair(rec_vlm, images, plan)
    result["notes"] = plan.notes
    result["wall_s"] = time.perf_counter() - t0
    del bridge, recorder, hook_recorder, rec_vlm, hook_vlm, vlm
    memory.settle()
    return result


# --------------------------------------------------------------------------------------------------
# Plans and models
# --------------------------------------------------------------------------------------------------
ALL_METHODS = ["forward", "trunk", "record", "record_hooks", "hidden_states", "tl_resid", "tl_all"]


def organism_plan(quick: bool) -> Plan:
    if quick:
        return Plan(
            "organism",
            [Case("image", 1, 24), Case("image", 2, 48)],
            ALL_METHODS,
            2,
            2,
            3,
            2.0,
            leak_batches=10,
            leak_batch_size=2,
            bytes_targets=(24, 48),
            bytes_pairs=2,
        )
    cases = [
        Case("image", 1, 32),
        Case("image", 1, 128),
        Case("image", 8, 32),
        Case("image", 8, 128),
        Case("text", 8, 128),
    ]
    return Plan(
        "organism",
        cases,
        ALL_METHODS,
        warmup_rounds=10,
        min_rounds=5,
        max_rounds=15,
        case_budget_s=6.0,
        leak_batches=100,
        leak_batch_size=4,
        bytes_targets=(32, 128),
        bytes_pairs=4,
    )


def large_plan(shape: str, quick: bool, device: str) -> Plan:
    if quick:
        return Plan(
            shape,
            [Case("image", 2, 32)],
            ALL_METHODS,
            1,
            2,
            2,
            1.0,
            leak_batches=5,
            leak_batch_size=1,
            bytes_targets=(24, 48),
            bytes_pairs=1,
        )
    if device.startswith("cuda"):
        cases = [Case("image", 1, 600), Case("image", 8, 600), Case("image", 8, 1200)]
        return Plan(
            shape,
            cases,
            ALL_METHODS,
            warmup_rounds=5,
            min_rounds=10,
            max_rounds=30,
            case_budget_s=30.0,
            leak_batches=100,
            leak_batch_size=8,
            bytes_targets=(600, 1200),
            bytes_pairs=2,
        )
    # CPU: a 1B forward of ~20 tokens takes seconds on 2 cores: two cases, few rounds, a short leak run.
    methods = ["forward", "trunk", "record", "hidden_states", "tl_resid"]
    return Plan(
        shape,
        [Case("image", 1, 20), Case("image", 1, 40)],
        methods,
        warmup_rounds=1,
        min_rounds=4,
        max_rounds=4,
        case_budget_s=0.0,
        leak_batches=10,
        leak_batch_size=1,
        bytes_targets=(20, 40),
        bytes_pairs=1,
        notes=["CPU: record_hooks and tl_all are measured on the organism only (time budget)"],
    )


def _build(folder: Path, sizes: dict[str, int], dtype: str | None = None) -> str:
    from safety_probe.testing.tiny import build_tiny_vlm

    stamp = folder / "bench_shape.json"
    want = json.dumps({**sizes, "dtype": dtype}, sort_keys=True)
    if (folder / "config.json").is_file() and stamp.is_file() and stamp.read_text() == want:
        return str(folder)  # reused from --model-cache
    extra = {"dtype": dtype} if dtype else {}
    build_tiny_vlm("llava", folder, seed=0, **sizes, **extra)
    stamp.write_text(want)
    return str(folder)


def organism_path(args, work: Path) -> tuple[str, str]:
    """The model in the organism slot and how it was chosen."""
    from safety_probe.organism import ORGANISM_DIR

    if args.model_path:
        return args.model_path, "given by --model-path"
    if args.quick:
        return _build(work / "quick-organism", SHAPES["tiny"]), "tiny random LLaVA (--quick)"
    if (ORGANISM_DIR / "config.json").is_file():
        return str(ORGANISM_DIR), "trained organism"
    cache = Path(args.model_cache) if args.model_cache else work
    return (
        _build(cache / "organism-standin", ORGANISM_LIKE),
        "stand-in: random LLaVA of the organism's sizes (the organism is not built yet)",
    )


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_tables(results: dict[str, Any], console) -> None:
    from rich.table import Table

    for label, res in results["models"].items():
        methods = list(res["cases"][0]["median_ms"])
        tl_note = "" if res["tl_mode"] == "bridge" else f"  [yellow]{res['tl_mode']}[/]"
        t = Table(
            title=f"{label}: time ÷ bare forward (median of per-round ratios){tl_note}", title_justify="left"
        )
        for col in ("run", "B", "T", "forward ms", *methods[1:]):
            t.add_column(col, justify="right")
        for c in res["cases"]:
            cells = []
            for m in methods[1:]:
                r = c["ratio_to_forward"][m]
                style = (
                    "green"
                    if (m.startswith("record") and r <= TARGET)
                    else ("red" if m.startswith("record") else "")
                )
                cells.append(f"[{style}]{r:.3f}[/]" if style else f"{r:.3f}")
            t.add_row(
                c["run"], str(c["batch_size"]), str(c["seq_len"]), f"{c['median_ms']['forward']:.1f}", *cells
            )
        console.print(t)
        t = Table(
            title=f"{label}: peak memory above baseline, MiB ({res['cases'][0]['memory_how']})",
            title_justify="left",
        )
        for col in ("run", "B", "T", *methods):
            t.add_column(col, justify="right")
        for c in res["cases"]:
            t.add_row(
                c["run"],
                str(c["batch_size"]),
                str(c["seq_len"]),
                *(f"{c['peak_mb'][m]:.1f}" for m in methods),
            )
        console.print(t)
    t = Table(title="summary", title_justify="left")
    for col in (
        "model",
        "record ÷ forward (worst)",
        "record ÷ trunk (worst)",
        "RSS first → last MiB (batches)",
        "slope KiB/batch",
        "settled Δ KiB/batch",
        "flat",
        "bytes/pair (T_img)",
        "full cache bytes/pair",
        "bytes equal",
    ):
        t.add_column(col, justify="right")
    for label, res in results["models"].items():
        leak, bpp = res["leak"], res["bytes_per_pair"]
        r = res["record_over_forward"]
        t.add_row(
            label,
            f"[{'green' if r <= TARGET else 'red'}]{r:.3f}[/]",
            f"{res.get('record_over_trunk', float('nan')):.3f}",
            f"{leak['first_mb']:.1f} → {leak['last_mb']:.1f} ({leak['batches']})",
            f"{leak['slope_kb_per_batch']:.1f}",
            f"{leak['settled_growth_kb_per_batch']:.2f}",
            "yes" if leak["flat"] else "[red]NO[/]",
            ", ".join(f"{_fmt_bytes(row['bytes_per_pair'])} ({row['seq_image']})" for row in bpp["rows"]),
            ", ".join(_fmt_bytes(row["full_cache_bytes_per_pair"]) for row in bpp["rows"]),
            "yes" if bpp["independent_of_seq_len"] else "[red]NO[/]",
        )
    console.print(t)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "nnsight", "transformer-lens"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models and few rounds (for tests)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--shape", default="1b", choices=["1b", "7b"], help="the random-weight large LLaVA's shape"
    )
    p.add_argument("--models", default="organism,large", help="comma list of: organism, large")
    p.add_argument("--model-path", help="benchmark this model folder in the organism slot")
    p.add_argument("--model-cache", help="build the random models here and reuse them on later runs")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 on CPU: steadier on a shared 2-core box; 0 = torch's default)",
    )
    p.add_argument(
        "--no-bridge",
        action="store_true",
        help="skip TransformerLens' bridge and time the hook-based full cache instead",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON (default benchmarks/results.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from rich.console import Console

    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but torch sees no GPU")
    if not args.device.startswith("cuda"):
        threads = 1 if args.threads is None else args.threads
        if threads > 0:
            torch.set_num_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    start = time.perf_counter()
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    results: dict[str, Any] = {
        "meta": {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "quick": args.quick,
            "device": args.device,
            "dtype": args.dtype,
            "shape": args.shape,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_start": os.getloadavg(),
            "versions": _versions(),
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "target_record_over_forward": TARGET,
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="safety-probe-bench-") as tmp:
        work = Path(tmp)
        images = write_images(work / "images", 8)
        if "organism" in wanted:
            path, how = organism_path(args, work)
            plan = organism_plan(args.quick)
            plan.notes.append(how)
            results["models"]["organism"] = bench_model("organism", path, plan, args, images, console.print)
        if "large" in wanted:
            shape = "small" if args.quick else args.shape
            cache = Path(args.model_cache) if args.model_cache else work
            console.print(f"building the random-weight {shape} LLaVA ...")
            dtype = None if args.dtype == "float32" else args.dtype
            path = _build(cache / f"llava-{shape}", SHAPES[shape], dtype)
            plan = large_plan(shape, args.quick, args.device)
            plan.notes.append(f"random-weight LLaVA, decoder {SHAPES[shape]}")
            results["models"][shape] = bench_model(shape, path, plan, args, images, console.print)
    results["meta"]["load_avg_end"] = os.getloadavg()
    results["meta"]["wall_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print_tables(results, console)
    console.print(f"wrote {out} in {results['meta']['wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
