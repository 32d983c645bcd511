"""`safety-probe defend`: calibrate one inference-time defense and evaluate it beside the undefended model."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from safety_probe.cli.options import ModelOptions, check_layer_option, load_model
from safety_probe.cli.presets import is_organism
from safety_probe.cli.show import print_benchmarks, print_comparison
from safety_probe.core.errors import InputError
from safety_probe.defenses.base import DefenseOptions


@dataclass
class DefendConfig(ModelOptions, DefenseOptions):
    """safety-probe defend: calibrate one inference-time defense on --calibrate pairs, evaluate it on --pairs beside
    the undefended model, with its inference cost (docs/defenses.md)."""

    method: str = ""
    """Defense: refusal_steering[:add|ablate], shift_correction[:cmrm|shiftdc], hidden_detect[:cosine|logprob] or
    self_check (the first mode is the default)."""
    calibrate: str = ""
    """Calibration pairs JSONL (labelled harmful/benign): everything the defense fits comes from these alone; never
    the --pairs file."""
    pairs: str = ""
    """Test pairs JSONL, evaluated undefended and defended."""
    layers: str = ""
    """The layers the defense works at: a layers.json (its safety_layers, from probe-layers) or a spec like 4-6."""
    out: str = "defend-out"
    """Output folder: metrics.json (defended), metrics_plain.json (undefended), responses.jsonl, state/, run.json. The
    two models' metrics are printed side by side with the difference."""
    state: str | None = None
    """A state/ folder saved by an earlier run: load the defense from it instead of calibrating (--calibrate is then
    only recorded)."""
    repeats: int = 3
    """Timing: plain and defended evaluations are repeated this often, interleaved; the cost compares the fastest."""

    def validate(self) -> None:
        """Every option checked before any work (one-line InputError naming the option)."""
        from safety_probe.core.files import check_input_path, check_out_dir
        from safety_probe.defenses import method_name
        from safety_probe.defenses.base import check_calibration, check_options
        from safety_probe.models.load import n_layers_of

        if not self.method:
            raise InputError("--method is required: refusal_steering, shift_correction, hidden_detect or self_check")
        try:
            method_name(self.method)
        except InputError as e:
            raise InputError(f"--method: {e}") from None
        check_options(self)
        if self.repeats < 1:
            raise InputError(f"--repeats must be >= 1, got {self.repeats}")
        if not self.pairs:
            raise InputError("--pairs is required: the test pairs file")
        check_input_path(self.pairs, "--pairs")
        if self.state is None:
            check_calibration(self.calibrate, self.pairs)
        else:
            check_input_path(self.state, "--state", folder=True)
        if not self.layers:
            raise InputError("--layers is required: a layers.json from probe-layers or a spec like 4-6")
        check_out_dir(self.out)
        ModelOptions.validate(self)
        check_layer_option(self, "layers", n_layers_of(self.model, self.trust_remote_code), files=True)


def run_defend(cfg: DefendConfig) -> Path:
    """Run `safety-probe defend` (holding the lock of its output folder); returns the output folder."""
    from safety_probe.core.lock import output_lock

    with output_lock(cfg.out):
        return _run_defend(cfg)


def _run_defend(cfg: DefendConfig) -> Path:
    from safety_probe.core.files import check_out_dir, write_json, write_jsonl
    from safety_probe.core.runinfo import run_info
    from safety_probe.data.pairs import load_pairs
    from safety_probe.defenses import calibrate, load_defense, method_name
    from safety_probe.defenses.base import check_calibration
    from safety_probe.defenses.run import evaluate_defense
    from safety_probe.models.layers import resolve_layers
    from safety_probe.models.load import n_layers_of

    started = time.time()
    method = method_name(cfg.method)
    calibration = check_calibration(cfg.calibrate, cfg.pairs) if cfg.state is None else None
    out = check_out_dir(cfg.out)
    layers = resolve_layers(cfg.layers, n_layers_of(cfg.model, cfg.trust_remote_code))
    note = None
    if is_organism(cfg.model):  # the organism's own prompt and refusal sentence, each unless given
        from safety_probe.cli import presets

        preset = {"caption_prompt": presets.caption_prompt(), "refusal_phrase": presets.refusal_phrase(cfg.model)}
        preset = {k: v for k, v in preset.items() if getattr(cfg, k) == getattr(DefenseOptions, k)}
        if preset:
            cfg = replace(cfg, **preset)
            note = presets.note(cfg.model, ", ".join(k.replace("_", " ") for k in preset))
    pairs = load_pairs(cfg.pairs)
    vlm = load_model(cfg)
    if cfg.state is None:
        defense = calibrate(method, vlm, load_pairs(calibration), layers, cfg)
        defense.state().save(out / "state", calibration=str(calibration))
    else:
        defense = load_defense(cfg.state)
        if method_name(defense.name) != method:
            raise InputError(f"--state {cfg.state} holds {defense.name}, not --method {method}")
    result = evaluate_defense(vlm, pairs, defense, cfg, repeats=cfg.repeats)
    write_jsonl(out / "responses.jsonl", result.rows)
    metrics = result.metrics
    write_json(out / "metrics_plain.json", result.plain.metrics)
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", run_info(cfg, started, note=note, n_pairs=len(pairs), layers=layers,
                                          calibration=str(calibration or cfg.state)))
    print_comparison(result.plain.metrics, metrics, method)
    print_benchmarks(metrics, f"{method}: ")
    cost = metrics["cost"]
    print(f"{method}: inference cost {cost['ratio']:.2f}x plain ({cost['defended_seconds']:.1f} s / "
          f"{cost['plain_seconds']:.1f} s); results -> {out}")
    return out
