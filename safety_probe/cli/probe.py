"""`probe-layers` (= `safety-probe probe`): record and measure in one model pass, locate, measure the shift, draw."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from safety_probe.cli.options import (
    DTYPE_NAMES,
    ModelOptions,
    check_device,
    check_layer_option,
    launched_processes,
    load_model,
    main_first,
)
from safety_probe.cli.presets import is_organism
from safety_probe.core.checks import check_choice, check_number
from safety_probe.core.errors import InputError
from safety_probe.core.files import check_input_path, check_out_dir
from safety_probe.data.prompts import PromptSettings
from safety_probe.models.folder import read_model_config
from safety_probe.models.load import resolve_model
from safety_probe.probe.config import AnalysisConfig

#: The files a probe-layers run writes into its output folder (figures/ besides, unless --figures false).
RUN_FILES = ("states.safetensors", "measurements.safetensors", "measurements.json", "layers.json", "layers.csv",
             "run.json")


@dataclass
class ProbeConfig(ModelOptions):
    """probe-layers: record paired image/caption states, measure, locate the safety layers, measure the shift, draw."""

    pairs: str | None = None
    """Pairs JSONL file (image, caption, instruction, label, scene). Default with an organism: its built-in pairs."""
    out: str = "probe-out"
    """Output folder (states.safetensors, measurements.*, layers.json, layers.csv, run.json, figures/)."""
    layers: str = "all"
    """Blocks to record: all, a range 8-16, or a list 3,5,7 (0-based block indices). Locating needs all: with a
    subset only the states are recorded and the shift measured."""
    batch_size: int = 8
    """Pairs per forward pass."""
    demo_pairs: int = 120
    """Number of built-in organism pairs when --pairs is not given (organisms only)."""
    backend: str = "hooks"
    """Recording backend: hooks (plain forward hooks, the fastest), nnsight (a traced forward) or transformerlens
    (TransformerLens' bridge, blocks.{l}.hook_resid_post; LLaVA, LLaVA-NeXT, Idefics3, Gemma 3). All pool alike."""
    figures: bool = True
    """Draw the figures (PDF, PNG, HTML) into OUT/figures."""
    strict: bool = False
    """Refuse a pairs file in which a line repeats an earlier pair (default: counted once, with one warning line
    naming the lines)."""
    plan: bool = False
    """Print what the run will cost — the bytes of every file, the peak memory, an estimate of each phase's time —
    from the model's config and the pairs, and stop: no forward, no weights read (a config folder is enough)."""
    prompts: PromptSettings = field(default_factory=PromptSettings)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def validate(self) -> None:
        """Every option checked before any work: one line naming the option and what it allows."""
        from safety_probe.models.load import n_layers_of
        from safety_probe.probe.record import BACKENDS

        check_choice(self, "backend", BACKENDS)
        check_number(self, "batch_size", 1)
        check_number(self, "demo_pairs", 1)
        self.analysis.validate()
        check_out_dir(self.out)
        if self.pairs is not None:
            check_input_path(self.pairs, "--pairs file")
        if self.plan:
            check_choice(self, "dtype", DTYPE_NAMES)
            check_device(self.device)
            read_model_config(resolve_model(self.model))
        else:
            super().validate()
        if self.pairs is None and not is_organism(self.model):
            raise InputError("--pairs is required for a model other than the organisms")
        n_layers = n_layers_of(self.model, self.trust_remote_code)
        check_layer_option(self, "layers", n_layers)
        check_layer_option(self.analysis.locate, "safety_layers", n_layers)


def probe_layers(cfg: ProbeConfig) -> Path:
    """Run probe-layers (holding the lock of its output folder); returns the output folder."""
    from safety_probe.core.lock import output_lock

    if cfg.plan:
        return print_plan(cfg, Path(cfg.out))
    with output_lock(cfg.out):
        return _probe_layers(cfg, Path(cfg.out))


def print_plan(cfg: ProbeConfig, out: Path) -> Path:
    """``probe-layers --plan``: the :class:`~safety_probe.probe.plan.RunPlan` of this run, printed; nothing written
    but the organisms' built-in pairs (into a temporary folder)."""
    import tempfile

    from safety_probe.cli import presets
    from safety_probe.cli.options import device_of
    from safety_probe.data.pairs import load_pairs
    from safety_probe.probe.plan import plan_run

    cfg, _ = with_presets(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        pairs_path = Path(cfg.pairs) if cfg.pairs else presets.demo_pairs(Path(tmp) / "pairs", cfg.demo_pairs)
        pairs = load_pairs(pairs_path, strict=cfg.strict, require_caption=cfg.prompts.text_run == "caption",
                           require_text_query=cfg.prompts.text_run == "query")
        shown = str(Path(cfg.pairs) if cfg.pairs else out / "pairs" / "pairs.jsonl")
        run = plan_run(cfg.model, pairs, cfg.analysis.measure, prompts=cfg.prompts, batch_size=cfg.batch_size,
                       dtype=cfg.dtype, device=device_of(cfg.device), trust_remote_code=cfg.trust_remote_code,
                       metadata={"model": cfg.model, "pairs": shown, "run_key": "0" * 16})
    print("\n".join(run.lines()))
    return out


def with_presets(cfg: ProbeConfig) -> tuple[ProbeConfig, str | None]:
    """``cfg`` with an organism's own refusal phrase where none was given, and the note that says so."""
    from safety_probe.cli import presets

    if not is_organism(cfg.model) or cfg.analysis.measure.refusal_phrase is not None:
        return cfg, None
    measure = replace(cfg.analysis.measure, refusal_phrase=presets.refusal_phrase(cfg.model))
    return replace(cfg, analysis=replace(cfg.analysis, measure=measure)), presets.note(cfg.model, "refusal phrase")


def _probe_layers(cfg: ProbeConfig, out: Path) -> Path:
    from safety_probe.analysis.analyze import analyze
    from safety_probe.cli import presets
    from safety_probe.cli.show import print_layers
    from safety_probe.core.runinfo import run_info
    from safety_probe.data.pairs import load_pairs
    from safety_probe.models.layers import parse_layers
    from safety_probe.probe.measure import measure, measurement_key
    from safety_probe.probe.record import PairStates, record, recording_key

    started = time.time()
    cfg, note = with_presets(cfg)
    processes = launched_processes(cfg.device)
    with main_first(processes):  # the organism's default pairs are written once
        pairs_path = Path(cfg.pairs) if cfg.pairs else presets.demo_pairs(out / "pairs", cfg.demo_pairs)
    prompts = cfg.prompts
    pairs = load_pairs(pairs_path, strict=cfg.strict, require_caption=prompts.text_run == "caption",
                       require_text_query=prompts.text_run == "query")
    vlm = load_model(cfg, processes)
    layers = parse_layers(cfg.layers, vlm.n_layers)
    locating = layers == list(range(vlm.n_layers))
    key = (measurement_key(vlm, pairs, prompts, cfg.analysis.measure, cfg.batch_size, cfg.backend) if locating
           else recording_key(vlm, pairs, layers, prompts, cfg.batch_size, cfg.backend))
    main = processes is None or processes.is_main_process
    states = PairStates.resume(out / "states.safetensors", key)  # a rerun after a kill in the analysis keeps them
    measurements = None
    if states is not None and locating:
        measurements = _resumed_measurements(out, key)
        states = states if measurements is not None else None
    if states is None:
        checkpoint = out / ".states.partial.safetensors"
        if locating:
            states, measurements = measure(vlm, pairs, cfg.analysis.measure, prompts=prompts, batch_size=cfg.batch_size,
                                           checkpoint=checkpoint, backend=cfg.backend, processes=processes)
        else:
            states = record(vlm, pairs, layers=layers, prompts=prompts, batch_size=cfg.batch_size,
                            checkpoint=checkpoint, backend=cfg.backend, processes=processes)
        if main:
            if measurements is not None:
                measurements.save(out, key)
            states.save(out / "states.safetensors", metadata={"model": cfg.model, "pairs": str(pairs_path),
                                                             "run_key": key})
    if not main:
        return out  # the main process analyses the merged states and writes every result
    result = analyze(states, measurements if locating else None, cfg.analysis.locate)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    result.save(out, figures=cfg.figures, run=run_info(
        cfg, started, note=note, pairs_file=str(pairs_path), n_pairs=len(pairs), layers=layers,
        model_family=vlm.family, n_layers=vlm.n_layers, prompts=prompts.settings(), run_key=key))
    print_layers(result)
    print(f"results -> {out}")
    return out


def _resumed_measurements(out: Path, key: str):
    """The measurements of run ``key`` in ``out``, or None when absent, unreadable or of another run."""
    from safety_probe.core.resume import resumable
    from safety_probe.probe.measure import Measurements

    if not (out / "measurements.json").is_file():
        return None
    try:
        measurements, stored = Measurements.load(out), Measurements.stored_key(out)
    except InputError:
        measurements, stored = None, None
    return measurements if resumable(out / "measurements.json", stored, key, "measurements") else None
