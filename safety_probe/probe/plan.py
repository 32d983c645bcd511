"""What a probe-layers run will cost, before any forward: the bytes it writes, the memory it peaks at, and an estimate
of each phase's time, from the model's config and the pairs alone (no weights are read).

    >>> p = plan_run("llava-hf/llava-1.5-7b-hf", pairs, MeasureOptions(), batch_size=8, dtype="bfloat16")
    >>> p.files["states.safetensors"], p.phases["patching"]       # bytes; seconds

The model is built on the meta device (shapes, no memory) and the pairs are encoded by its own processor, so the
sequence lengths are the real ones. The bytes of the safetensors files are exact (:func:`safetensors_bytes` of the
shapes the run writes) when no first token of the refusals opens answers too (each such token adds n × L × pool
float32 to measurements.safetensors); the JSON files are estimated. Times are floating-point work (2 × parameters per token, the
attention, the logit lens) divided by a throughput measured on the device in the model's dtype: a guide to within a
factor of about two, not a benchmark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from safety_probe.core.files import safetensors_bytes
from safety_probe.data.pairs import Pair
from safety_probe.data.prompts import DEFAULT_PROMPTS, PromptSettings
from safety_probe.models.load import resolve_model
from safety_probe.models.vlm import DTYPES, VLM
from safety_probe.probe.config import MeasureOptions
from safety_probe.probe.lens import GAIN_TOP
from safety_probe.probe.measure import harmful_index
from safety_probe.probe.record import STATE_NAMES

_DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


@dataclass
class RunPlan:
    """A probe-layers run in numbers: ``files`` (name → bytes; exact for safetensors), ``phases`` (name → estimated
    seconds), ``peak_bytes`` (estimated device memory) and ``facts`` (the shapes behind them)."""

    files: dict[str, int]
    phases: dict[str, float]
    peak_bytes: int
    facts: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The plan for people, one line each."""
        out = [f"model: {self.facts['model']} ({self.facts['family']}, {self.facts['n_layers']} blocks, d_model "
               f"{self.facts['d_model']}, {self.facts['parameters'] / 1e9:.2f} B parameters, {self.facts['dtype']})",
               f"pairs: {self.facts['n_pairs']} ({self.facts['patched']} patched); tokens per run: image "
               f"{self.facts['image_tokens']:.0f}, text {self.facts['text_tokens']:.0f} (mean)",
               "bytes written:"]
        out += [f"  {name:28s} {_size(size):>10s}  " + (f"({size:,} bytes)" if name.endswith(".safetensors")
                                                         else "(estimate)") for name, size in self.files.items()]
        out.append(f"peak memory (estimate): {_size(self.peak_bytes)}")
        out.append(f"time (estimate, {self.facts['throughput'] / 1e9:.0f} GFLOP/s measured on "
                   f"{self.facts['device']}):")
        out += [f"  {name:28s} {_duration(seconds):>10s}" for name, seconds in self.phases.items()]
        return out


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


class _MetaVLM(VLM):
    """A :class:`VLM` whose model lives on the meta device: it encodes on the CPU (the lengths are what is asked)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


def meta_vlm(name: str, trust_remote_code: bool = False) -> VLM:
    """The model ``name`` names, built on the meta device from its config (no weights read, no memory)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from safety_probe.models.processor import load_processor

    path = resolve_model(name)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    return _MetaVLM(model, load_processor(path, trust_remote_code=trust_remote_code), name=name)


def throughput(device: str, dtype: torch.dtype, size: int = 512, repeats: int = 8) -> float:
    """Floating-point operations per second of a square matrix product on ``device`` in ``dtype`` (the fastest of a
    few; a warm-up first)."""
    a = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ a
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def plan_run(model: str, pairs: list[Pair], cfg: MeasureOptions, *, prompts: PromptSettings = DEFAULT_PROMPTS,
             batch_size: int = 8, dtype: str = "float32", device: str = "cpu", metadata: dict[str, str] | None = None,
             trust_remote_code: bool = False) -> RunPlan:
    """The :class:`RunPlan` of ``probe-layers`` on ``pairs`` (see the module docstring); ``metadata``: what the run
    writes into states.safetensors beside its layers (model, pairs file, run key)."""
    vlm = meta_vlm(model, trust_remote_code)
    n, n_layers, d = len(pairs), vlm.n_layers, vlm.d_model
    vocab = vlm.unembed.weight.shape[0]
    patched = len(harmful_index(pairs)[:cfg.patch_pairs])
    lengths = {run: [int(length) for i in range(0, n, batch_size)
                     for length in vlm.encode(pairs[i:i + batch_size], run, prompts).inputs["attention_mask"].sum(1)]
               for run in ("image", "text")}
    tower = sum(p.numel() for name, p in vlm.model.named_parameters() if "vision" in name)
    decoder = sum(p.numel() for p in vlm.decoder.parameters())
    parameters = sum(p.numel() for p in vlm.model.parameters())
    pool, top = cfg.pool_size, min(cfg.lens_top, vocab)
    layers = {"layers": str(list(range(n_layers)))}
    files = {
        "states.safetensors": safetensors_bytes({name: ("F32", (n, n_layers, d)) for name in STATE_NAMES},
                                                {**layers, **(metadata or {})}),
        "measurements.safetensors": safetensors_bytes({
            "lens.pool_ids": ("I64", (pool,)), "lens.pool_logprob": ("F32", (n, n_layers, pool)),
            "lens.top_ids": ("I64", (n, n_layers, top)), "lens.top_logprob": ("F32", (n, n_layers, top)),
            "lens.top_prev_logprob": ("F32", (n, n_layers, top)), "lens.rise_argmax": ("I64", (n, n_layers)),
            "lens.gain_top_ids": ("I64", (n, n_layers, min(GAIN_TOP, vocab))), "attention": ("F32", (n, n_layers)),
            "tail_cos": ("F32", (n, n_layers)), "patched": ("I64", (patched,)),
            "patch.image": ("F32", (patched, pool)), "patch.text": ("F32", (patched, pool)),
            "patch.caption": ("F32", (patched, n_layers, pool)), "patch.tail": ("F32", (patched, n_layers, pool)),
            "cont.ids": ("I64", (0,)), "cont.logprob": ("F32", (n, 0, n_layers, pool))},
            {"run_key": (metadata or {}).get("run_key", "")}),
        "measurements.json": n * (120 + 12 * cfg.answer_tokens) + 80 * pool + 2000,
        "layers.json": n * 60 + n_layers * 400 + 4000,
        "layers.csv": n_layers * 1200,
    }
    text_tokens, image_tokens = sum(lengths["text"]) / n, sum(lengths["image"]) / n
    flops_forward = lambda tokens: 2 * decoder * tokens + 4 * n_layers * tokens**2 * d  # noqa: E731
    vision = 2 * tower * image_tokens  # a bound: every image token from the tower
    answer = sum(flops_forward(t) + 2 * d * vocab + cfg.answer_tokens * (2 * decoder + 2 * d * vocab + 4 * n_layers * d *
                 (t + cfg.answer_tokens)) for t in lengths["text"])
    above = sum(n_layers - 1 - layer for layer in range(n_layers)) / n_layers
    rate = throughput(device, DTYPES[dtype])
    phases = {
        "image runs": n * (vision + flops_forward(image_tokens)) / rate,
        "text runs, answered": answer / rate,
        "patching (both)": 2 * patched * n_layers * (vision + flops_forward(image_tokens) * above / n_layers) / rate,
        "lens readouts": 2 * (n + 2 * patched) * n_layers * d * vocab / rate,
    }
    item = DTYPES[dtype].itemsize
    longest = max(lengths["image"] + lengths["text"]) + cfg.answer_tokens
    peak = (parameters * item + 2 * n_layers * batch_size * longest * d * item
            + min(patched, batch_size) * longest * d * n_layers * item + 4 * n * n_layers * d * 4
            + 8 * n_layers * vocab * 4)
    facts = {"model": model, "family": vlm.family, "n_layers": n_layers, "d_model": d, "parameters": parameters,
             "dtype": dtype, "n_pairs": n, "patched": patched, "image_tokens": image_tokens,
             "text_tokens": text_tokens, "throughput": rate, "device": device}
    return RunPlan(files, phases, int(peak), facts)
