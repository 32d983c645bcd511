"""safety-probe: probe, locate, measure and re-align the cross-modal safety mechanism of vision-language models.

    >>> import safety_probe as sp
    >>> vlm = sp.load_vlm("llava-hf/llava-1.5-7b-hf", device="cuda", dtype="bfloat16")
    >>> pairs = sp.load_pairs("pairs.jsonl")
    >>> states = sp.record(vlm, pairs)                 # [n_pairs, n_layers, d_model] x 4
    >>> result = sp.analyze(vlm, pairs, states)        # safety layers, locators, shift
    >>> result.safety_layers, result.frame()

The shipped model organism, a test subject: ``sp.load_vlm(safety_probe.organism.ORGANISM_DIR)``.
Names resolve lazily, so ``import safety_probe`` stays fast and loads torch only when used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_vlm": "safety_probe.models",
    "VLM": "safety_probe.models",
    "load_pairs": "safety_probe.data.pairs",
    "Pair": "safety_probe.data.pairs",
    "record": "safety_probe.probe",
    "PairStates": "safety_probe.probe",
    "parse_layers": "safety_probe.layers",
    "analyze": "safety_probe.analysis",
    "LayerAnalysis": "safety_probe.analysis",
    "semantic_shift": "safety_probe.shift",
    "LayerScores": "safety_probe.scores",
    "choose_safety_layers": "safety_probe.locate",
    "refusal_direction": "safety_probe.locate",
    "evaluate": "safety_probe.evaluation",
    "KeywordJudge": "safety_probe.evaluation",
    "benchmark_table": "safety_probe.evaluation_suite",
    "draw_all": "safety_probe.plots",
    "plot_shift": "safety_probe.plots",
    "plot_locate": "safety_probe.plots",
    "plot_locators": "safety_probe.plots",
    "plot_patching": "safety_probe.plots",
    "plot_tga_shift": "safety_probe.plots_eval",
    "plot_tga_dsr": "safety_probe.plots_eval",
    "plot_eval": "safety_probe.plots_eval",
    "TGAConfig": "safety_probe.tga.config",
    "CompareConfig": "safety_probe.compare",
    "run_compare": "safety_probe.compare",
    "Trace": "safety_probe.hooks",
    "Retriever": "safety_probe.retrieve",
    "InputError": "safety_probe.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'safety_probe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
