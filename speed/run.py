"""Recording every block against the bare forward: time, peak memory, leak, bytes per pair.

    python -m speed.run                   # organism + a 1B-shaped random LLaVA, CPU (make bench)
    python -m speed.run --quick           # two tiny models, a few seconds of work (the test)
    python -m speed.run --device cuda --dtype bfloat16 --shape 7b

Writes the ``recording`` record of ``speed/results.json`` (``--out``) and prints the tables; docs/speed.md explains
the columns.
Timings are medians over interleaved rounds (every method once per round, shuffled) after warm-up, and each
ratio is the median of the per-round ratios to the bare forward of the same round, so load from other
processes shifts numerator and denominator alike.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from safety_probe.core.errors import InputError
from speed import memory
from speed.baseline import finish, machine
from speed.measure import (
    bytes_per_pair,
    leak_test,
    max_rel_err,
    pairs_for_length,
    summarise,
    sync_of,
    time_rounds,
    timed,
    write_images,
)
from speed.methods import (
    check_bridge,
    make_forward,
    make_hidden_states,
    make_hook_cache,
    make_record,
    make_tl,
    make_trunk,
)
from speed.plans import ORGANISM_LIKE, SHAPES, Plan, large_plan, organism_plan
from speed.results import DEFAULT_OUT, one_line_errors, store
from speed.tables import TARGET, print_tables


def recorders(vlm, plan: Plan) -> tuple[dict[str, Any], list[str]]:
    """method -> Recorder of its backend (``record``: the default), each on a weight-sharing copy of ``vlm`` so that
    ``forward`` runs on an untouched module tree; and a note per backend that cannot run this model."""
    from safety_probe.core.errors import InputError
    from safety_probe.probe.record import DEFAULT_BACKEND, Recorder

    out, notes = {}, []
    for method in (m for m in plan.methods if m.startswith("record")):
        backend = method.removeprefix("record_") if method != "record" else DEFAULT_BACKEND
        try:
            out[method] = Recorder(vlm.shared_copy(), list(range(vlm.n_layers)), backend)
        except InputError as e:
            notes.append(f"{method} not measured: {e}")
    return out, notes


def bench_model(label: str, path: str, plan: Plan, args, images: list[Path], log) -> dict[str, Any]:
    from safety_probe.models.load import load_vlm
    from safety_probe.probe.record import DEFAULT_BACKEND, boot_bridge

    t0 = time.perf_counter()
    vlm = load_vlm(path, device=args.device, dtype=args.dtype)
    n_params = sum(p.numel() for p in vlm.model.parameters())
    log(
        f"[bold]{label}[/]: {path} — {vlm.n_layers} blocks, d={vlm.d_model}, {n_params / 1e6:.1f} M parameters"
    )
    recs, rec_notes = recorders(vlm, plan)
    recorder = recs["record"]
    tl_mode, bridge = "bridge", None
    if args.no_bridge:
        tl_mode = "hook_cache fallback: --no-bridge"
    elif any(m.startswith("tl_") for m in plan.methods):
        try:
            bridge = boot_bridge(vlm)
        except Exception as e:  # noqa: BLE001 - any failure means: use the hook fallback and say why
            tl_mode = f"hook_cache fallback: bridge failed to boot ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    sync = sync_of(args.device)
    rng = random.Random(0)
    result: dict[str, Any] = {
        "path": str(path),
        "n_layers": vlm.n_layers,
        "d_model": vlm.d_model,
        "n_params": n_params,
        "dtype": str(vlm.dtype).replace("torch.", ""),
        "device": args.device,
        "default_backend": DEFAULT_BACKEND,
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
            elif m in recs:
                fns[m] = make_record(recs[m], batch, span)
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
        # Correctness before speed: every backend agrees with an independent full-output hook cache.
        ref = make_hook_cache(vlm, batch, span)()
        errs = {m: max_rel_err(fns[m](), ref) for m in recs}
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
    result["record_over_forward"] = max(ratios)  # the default backend's worst case
    result["record_over_forward_median"] = statistics.median(ratios)
    result["record_over_forward_by_backend"] = {
        (m.removeprefix("record_") if m != "record" else DEFAULT_BACKEND): max(c["ratio_to_forward"][m] for c in
                                                                                result["cases"])
        for m in recs
    }
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
    result["bytes_per_pair"] = bytes_per_pair(recorder.vlm, images, plan)
    result["notes"] = plan.notes + rec_notes
    result["wall_s"] = time.perf_counter() - t0
    del bridge, recorder, recs, vlm
    memory.settle()
    return result


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m speed.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models and few rounds (for tests)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--shape", default="1b", choices=["1b", "7b"], help="the random-weight large LLaVA's shape"
    )
    p.add_argument("--models", default="organism,large", help="comma list of: organism, large")
    p.add_argument("--model-path", help="measure this model folder in the organism slot")
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
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON (default speed/results.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the recording measurement, store it under ``recording`` of the results file and print its tables."""
    from rich.console import Console

    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda given but torch sees no GPU")
    if not args.device.startswith("cuda"):
        threads = 1 if args.threads is None else args.threads
        if threads > 0:
            torch.set_num_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(wanted) - {"organism", "large"}:
        raise InputError(f"--models {sorted(set(wanted) - {'organism', 'large'})[0]}: use organism, large")
    meta = machine(quick=args.quick, device=args.device, dtype=args.dtype, shape=args.shape,
                   gpu=torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                   target_record_over_forward=TARGET)
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="safety-probe-speed-") as tmp:
        work = Path(tmp)
        images = write_images(work / "images", 8)
        if "organism" in wanted:
            path, how = organism_path(args, work)
            plan = organism_plan(args.quick)
            plan.notes.append(how)
            models["organism"] = bench_model("organism", path, plan, args, images, console.print)
        if "large" in wanted:
            shape = "small" if args.quick else args.shape
            cache = Path(args.model_cache) if args.model_cache else work
            console.print(f"building the random-weight {shape} LLaVA ...")
            dtype = None if args.dtype == "float32" else args.dtype
            path = _build(cache / f"llava-{shape}", SHAPES[shape], dtype)
            plan = large_plan(shape, args.quick, args.device)
            plan.notes.append(f"random-weight LLaVA, decoder {SHAPES[shape]}")
            models[shape] = bench_model(shape, path, plan, args, images, console.print)
    record = {"meta": finish(meta), "models": models}
    out = Path(args.out)
    store(out, "recording", record)
    print_tables(record, console)
    console.print(f"wrote {out} in {record['meta']['wall_s']:.0f} s")
    return record


if __name__ == "__main__":
    sys.exit(one_line_errors(lambda: main(sys.argv[1:])))
