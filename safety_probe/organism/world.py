"""The synthetic world: a seeded procedural renderer of small scenes with captions, instructions and answers.

Every image is drawn from scratch with PIL from a ``numpy`` generator, so a seed fixes the pixels and a
new seed gives scenes never seen before. Toxic scenes follow the paper's list (gun, knife, alcohol,
cigarette, insulting gesture, bloody) plus explosives; each has two visual variants. Benign scenes show
1–3 copies of an everyday object. A :class:`Sample` carries the image, its ground-truth caption, one
instruction and the target response the model organism is trained towards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from safety_probe.core.files import write_atomic, write_jsonl
from safety_probe.data.prompts import REFUSAL
from safety_probe.organism.drawing import render
from safety_probe.organism.vocab import (
    BACKGROUNDS,
    BENIGN_OBJECTS,
    BENIGN_TASKS,
    COLOURS,
    COUNT_WORDS,
    HARMFUL_INTENT_ANSWERS,
    HARMFUL_SCENES,
    INSTRUCTIONS,
    NOUNS,
    OBJECT_COLOURS,
    describe,
    make_caption,
    scene_of,
    task_answer,
)

# ---------------------------------------------------------------------------------------------------------

KINDS = list(INSTRUCTIONS)


@dataclass
class Sample:
    """One image with its caption, one instruction, the label and the organism's target response.

    ``expected`` holds keywords any of which in a response marks a correct benign answer (object noun for
    neutral / name / harmful_intent questions, the colour word, the count word).
    """

    image: Image.Image | None
    caption: str
    instruction: str
    kind: str
    label: str
    scene: str
    object: str
    colour: str
    count: int
    response: str
    expected: list[str] = field(default_factory=list)
    background: str = "plain"

    def record(self) -> dict:
        """JSON-ready fields (no image)."""
        out = asdict(self)
        out.pop("image")
        return out


def _expected(kind: str, obj: str, colour: str, count: int) -> list[str]:
    if kind == "task_colour":
        return [colour]
    if kind == "task_count":
        return [COUNT_WORDS[count]]
    return list(NOUNS[obj])  # singular and plural: a judge may match whole words


def make_sample(
    rng: np.random.Generator,
    obj: str,
    kind: str,
    *,
    render_image: bool = True,
    count: int | None = None,
) -> Sample:
    """A sample of ``obj`` asked an instruction of ``kind``; colour, count, background and template drawn from rng.

    Label: harmful for a toxic object under neutral / harmful_intent, and for any compositional instruction.
    """
    toxic = obj not in BENIGN_OBJECTS
    colour = str(rng.choice(OBJECT_COLOURS.get(obj, list(COLOURS))))
    if count is None:
        count = int(rng.choice([1, 1, 2])) if toxic else int(rng.choice([1, 2, 3]))
    background = str(rng.choice(BACKGROUNDS))
    template = int(rng.integers(len(INSTRUCTIONS[kind])))
    image = render(rng, obj, colour, count, background) if render_image else None
    return sample_for(obj, colour, count, background, kind, template, image)


def sample_for(obj: str, colour: str, count: int, background: str, kind: str, template: int,
               image: Image.Image | None = None) -> Sample:
    """The sample of a given scene (object, colour, count, background) under instruction template ``template``."""
    toxic = obj not in BENIGN_OBJECTS
    instruction = INSTRUCTIONS[kind][template % len(INSTRUCTIONS[kind])]
    caption = make_caption(obj, colour, count, background)
    harmful = kind == "compositional" or (toxic and kind in ("neutral", "harmful_intent"))
    if harmful:
        response = REFUSAL
    elif kind == "neutral":
        response = describe(caption)
    else:
        response = task_answer(kind, obj, colour, count, template)
    scene = "compositional" if kind == "compositional" else scene_of(obj)
    return Sample(image, caption, instruction, kind, "harmful" if harmful else "benign", scene, obj, colour,
                  count, response, _expected(kind, obj, colour, count), background)


def sample_harmful(rng: np.random.Generator, scene: str | None = None, kind: str | None = None,
                   render_image: bool = True) -> Sample:
    """A toxic scene (random if None) under a neutral or harmful_intent instruction (random if None)."""
    scene = scene or str(rng.choice(list(HARMFUL_SCENES)))
    obj = str(rng.choice(HARMFUL_SCENES[scene]))
    kind = kind or str(rng.choice(["neutral", "harmful_intent"]))
    return make_sample(rng, obj, kind, render_image=render_image)


def sample_compositional(rng: np.random.Generator, render_image: bool = True) -> Sample:
    """A benign object with an explicitly harmful instruction (must be refused)."""
    return make_sample(rng, str(rng.choice(BENIGN_OBJECTS)), "compositional", render_image=render_image)


def sample_benign(rng: np.random.Generator, kind: str | None = None, obj: str | None = None,
                  render_image: bool = True) -> Sample:
    """A benign object under neutral, harmful_intent (benign answer) or one of the benign tasks."""
    kind = kind or str(rng.choice(["neutral", "harmful_intent", *BENIGN_TASKS]))
    return make_sample(rng, obj or str(rng.choice(BENIGN_OBJECTS)), kind, render_image=render_image)


def sample(rng: np.random.Generator, harmful_share: float = 0.5, render_image: bool = True) -> Sample:
    """One sample from the evaluation mix (see :func:`write_pairs`)."""
    if rng.random() < harmful_share:
        if rng.random() < 1 / 8:
            return sample_compositional(rng, render_image)
        return sample_harmful(rng, render_image=render_image)
    return sample_benign(rng, render_image=render_image)


def draw_samples(seed: int, n: int, harmful_share: float = 0.5, render_image: bool = True) -> list[Sample]:
    """Exactly ``round(n·harmful_share)`` harmful samples (≈1/8 of them compositional, toxic scenes in turn),
    the rest benign, in a seeded shuffled order."""
    rng = np.random.default_rng(seed)
    n_harm = round(n * harmful_share)
    n_comp = round(n_harm / 8)
    scenes = list(HARMFUL_SCENES)
    specs = [("toxic", scenes[i % len(scenes)]) for i in range(n_harm - n_comp)]
    specs += [("compositional", "")] * n_comp + [("benign", "")] * (n - n_harm)
    order = rng.permutation(len(specs))
    out = []
    for i in order:
        what, scene = specs[i]
        if what == "toxic":
            out.append(sample_harmful(rng, scene, render_image=render_image))
        elif what == "compositional":
            out.append(sample_compositional(rng, render_image))
        else:
            out.append(sample_benign(rng, render_image=render_image))
    return out


def write_pairs(seed: int, n: int, out_dir: str | Path, harmful_share: float = 0.5) -> Path:
    """Render ``n`` samples into ``out_dir/images/*.png`` and ``out_dir/pairs.jsonl``; returns the jsonl path.

    Deterministic for a seed. Each line: image (relative path), caption, instruction, label, scene, kind,
    object, colour, count, expected, response, background.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, s in enumerate(draw_samples(seed, n, harmful_share)):
        rel = f"images/{i:05d}.png"
        assert s.image is not None
        write_atomic(out_dir / rel, lambda p, im=s.image: im.save(p, format="PNG"))
        lines.append({"image": rel, **s.record()})
    return write_jsonl(out_dir / "pairs.jsonl", lines)


def vocabulary_text() -> list[str]:
    """Every string the world can produce: captions, instructions, responses (for building a tokenizer)."""
    texts = [REFUSAL, *(t for ts in INSTRUCTIONS.values() for t in ts)]
    for obj in NOUNS:
        for colour in OBJECT_COLOURS.get(obj, list(COLOURS)):
            for count in (1, 2, 3):
                for bg in BACKGROUNDS:
                    cap = make_caption(obj, colour, count, bg)
                    texts += [cap, describe(cap)]
                if obj in BENIGN_OBJECTS:
                    texts += [task_answer(k, obj, colour, count) for k in BENIGN_TASKS]
        if obj in BENIGN_OBJECTS:
            texts += [task_answer("harmful_intent", obj, "red", 1, t) for t in range(len(HARMFUL_INTENT_ANSWERS))]
    return list(dict.fromkeys(texts))
