"""`probe-layers` (= `safety-probe probe`): record, locate, measure, draw."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from safety_probe.cli.figures import draw_figures
from safety_probe.cli.options import (
    ModelOptions,
    check_layers,
    is_organism,
    launched_processes,
    load_model,
    main_first,
    model_path,
)
from safety_probe.errors import InputError, check_choice, check_range, check_text
from safety_probe.io import check_input_path, check_out_dir
from safety_probe.prompts import REFUSAL


@dataclass
class ProbeConfig(ModelOptions):
    """probe-layers: record paired image/caption states, locate the safety layers, measure the shift, draw figures."""

    pairs: str | None = None
    """Pairs JSONL file (image, caption, instruction, label, scene). Default with the organism: its built-in pairs."""
    out: str = "probe-out"
    """Output folder (states.safetensors, run.json, layers.json, layers.csv, figures/)."""
    layers: str = "all"
    """Blocks to record: all, a range 8-16, or a list 3,5,7 (0-based block indices)."""
    batch_size: int = 8
    """Pairs per forward pass."""
    system_prompt: str | None = None
    """System prompt put before every prompt of both runs (recorded in run.json)."""
    padding_side: str = "left"
    """Padding side of batched prompts: left or right (pooling follows the attention mask either way)."""
    demo_pairs: int = 120
    """Number of built-in organism pairs when --pairs is not given (organism only)."""
    safety_layers: str | None = None
    """Override the located safety layers, e.g. 9-17 (the analysis is still run and saved)."""
    rule: str = "default"
    """Safety-layer rule: default (the layers where a refusal token rises the most for at least --band-share of the
    refusing pairs) or code (the released code's mean start .. mean end)."""
    band_share: float = 0.5
    """default rule: share of refusing pairs that must fire at a layer for it to join the band."""
    min_support: int = 5
    """Fewest refused harmful text runs the band is drawn from; below it no band is drawn (a warning)."""
    candidates: int = 10
    """Algorithm 1: the argmax of D_j runs over the lens' this-many most probable tokens (0: all, the paper verbatim)."""
    refusal_tokens: str = "generated"
    """Refusal token set K: generated (first tokens of the model's own text-run refusals) or phrases (a word list)."""
    refusal_phrase: str = REFUSAL
    """The model's own refusal phrase: a response containing it counts as a refusal; its first word joins the
    fallback word list of K."""
    text_template: str = "caption"
    """Text run: caption ("{caption}\\n{instruction}") or scene ("{instruction}\\nScene: {caption}", the released
    code's kind); recorded in run.json."""
    text_run: str = "caption"
    """What the text run sends: caption (the caption in --text-template, the paper's run) or query (each pair's
    text_query, the benchmark's own text-only question, as the whole user text; caption_mean then pools the
    query's tokens). Recorded in run.json and layers.json."""
    patch_pairs: int = 64
    """Harmful pairs used for activation patching (one forward per pair and block); 0 turns it off."""
    patch_mode: str = "shift"
    """Patching: shift (move image tokens so their mean equals the caption's) or replace (set them to it)."""
    backend: str = "hooks"
    """Recording backend: hooks (plain forward hooks, the fastest), nnsight (a traced forward) or transformerlens
    (TransformerLens' bridge, blocks.{l}.hook_resid_post; LLaVA, LLaVA-NeXT, Idefics3, Gemma 3). All pool alike."""
    figures: bool = True
    """Draw the figures (PDF, PNG, HTML) into OUT/figures."""

    def validate(self) -> None:
        """Every option checked before any work: one line naming the option and what it allows."""
        from safety_probe.locate import SAFETY_LAYER_RULES
        from safety_probe.models.vlm import n_layers_of
        from safety_probe.patching import PATCH_MODES
        from safety_probe.probe import BACKENDS
        from safety_probe.prompts import TEXT_RUNS, TEXT_TEMPLATES

        for name, choices in (("padding_side", ("left", "right")), ("rule", SAFETY_LAYER_RULES),
                              ("refusal_tokens", ("generated", "phrases")), ("text_template", TEXT_TEMPLATES),
                              ("text_run", TEXT_RUNS), ("patch_mode", PATCH_MODES), ("backend", BACKENDS)):
            check_choice(self, name, choices)
        for name, low in (("batch_size", 1), ("demo_pairs", 1), ("min_support", 1), ("candidates", 0),
                          ("patch_pairs", 0)):
            check_range(self, name, low)
        check_range(self, "band_share", 0.0, 1.0, low_open=True)
        check_text(self, "refusal_phrase", required=True)
        check_out_dir(self.out)
        if self.pairs is not None:
            check_input_path(self.pairs, "--pairs file")
        super().validate()
        if self.pairs is None and not is_organism(self.model):
            raise InputError("--pairs is required for a model other than the organism")
        n_layers = n_layers_of(model_path(self.model), self.trust_remote_code)
        for name in ("layers", "safety_layers"):
            check_layers(self, name, n_layers)


def _probe_pairs(cfg: ProbeConfig, out: Path) -> Path:
    if cfg.pairs:
        return Path(cfg.pairs)
    from safety_probe.organism import preset, world

    return world.write_pairs(seed=preset.DEMO_SEED, n=cfg.demo_pairs, out_dir=out / "pairs")


def probe_layers(cfg: ProbeConfig) -> Path:
    """Run probe-layers (holding the lock of its output folder); returns the output folder."""
    from safety_probe.io import output_lock

    with output_lock(cfg.out):
        return _probe_layers(cfg, Path(cfg.out))


def _probe_layers(cfg: ProbeConfig, out: Path) -> Path:
    from safety_probe.analysis import analyze, print_table
    from safety_probe.data.pairs import load_pairs
    from safety_probe.io import write_json
    from safety_probe.layers import parse_layers
    from safety_probe.probe import PairStates, record, run_key
    from safety_probe.prompts import TEXT_SPANS
    from safety_probe.runinfo import run_info

    started = time.time()
    processes = launched_processes(cfg.device)
    with main_first(processes):  # the organism's default pairs are written once
        pairs_path = _probe_pairs(cfg, out)
    pairs = load_pairs(pairs_path, require_caption=cfg.text_run == "caption", require_text_query=cfg.text_run == "query")
    vlm = load_model(cfg, processes)
    vlm.text_template, vlm.text_run = cfg.text_template, cfg.text_run
    layers = parse_layers(cfg.layers, vlm.n_layers)
    override = parse_layers(cfg.safety_layers, vlm.n_layers) if cfg.safety_layers else None
    key = run_key(vlm, pairs, layers, cfg.system_prompt, cfg.padding_side, cfg.batch_size, cfg.backend)
    states = PairStates.resume(out / "states.safetensors", key)  # a rerun after a kill in the analysis keeps them
    main = processes is None or processes.is_main_process
    if states is None:
        states = record(vlm, pairs, layers, cfg.batch_size, cfg.system_prompt, cfg.padding_side,
                        checkpoint=out / ".states.partial.safetensors", backend=cfg.backend, processes=processes)
        if main:
            states.save(out / "states.safetensors",
                        metadata={"model": cfg.model, "pairs": str(pairs_path), "run_key": key})
    if not main:
        return out  # the main process analyses the merged states and writes every result
    result = analyze(vlm, pairs, states, cfg.system_prompt, (cfg.refusal_phrase,), cfg.rule, override,
                     cfg.patch_pairs, cfg.patch_mode, cfg.batch_size, candidates=cfg.candidates,
                     band_share=cfg.band_share, min_support=cfg.min_support, refusal_tokens=cfg.refusal_tokens)
    result.save(out)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if cfg.figures:
        draw_figures(out)
    write_json(out / "run.json", run_info(cfg, started, pairs_file=str(pairs_path), n_pairs=len(pairs),
                                          layers=layers, model_family=vlm.family, n_layers=vlm.n_layers,
                                          caption_mean_span=TEXT_SPANS[cfg.text_run], run_key=key))
    print_table(result)
    print(f"results -> {out}")
    return out
