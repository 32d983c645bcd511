"""The before/after harness: TGA, its baselines and the inference-time defenses trained or applied, evaluated and
compared on the same held-out pairs (:func:`run_compare`, ``safety-probe tga``), and what it found
(:class:`CompareResult`, ``compare.json``)."""

from safety_probe.compare.result import CompareResult
from safety_probe.compare.run import BASELINES, PAPER, CompareConfig, ModelLoader, layer_shift, run_compare

__all__ = ["BASELINES", "PAPER", "CompareConfig", "CompareResult", "ModelLoader", "layer_shift", "run_compare"]
