"""The synthetic world: determinism, coverage and the pairs file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from safety_probe.data.pairs import load_pairs
from safety_probe.organism import drawing, vocab, world


def test_scene_catalogue():
    assert len(vocab.HARMFUL_SCENES) == 7
    assert all(len(v) >= 2 for v in vocab.HARMFUL_SCENES.values())
    assert len(vocab.BENIGN_OBJECTS) >= 12
    assert world.REFUSAL == "Sorry, I cannot help you."


@pytest.mark.parametrize("obj", list(vocab.NOUNS))
def test_every_object_renders(obj):
    s = world.make_sample(np.random.default_rng(0), obj, "neutral", count=1)
    assert s.image.size == (drawing.IMAGE_SIZE, drawing.IMAGE_SIZE) and s.image.mode == "RGB"
    assert np.asarray(s.image).std() > 10  # something was drawn
    assert vocab.noun(obj) in s.caption


def test_same_seed_same_samples_different_seed_different_images():
    a = world.draw_samples(3, 12)
    b = world.draw_samples(3, 12)
    c = world.draw_samples(4, 12)
    assert [s.record() for s in a] == [s.record() for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    assert not any(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, c))


def test_labels_and_responses():
    rng = np.random.default_rng(1)
    s = world.sample_harmful(rng, "gun", "neutral")
    assert s.label == "harmful" and s.scene == "gun" and s.response == world.REFUSAL
    s = world.sample_compositional(rng)
    assert s.label == "harmful" and s.scene == "compositional" and s.object in vocab.BENIGN_OBJECTS
    s = world.make_sample(rng, "cup", "task_colour", count=1)
    assert s.label == "benign" and s.response == f"The cup is {s.colour}." and s.expected == [s.colour]
    s = world.make_sample(rng, "cup", "task_count", count=2)
    assert s.response == "There are two cups." and s.expected == ["two"]
    s = world.make_sample(rng, "cup", "task_name", count=1)
    assert s.response == "It is a cup."
    s = world.make_sample(rng, "cup", "neutral", count=1)
    assert s.response == f"The image shows {s.caption}." and "cup" in s.expected
    s = world.make_sample(rng, "book", "harmful_intent")
    assert s.label == "benign" and "book" in s.response and not s.response.startswith("Sorry")


def test_write_pairs(tmp_path):
    path = world.write_pairs(seed=7, n=48, out_dir=tmp_path, harmful_share=0.5)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 48
    keys = {"image", "caption", "instruction", "label", "scene", "kind", "object", "colour", "count",
            "expected", "response"}
    assert all(keys <= set(r) for r in rows)
    harmful = [r for r in rows if r["label"] == "harmful"]
    assert len(harmful) == 24
    assert sum(r["scene"] == "compositional" for r in harmful) == 3  # ≈1/8 of the harmful share
    assert {r["scene"] for r in harmful} >= set(vocab.HARMFUL_SCENES)
    assert all(r["response"] == world.REFUSAL for r in harmful)
    assert all(r["response"] != world.REFUSAL for r in rows if r["label"] == "benign")
    assert len(load_pairs(path)) == 48  # the lead's loader accepts the file
    again = world.write_pairs(seed=7, n=48, out_dir=tmp_path / "again")
    assert again.read_text() == path.read_text()
    assert (tmp_path / "images/00000.png").read_bytes() == (tmp_path / "again/images/00000.png").read_bytes()


def test_vocabulary_covers_samples():
    vocab = set(world.vocabulary_text())
    for s in world.draw_samples(5, 40, render_image=False):
        assert s.caption in vocab and s.instruction in vocab and s.response in vocab


def test_evaluation_splits_hold_out_scenes_and_phrasings_of_all_alignment_data(tmp_path):
    import collections
    import json

    from safety_probe.organism import preset, splits, vocab

    drawn = splits.draw_split(6803, 40)
    groups = collections.Counter(extra["group"] for _, extra in drawn)
    assert groups == splits.GROUPS
    trained = {t for ts in vocab.INSTRUCTIONS.values() for t in ts}
    for s, extra in drawn:
        assert (s.instruction not in trained) == (extra["phrasing"] == "held_out")
        assert extra["scene_held_out"] == (extra["toxic_scene"] in splits.HELD_OUT_SCENES)
        assert s.label == ("benign" if extra["group"] in ("benign", "benign_question_toxic") else "harmful")
    assert [s.caption for s, _ in splits.draw_split(6803, 40)] == [s.caption for s, _ in drawn]  # seeded
    path = preset.write_tga_data(0, 40, tmp_path, toxic_share=0.5, retrieval="world",
                                 scenes=splits.alignment_scenes())
    rows = json.loads(path.read_text())
    assert {r["scene"] for r in rows if r["label"] == "harmful"} == set(splits.alignment_scenes())
