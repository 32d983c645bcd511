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
    "record": "safety_probe.probe.record",
    "PairStates": "safety_probe.probe.record",
    "parse_layers": "safety_probe.models.layers",
    "analyze": "safety_probe.analysis.analyze",
    "LayerAnalysis": "safety_probe.analysis.analyze",
    "semantic_shift": "safety_probe.analysis.shift",
    "LayerScores": "safety_probe.analysis.scores",
    "choose_safety_layers": "safety_probe.analysis.locate",
    "refusal_direction": "safety_probe.analysis.locate",
    "evaluate": "safety_probe.eval.evaluate",
    "KeywordJudge": "safety_probe.eval.evaluate",
    "benchmark_table": "safety_probe.eval.tables",
    "draw_all": "safety_probe.viz.layers",
    "plot_shift": "safety_probe.viz.layers",
    "plot_locate": "safety_probe.viz.layers",
    "plot_locators": "safety_probe.viz.layers",
    "plot_patching": "safety_probe.viz.layers",
    "plot_tga_shift": "safety_probe.viz.evaluation",
    "plot_tga_dsr": "safety_probe.viz.evaluation",
    "plot_eval": "safety_probe.viz.evaluation",
    "TGAConfig": "safety_probe.tga.config",
    "CompareConfig": "safety_probe.compare",
    "run_compare": "safety_probe.compare",
    "Trace": "safety_probe.models.hooks",
    "Retriever": "safety_probe.models.clip",
    "InputError": "safety_probe.core.errors",
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
