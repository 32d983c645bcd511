"""`safety-probe tga`: TGA and its baselines through the comparison harness; the organism's preset."""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from safety_probe.cli.options import check_device
from safety_probe.cli.presets import ORGANISM, ORGANISM_SMOL, ORGANISMS, is_organism
from safety_probe.compare import CompareConfig
from safety_probe.core.checks import check_choice, check_number
from safety_probe.models.load import resolve_model


@dataclass
class TGACommand(CompareConfig):
    """safety-probe tga: Text-Guided Alignment (paper §4) and its baselines, trained and compared before/after.

    With --model organism, the documented recipe of docs/tga.md is the default (every option still wins) and
    the organism supplies what a real model must be given: --data, --eval-pairs, --safety-ft-data, --clip and
    the filter's vocabulary.
    """

    train_n: int = 2000
    """Organism only: training examples to generate when --data is not given."""
    toxic_share: float = 0.0
    """Organism only: share of toxic images (answered by their description, never refused) in generated data."""
    retrieval: str = "auto"
    """Organism only: how generated data gets R: clip, world (one attribute changed) or auto (clip if built)."""
    eval_n: int = 200
    """Organism only: held-out pairs to generate when --eval-pairs is not given."""
    eval_seed: int = 1234
    """Organism only: world seed of the generated held-out pairs (distinct from training seeds)."""
    safety_ft_n: int = 14
    """Organism only: refused toxic images generated for the safety_ft baseline."""
    defense_calibration_n: int = 400
    """Organism only: calibration pairs generated for --defenses when --defense-calibration is not given."""
    defense_calibration_seed: int = 777
    """Organism only: world seed of those calibration pairs (held out, distinct from --eval-seed)."""

    def validate(self, generated: bool = False) -> None:
        """Every option checked before any work (with the organism, on its folder, before any data is generated)."""
        for name in ("train_n", "eval_n", "safety_ft_n"):
            check_number(self, name, 1)
        check_number(self, "toxic_share", 0.0, 1.0)
        check_number(self, "eval_seed", 0, 2**32 - 1)
        check_choice(self, "retrieval", ("auto", "clip", "world"))
        check_device(self.device)
        organism = is_organism(self.model)
        target = replace(self, model=resolve_model(self.model)) if organism else self
        CompareConfig.validate(target, generated=generated or organism)


def organism_tga_defaults(model: str = ORGANISM) -> TGACommand:
    """The defaults of `safety-probe tga --model organism` (the recipe of docs/tga.md) or `--model organism-smol`
    (that recipe shortened to what 2 CPU cores train in half an hour, docs/organism-smol.md), with the world's CLIP
    and the filter's vocabulary (every option given on the command line wins)."""
    from safety_probe.organism import CLIP_DIR, preset

    toxic, benign, templates = preset.filter_vocabulary()
    recipe = preset.TGA_RECIPE_SMOL if model == ORGANISM_SMOL else preset.TGA_RECIPE
    return TGACommand(model=model if model in ORGANISMS else ORGANISM, clip=str(CLIP_DIR), filter_toxic=toxic,
                      filter_benign=benign, filter_templates=templates, **recipe)


def _organism_tga(cfg: TGACommand) -> tuple[TGACommand, str]:
    """``cfg`` with the organism's folder, data, held-out pairs and safety_ft data filled in where not given."""
    from accelerate import PartialState

    from safety_probe.organism import preset, world

    path = resolve_model(cfg.model if cfg.model in ORGANISMS else ORGANISM)
    out = Path(cfg.out)
    baselines = cfg.chosen_baselines()
    with PartialState(cpu=cfg.device == "cpu").main_process_first():  # the main process writes, the others read
        data = cfg.data or str(preset.write_tga_data(cfg.seed, cfg.train_n, out / "data", toxic_share=cfg.toxic_share,
                                                     retrieval=cfg.retrieval, clip=cfg.clip))
        eval_pairs = cfg.eval_pairs
        if eval_pairs is None and cfg.evaluate:
            eval_pairs = str(world.write_pairs(seed=cfg.eval_seed, n=cfg.eval_n, out_dir=out / "eval_pairs"))
        safety = cfg.safety_ft_data
        if safety is None and "safety_ft" in baselines:
            safety = str(preset.write_tga_data(cfg.seed + 1, cfg.safety_ft_n, out / "baselines" / "safety_ft" / "data",
                                               retrieval="world", kind="safety"))
        cfg = _organism_defenses(cfg, out)
    filled = replace(cfg, model=path, data=data, eval_pairs=eval_pairs, safety_ft_data=safety)
    recipe = "docs/organism-smol.md" if cfg.model == ORGANISM_SMOL else "docs/tga.md"
    return filled, (f"preset: {cfg.model if cfg.model in ORGANISMS else ORGANISM} (the recipe of {recipe}; the world's "
                    "data, held-out pairs, CLIP and filter vocabulary)")


def _organism_defenses(cfg: TGACommand, out: Path) -> TGACommand:
    """``cfg`` with the organism's defense calibration pairs and caption prompt where defenses are asked for."""
    from safety_probe.organism import preset, world

    if not [d for d in cfg.defenses if d.strip()]:
        return cfg
    calibration = cfg.defense_calibration or str(world.write_pairs(seed=cfg.defense_calibration_seed,
                                                                   n=cfg.defense_calibration_n,
                                                                   out_dir=out / "defense_calibration"))
    return replace(cfg, defense_calibration=calibration,
                   defense_caption_prompt=cfg.defense_caption_prompt or preset.CAPTION_PROMPT)


def run_tga_command(cfg: TGACommand) -> Path:
    """Run `safety-probe tga` (Text-Guided Alignment and its baselines; see docs/tga.md), holding the lock of its
    output folder (the first process of `accelerate launch` holds it for all)."""
    from safety_probe.compare import run_compare
    from safety_probe.core.lock import output_lock
    from safety_probe.viz.evaluation import draw_tga

    out = Path(cfg.out)
    with output_lock(out) if os.environ.get("RANK", "0") == "0" else nullcontext():
        note = None
        if is_organism(cfg.model):
            cfg, note = _organism_tga(cfg)
        record = run_compare(cfg, note=note)
        if "before" in record["rows"] and record["eval_pairs"]:
            draw_tga(record, out / "figures")
    print(f"aligned model -> {out / 'model'}; before/after -> {out / 'compare.json'}")
    return out


def initial_config(argv: list[str]) -> TGACommand | None:
    """The organism's preset as the starting config of `tga --model organism` (options given still win)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default=None)
    model = pre.parse_known_args(argv)[0].model
    return organism_tga_defaults(model) if model is not None and is_organism(model) else None
