"""Every default the commands apply when the model is an organism (the project's test subjects), in one place.

General code takes its data, prompts and phrases as arguments; on `--model organism` or `--model organism-smol` the
commands fill in what a real model must be given — built-in pairs, the model's own refusal phrase, the caption
prompt it was trained on, TGA's data and recipe — and record that they did (``note`` in run.json). Options given on
the command line always win.
"""

from __future__ import annotations

from pathlib import Path

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
