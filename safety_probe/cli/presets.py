"""Every default the commands apply when the model is an organism (the project's test subjects), in one place.

General code takes its data, prompts and phrases as arguments; on `--model organism` or `--model organism-smol` the
commands fill in what a real model must be given — built-in pairs, the model's own refusal phrase, the caption
prompt it was trained on, TGA's data and recipe — and record that they did (``note`` in run.json). Options given on
the command line always win.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safety_probe.core.checks import check_choice, check_number

if TYPE_CHECKING:
    from accelerate import PartialState

    from safety_probe.compare import CompareConfig

ORGANISM = "organism"
ORGANISM_SMOL = "organism-smol"
ORGANISMS = (ORGANISM, ORGANISM_SMOL)

DEMO_SEED = 4242
"""World seed of the built-in pairs probe-layers uses when no --pairs is given (never used in the organisms' training)."""


def organism_name(model: str) -> str | None:
    """``organism`` or ``organism-smol`` when ``model`` names one (by name, or by the folder the name resolves to),
    else None."""
    if model in ORGANISMS:
        return model
    path = Path(model)
    if not path.is_dir():
        return None
    from safety_probe.organism import ORGANISM_DIR, smol

    if path.resolve() == ORGANISM_DIR.resolve():
        return ORGANISM
    return ORGANISM_SMOL if path.resolve().parent == (smol.cache_root() / ORGANISM_SMOL).resolve() else None


def is_organism(model: str) -> bool:
    """Whether ``model`` names one of the organisms: both live in the synthetic world, whose pairs, data and
    vocabulary the commands then supply."""
    return organism_name(model) is not None


def refusal_phrase(model: str) -> str:
    """The organism's own refusal sentence (what its text safety was trained to say)."""
    if organism_name(model) == ORGANISM_SMOL:
        from safety_probe.organism.smol_train import REFUSALS

        return REFUSALS[0]
    from safety_probe.organism.world import REFUSAL

    return REFUSAL


def caption_prompt() -> str:
    """The instruction both organisms were trained to answer with a description ("Describe this image.")."""
    from safety_probe.organism import preset

    return preset.CAPTION_PROMPT


def demo_pairs(out_dir: Path, n: int) -> Path:
    """Write ``n`` built-in pairs of the organisms' world (seed :data:`DEMO_SEED`) under ``out_dir``; the pairs file."""
    from safety_probe.organism import world

    return world.write_pairs(seed=DEMO_SEED, n=n, out_dir=out_dir)


def note(model: str, what: str) -> str:
    """The run.json note of a preset applied."""
    return f"preset: {organism_name(model)} ({what})"


# ---------------------------------------------------------------------------------------------------------
# safety-probe tga
# ---------------------------------------------------------------------------------------------------------

TGA_RECIPE: dict[str, object] = {
    "stage": 1, "lr": 1e-3, "max_steps": 1200, "batch_size": 16, "guide_weight": 1.0, "plain_share": 1.0,
    "guide_only_labels": ["harmful"], "threads": 1, "train_n": 8000, "toxic_share": 0.3, "eval_n": 300,
    "baselines": ["ce", "safety_ft", "filter"],
}
"""`safety-probe tga --model organism`'s options (flat names): the recipe of docs/tga.md (stage 1, the paper's loss
with λ = 1, plain prompts, toxic rows guide-only; 8,000 examples with 30% toxic, 1,200 steps of 16; 300 held-out
pairs) with every baseline. Any option given on the command line wins over it."""

SMOL_GUIDE: dict[str, object] = {"guide_span": "tail", "guide_centre": True, "guide_centre_by": "position",
                                 "guide_weight": 1.0, "guide_layer_mean": False}
"""organism-smol's guide: the design its decisive table's validation split chose
(experiments/organism_smol/results/table/best.json; docs/organism-smol.md): the prompt positions after the image
aligned token by token with the same tokens after the caption, each position centred on the caption run's batch mean
at the same distance from the end of the prompt, λ = 1 summed over the blocks :func:`smol_layers` reads off the probe
run's tail-patching curve. Paper TGA on organism-smol: ``--guide-span image --guide-centre false``."""

TGA_RECIPE_SMOL: dict[str, object] = {**TGA_RECIPE, "max_steps": 300, "batch_size": 8, "train_n": 2400,
                                      "baselines": ["ce", "filter"], **SMOL_GUIDE}
"""`--model organism-smol`'s: :data:`TGA_RECIPE` with 300 steps of 8 on 2,400 examples (a 30-block LM makes each
step ~20 times the first organism's on CPU), the ce and filter baselines, and :data:`SMOL_GUIDE`; 300 held-out
pairs."""


def smol_layers(layers: str, guide_span: str) -> tuple[str, str | None]:
    """organism-smol's blocks for a tail guide given a probe-layers layers.json: the blocks where its tail-patching
    curve restores at least half its largest gain below the readout
    (:func:`~safety_probe.analysis.locate.patching_band`), with a note saying so; any other ``layers`` (a spec, or
    a file without the curve) or an image-span guide is left as it is (note None)."""
    path = Path(layers)
    if guide_span not in ("tail", "last") or path.suffix != ".json" or not path.is_file():
        return layers, None
    import json

    from safety_probe.analysis.locate import patching_band

    measured = json.loads(path.read_text())
    if "tail_patching_gain" not in measured.get("scores", {}):
        return layers, None
    band = patching_band(measured, "tail")
    spec = ",".join(map(str, band))
    return spec, (f"layers {band[0]}-{band[-1]} ({len(band)} blocks): where {layers}'s tail patching restores at least "
                  "half its largest gain below the readout")


@dataclass
class OrganismData:
    """What `safety-probe tga` generates on an organism where a real model must be given it (ignored otherwise)."""

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

    def validate(self) -> None:
        """One-line InputError naming the option that is out of range."""
        for name in ("train_n", "eval_n", "safety_ft_n", "defense_calibration_n"):
            check_number(self, name, 1)
        check_number(self, "toxic_share", 0.0, 1.0)
        for name in ("eval_seed", "defense_calibration_seed"):
            check_number(self, name, 0, 2**32 - 1)
        check_choice(self, "retrieval", ("auto", "clip", "world"))


def tga_defaults(model: str) -> dict[str, object]:
    """The options `safety-probe tga` starts from on an organism (flat names): its recipe (:data:`TGA_RECIPE`, or
    :data:`TGA_RECIPE_SMOL`), the world's CLIP and the input filter's vocabulary."""
    from safety_probe.organism import CLIP_DIR, preset

    toxic, benign, templates = preset.filter_vocabulary()
    recipe = TGA_RECIPE_SMOL if organism_name(model) == ORGANISM_SMOL else TGA_RECIPE
    return {**recipe, "clip": str(CLIP_DIR), "filter_toxic": toxic, "filter_benign": benign,
            "filter_templates": templates}


def tga_inputs(model: str, cfg: CompareConfig, data: OrganismData, seed: int, processes: PartialState | None
               ) -> tuple[CompareConfig, str]:
    """``cfg`` with what an organism supplies where it is not given (training data of world seed ``seed``, held-out
    pairs, safety_ft data, the defenses' calibration pairs and caption prompt, written under ``cfg.out``), and the
    note recording it. Under several ``processes`` the main process writes them first, the others then read them."""
    from safety_probe.cli.options import main_first
    from safety_probe.organism import preset, world

    out = Path(cfg.out)
    baselines, defenses = cfg.chosen_baselines(), [d for d in cfg.defenses if d.strip()]
    filled: dict[str, object] = {}
    with main_first(processes):
        if not cfg.data:
            filled["data"] = str(preset.write_tga_data(seed, data.train_n, out / "data", toxic_share=data.toxic_share,
                                                       retrieval=data.retrieval, clip=cfg.clip))
        if cfg.eval_pairs is None and cfg.evaluate:
            filled["eval_pairs"] = str(world.write_pairs(seed=data.eval_seed, n=data.eval_n, out_dir=out / "eval_pairs"))
        if cfg.safety_ft_data is None and "safety_ft" in baselines:
            filled["safety_ft_data"] = str(preset.write_tga_data(seed + 1, data.safety_ft_n,
                                                                 out / "baselines" / "safety_ft" / "data",
                                                                 retrieval="world", kind="safety"))
        if defenses and cfg.defense_calibration is None:
            filled["defense_calibration"] = str(world.write_pairs(seed=data.defense_calibration_seed,
                                                                  n=data.defense_calibration_n,
                                                                  out_dir=out / "defense_calibration"))
    generated = ", ".join(filled) or "nothing"
    layer_note = None
    if organism_name(model) == ORGANISM_SMOL:
        spec, layer_note = smol_layers(cfg.tga.method.layers, cfg.tga.method.guide_span)
        if layer_note:
            filled["layers"] = spec
    if defenses and cfg.defense_caption_prompt is None:
        filled["defense_caption_prompt"] = preset.CAPTION_PROMPT
    recipe = "docs/organism-smol.md" if organism_name(model) == ORGANISM_SMOL else "docs/tga.md"
    knobs = ", ".join(f"{k} {v}" for k, v in asdict(data).items())
    return cfg.replace(**filled), note(model, f"the recipe of {recipe}; the world's CLIP and filter vocabulary; "
                                              f"generated {generated} with {knobs}"
                                              + (f"; {layer_note}" if layer_note else ""))
