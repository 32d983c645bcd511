"""The organism's presets: what general code takes as arguments, filled in for the shipped organism.

``safety_probe.cli`` applies them when ``--model organism`` is given, and records that it did; no general module
imports this one. They are the organism's default pairs (:func:`safety_probe.organism.world.write_pairs`), its
caption prompt, TGA data writer, the filter's vocabulary, the retrieval corpus and CLIP (the TGA recipe of
docs/tga.md is a command default: :data:`safety_probe.cli.presets.TGA_RECIPE`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from safety_probe.core.errors import InputError
from safety_probe.core.files import write_atomic, write_json
from safety_probe.models.clip import Retriever
from safety_probe.organism import CLIP_DIR, vocab, world
from safety_probe.tga.data import entry

CAPTION_PROMPT = vocab.INSTRUCTIONS["neutral"][0]
"""The organism's caption prompt ("Describe this image."): it was trained to answer it with its description; a
general captioning prompt, outside its tiny world's words, gets broken sentences."""


def filter_vocabulary() -> tuple[list[str], list[str], list[str]]:
    """The input filter's toxic and benign object nouns of the world, and caption templates in its
    captioner's words (every colour and background) for CLIP prompt ensembling."""
    toxic = [vocab.noun(o) for vs in vocab.HARMFUL_SCENES.values() for o in vs]
    benign = [vocab.noun(o) for o in vocab.BENIGN_OBJECTS]
    templates = [f"{vocab.article(c)} {c} {{}} {bg}" for c in vocab.COLOURS for bg in vocab.BACKGROUND_PHRASES.values()]
    return toxic, benign, templates


def world_related_caption(rng: np.random.Generator, sample) -> str:
    """A caption of the same object with one attribute changed (colour, count or background): R without CLIP."""
    colours = vocab.OBJECT_COLOURS.get(sample.object, list(vocab.COLOURS))
    for _ in range(20):
        colour, count, bg = sample.colour, sample.count, sample.background
        which = int(rng.integers(3))
        if which == 0 and len(colours) > 1:
            colour = str(rng.choice([c for c in colours if c != sample.colour]))
        elif which == 1:
            count = int(rng.choice([c for c in (1, 2, 3) if c != sample.count]))
        else:
            bg = str(rng.choice([b for b in vocab.BACKGROUNDS if b != sample.background]))
        cap = vocab.make_caption(sample.object, colour, count, bg)
        if cap != sample.caption:
            return cap
    raise RuntimeError(f"no related caption for {sample.caption!r}")


def _draw(seed: int, n: int, toxic_share: float, kind: str, scenes: list[str] | None = None) -> list:
    """``kind="tga"``: benign samples (every instruction kind, the world's answers) plus ``toxic_share`` toxic
    images under a neutral instruction answered by their *description* (as LLaVA pretraining data has them;
    no refusal). ``kind="safety"``: toxic images answered by the world's refusal (VLGuard-style data). Toxic
    images come from ``scenes`` in turn (default: every toxic scene)."""
    rng = np.random.default_rng([seed, 77])
    scenes = list(scenes) if scenes is not None else list(vocab.HARMFUL_SCENES)
    unknown = sorted(set(scenes) - set(vocab.HARMFUL_SCENES))
    if unknown or not scenes:
        raise InputError(f"toxic scenes {unknown or scenes}: choose from {', '.join(vocab.HARMFUL_SCENES)}")
    out = []
    n_toxic = round(n * toxic_share) if kind == "tga" else n
    for i in range(n):
        if i < n_toxic:
            scene = scenes[i % len(scenes)]
            if kind == "tga":
                s = world.sample_harmful(rng, scene, kind="neutral")
                s.response = vocab.describe(s.caption)
            else:
                s = world.sample_harmful(rng, scene)  # neutral or harmful_intent, answered by the refusal
        else:
            s = world.sample_benign(rng)
        out.append(s)
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def write_tga_data(seed: int, n: int, out_dir: str | Path, toxic_share: float = 0.0, retrieval: str = "auto",
                   clip: str | Path | None = None, kind: str = "tga", name: str | None = None,
                   scenes: list[str] | None = None) -> Path:
    """Render ``n`` world samples into ``out_dir/images`` and write ``out_dir/tga.json``; returns its path.

    ``retrieval``: ``clip`` (nearest world caption to the image under the CLIP at ``clip``, default the
    organism's tower, own caption excluded), ``world`` (same object with one attribute changed), ``auto`` (clip when
    the CLIP model exists, else world). ``kind="safety"`` writes the refusal data of the VLGuard-style baseline
    (toxic images only) to ``safety.json``. ``scenes``: the toxic scenes drawn (default all; organism-smol's
    decisive table leaves :data:`safety_probe.organism.splits.HELD_OUT_SCENES` out, and their captions out of the
    retrieval corpus). Deterministic for a seed.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    samples = _draw(seed, n, toxic_share, kind, scenes)
    clip = clip or CLIP_DIR
    if retrieval == "auto":
        retrieval = "clip" if (Path(clip) / "config.json").is_file() else "world"
    if retrieval == "clip":
        corpus = vocab.all_captions()
        if scenes is not None:  # no caption of a scene left out
            left_out = {vocab.noun(o, c) for sc in vocab.HARMFUL_SCENES if sc not in scenes
                        for o in vocab.HARMFUL_SCENES[sc] for c in (1, 2)}
            corpus = [cap for cap in corpus if not any(f" {w} " in f" {cap} " for w in left_out)]
        related = [r[0] for r in Retriever(clip).retrieve([s.image for s in samples], [s.caption for s in samples],
                                                           corpus)]
    elif retrieval == "world":
        rng = np.random.default_rng([seed, 78])
        related = [world_related_caption(rng, s) for s in samples]
    else:
        raise InputError(f"unknown retrieval {retrieval!r}: use auto, clip or world")
    prefix = "s" if kind == "safety" else "t"
    entries = []
    for i, (s, r) in enumerate(zip(samples, related)):
        rel = f"images/{prefix}{i:05d}.png"
        write_atomic(out_dir / rel, lambda p, im=s.image: im.save(p, format="PNG"))
        entries.append(entry(f"{prefix}{i:05d}", rel, s.instruction, s.response, s.caption, r,
                             label=s.label, scene=s.scene, kind=s.kind, retrieval=retrieval))
    return write_json(out_dir / (name or ("safety.json" if kind == "safety" else "tga.json")), entries)
