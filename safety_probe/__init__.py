"""safety-probe: probe, locate, measure and re-align the cross-modal safety mechanism of vision-language models.

    >>> import safety_probe as sp
    >>> vlm = sp.load_vlm("llava-hf/llava-1.5-7b-hf", device="cuda", dtype="bfloat16")   # or "organism-smol"
    >>> pairs = sp.load_pairs("pairs.jsonl")
    >>> states, measurements = sp.measure(vlm, pairs)    # one model pass: states [n_pairs, n_layers, d_model] x 4
    >>> result = sp.analyze(states, measurements)        # pure: safety layers, locators, shift
    >>> result.safety_layers, result.frame()
    >>> result.plot_locate(), result.save("runs/llava", figures=True)   # what probe-layers --out runs/llava writes
    >>> vlm.run_with_cache(pairs[:2], "image")["blocks.3.hook_resid_post"]   # [2, seq, d_model]

The stages, one package each, data flowing one way: ``core`` → ``data``, ``models`` → ``probe`` (every forward that
reads the model) → ``analysis`` (pure functions of what was saved) → ``eval`` → ``tga``, ``defenses`` → ``compare`` →
``viz`` → ``cli``. Figures: :mod:`safety_probe.viz`. Names resolve lazily, so ``import safety_probe`` stays fast and
loads torch only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_vlm": "safety_probe.models.load",
    "VLM": "safety_probe.models.vlm",
    "load_pairs": "safety_probe.data.pairs",
    "Pair": "safety_probe.data.pairs",
    "PromptSettings": "safety_probe.data.prompts",
    "Trace": "safety_probe.models.hooks",
    "record": "safety_probe.probe.record",
    "measure": "safety_probe.probe.measure",
    "AnalysisConfig": "safety_probe.probe.config",
    "analyze": "safety_probe.analysis.analyze",
    "LayerAnalysis": "safety_probe.analysis.results",
    "LayerScores": "safety_probe.analysis.scores",
    "evaluate": "safety_probe.eval.evaluate",
    "TGAConfig": "safety_probe.tga.config",
    "train": "safety_probe.tga.train",
    "EvalResult": "safety_probe.eval.results",
    "run_compare": "safety_probe.compare",
    "CompareResult": "safety_probe.compare",
    "draw_all": "safety_probe.viz.layers",
    "InputError": "safety_probe.core.errors",
}

__all__ = ["AnalysisConfig", "CompareResult", "EvalResult", "InputError", "LayerAnalysis", "LayerScores", "Pair", "PromptSettings", "TGAConfig", "Trace",
           "VLM", "analyze", "draw_all", "evaluate", "load_pairs", "load_vlm", "measure", "record", "run_compare", "train"]

if TYPE_CHECKING:  # what editors and type checkers see; at run time the names load on first use
    from safety_probe.analysis.analyze import analyze
    from safety_probe.analysis.results import LayerAnalysis
    from safety_probe.analysis.scores import LayerScores
    from safety_probe.compare import CompareResult, run_compare
    from safety_probe.core.errors import InputError
    from safety_probe.data.pairs import Pair, load_pairs
    from safety_probe.data.prompts import PromptSettings
    from safety_probe.eval.evaluate import evaluate
    from safety_probe.eval.results import EvalResult
    from safety_probe.models.hooks import Trace
    from safety_probe.models.load import load_vlm
    from safety_probe.models.vlm import VLM
    from safety_probe.probe.config import AnalysisConfig
    from safety_probe.probe.measure import measure
    from safety_probe.probe.record import record
    from safety_probe.tga.config import TGAConfig
    from safety_probe.tga.train import train
    from safety_probe.viz.layers import draw_all


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'safety_probe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
