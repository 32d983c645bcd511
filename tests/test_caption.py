"""`safety-probe caption`: captions that name the object, resumption without redoing work, every family, merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safety_probe import caption as cap
from safety_probe.cli import main
from safety_probe.data.pairs import load_pairs
from safety_probe.eval.evaluate import names_expected
from safety_probe.organism import preset, vocab, world
from safety_probe.testing.tiny import TINY_FAMILIES

HELD_OUT_SEED = 1234  # not a training seed (docs/organism.md)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_line_error(capsys, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


@pytest.fixture(scope="module")
def organism_pairs(tmp_path_factory) -> Path:
    return world.write_pairs(seed=HELD_OUT_SEED, n=20, out_dir=tmp_path_factory.mktemp("organism"))


def test_organism_captions_name_the_object(organism_pairs, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    assert main(["caption", "--model", "organism", "--images", str(organism_pairs), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "captioned 20 images (0 already done)" in capsys.readouterr().out
    rows = {r["image"]: r for r in _rows(out)}
    pairs = [json.loads(line) for line in organism_pairs.read_text().splitlines()]
    assert set(rows) == {p["image"] for p in pairs}  # keys: paths relative to the pairs file
    assert {(r["model"], r["prompt"]) for r in rows.values()} == {("organism", preset.CAPTION_PROMPT)}
    named = [names_expected(rows[p["image"]]["caption"] or "", list(vocab.NOUNS[p["object"]])) for p in pairs]
    assert sum(named) / len(named) >= 0.8, [rows[p["image"]]["caption"] for p in pairs]
    info = json.loads(Path(f"{out}.run.json").read_text())
    assert info["config"]["prompt"] == preset.CAPTION_PROMPT and info["generated"] == 20
    assert info["note"] == "preset: organism (caption prompt)"


def test_a_rerun_resumes_after_an_interruption_without_redoing_images(organism_pairs, tmp_path, monkeypatch, capsys):
    from safety_probe.organism import load

    vlm, source = load(), cap.read_source(organism_pairs)
    prompt = preset.CAPTION_PROMPT
    whole = cap.caption_images(vlm, source, cap.CaptionFile(tmp_path / "whole.jsonl", "organism", prompt), 4,
                               progress=False)
    assert (whole.generated, whole.skipped) == (20, 0)

    out = tmp_path / "captions.jsonl"
    calls = []
    real_generate = cap.generate

    def interrupted(*args, **kwargs):  # the third batch never finishes
        calls.append(len(args[1]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(cap, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cap.caption_images(vlm, source, cap.CaptionFile(out, "organism", prompt), 4, progress=False)
    monkeypatch.undo()
    assert len(_rows(out)) == 8
    with out.open("a") as f:
        f.write('{"image": "images/00008.png", "capt')  # a write cut short
    run = cap.caption_images(vlm, source, cap.CaptionFile(out, "organism", prompt), 4, progress=False)
    assert (run.generated, run.skipped) == (12, 8)
    assert _rows(out) == _rows(tmp_path / "whole.jsonl")  # the same captions, each image once
    again = cap.caption_images(vlm, source, cap.CaptionFile(out, "organism", prompt), 4, progress=False)
    assert (again.generated, again.skipped) == (0, 20)

    args = ["caption", "--model", "organism", "--images", str(organism_pairs), "--out", str(out), "--device", "cpu"]
    capsys.readouterr()
    assert main([*args, "--prompt", "What is in the picture?"]) == 2
    _one_line_error(capsys, "--overwrite")
    assert main([*args, "--prompt", "What is in the picture?", "--overwrite"]) == 0
    assert "captioned 20 images (0 already done)" in capsys.readouterr().out
    assert {r["prompt"] for r in _rows(out)} == {"What is in the picture?"} and len(_rows(out)) == 20


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_family_captions_a_folder(family, tiny_model_dir, pairs_file, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    model = str(tiny_model_dir(family))
    assert main(["caption", "--model", model, "--images", str(pairs_file.parent), "--out", str(out),
                 "--batch-size", "2", "--max-new-tokens", "6", "--device", "cpu"]) == 0
    rows = _rows(out)
    assert [r["image"] for r in rows] == [f"img{i}.png" for i in range(5)]  # sorted, relative to the folder
    for r in rows:
        assert set(r) == set(cap.ROW_FIELDS) and r["model"] == model and r["prompt"] == cap.DEFAULT_PROMPT
        assert r["caption"] is None or (isinstance(r["caption"], str) and r["caption"].strip() == r["caption"] != "")
    empty = sum(r["caption"] is None for r in rows)
    assert (f"{empty} of 5 generations were empty" in capsys.readouterr().err) == bool(empty)


def test_merge_fills_captions_and_keeps_existing_ones(organism_pairs, tmp_path):
    lines = [json.loads(line) for line in organism_pairs.read_text().splitlines()]
    for i, row in enumerate(lines):
        if i % 2:
            del row["caption"]
    source = organism_pairs.parent / "uncaptioned.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in lines))
    args = ["caption", "--model", "organism", "--images", str(source), "--out", str(tmp_path / "c.jsonl"),
            "--device", "cpu", "--merge"]
    assert main([*args, str(tmp_path / "kept" / "pairs.jsonl")]) == 0
    captions = {r["image"]: r["caption"] for r in _rows(tmp_path / "c.jsonl")}
    merged = load_pairs(tmp_path / "kept" / "pairs.jsonl")  # every caption filled: require_caption holds
    assert [p.image for p in merged] == [p.image for p in load_pairs(source, require_caption=False)]
    for row, pair in zip(lines, merged):
        assert pair.caption == row.get("caption", captions[row["image"]])
        assert pair.extra["object"] == row["object"]
    assert main([*args, str(tmp_path / "replaced.jsonl"), "--replace-captions"]) == 0
    replaced = load_pairs(tmp_path / "replaced.jsonl")
    assert [p.caption for p in replaced] == [captions[r["image"]] for r in lines]


def test_empty_generations_and_refusals_are_recorded_counted_and_fill_nothing(organism_pairs, tmp_path, monkeypatch,
                                                                              capsys):
    lines = [{k: v for k, v in json.loads(line).items() if k != "caption"}
             for line in organism_pairs.read_text().splitlines()][:4]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({**r, "image": str(organism_pairs.parent / r["image"])}) + "\n" for r in lines))
    texts = iter(["", " \n ", "Sorry, I cannot help you.", "A knife. On a table."])
    monkeypatch.setattr(cap, "generate", lambda vlm, pairs, *a, **k: [next(texts) for _ in pairs])
    out = tmp_path / "captions.jsonl"
    assert main(["caption", "--model", "organism", "--images", str(source), "--out", str(out), "--device", "cpu",
                 "--merge", str(tmp_path / "merged.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "2 of 4 generations were empty" in err and "1 of 4 captions are refusals" in err
    assert "3 of 4 merged pairs have no caption" in err
    rows = _rows(out)
    assert [(r["caption"], r["refused"]) for r in rows] == [
        (None, False), (None, False), ("Sorry, I cannot help you.", True), ("A knife.", False)]
    assert [r["image"] for r in rows] == [str(organism_pairs.parent / r["image"]) for r in lines]  # outside: absolute
    merged = load_pairs(tmp_path / "merged.jsonl", require_caption=False)
    assert [p.caption for p in merged] == [None, None, None, "A knife."]
    info = json.loads(Path(f"{out}.run.json").read_text())
    assert (info["empty"], info["refused"], info["merge"]["uncaptioned"]) == (2, 1, 3)


def test_first_sentence_of_a_generation():
    assert cap.first_sentence("  A red cup on a table. It is full of tea.\n") == "A red cup on a table."
    assert cap.first_sentence("A cup weighing 0.5 kg\nMore text") == "A cup weighing 0.5 kg"
    assert cap.first_sentence("Two boats!  Blue sky.") == "Two boats!"
    assert cap.first_sentence(" \n ") is None and cap.first_sentence("") is None
    assert cap.caption_row("a.png", "Sorry, I cannot help you.", "m", "p")["refused"] is True


def test_bad_input_exits_2_with_one_line(tiny_model_dir, pairs_file, tmp_path, capsys):
    model = str(tiny_model_dir("llava"))
    out = str(tmp_path / "captions.jsonl")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": "missing.png"}\n')
    cases = [
        (["--images", str(tmp_path / "nowhere")], "no such folder or pairs file"),
        (["--images", str(broken)], "image not found"),
        (["--images", str(pairs_file.parent / "img0.png")], "is one image"),
        (["--images", str(tmp_path / "empty")], "no image files"),
        (["--images", str(pairs_file.parent), "--out", str(tmp_path)], "is a folder"),
        (["--images", str(pairs_file.parent), "--merge", str(tmp_path / "m.jsonl")], "--merge needs a pairs file"),
        (["--images", str(pairs_file), "--model", str(tmp_path / "no-model")], "no such model folder"),
        (["--images", str(pairs_file), "--batch-size", "0"], "--batch-size"),
        ([], "--images is required"),
    ]
    capsys.readouterr()
    for extra, needle in cases:
        assert main(["caption", "--model", model, "--out", out, "--device", "cpu", *extra]) == 2, extra
        _one_line_error(capsys, needle)
    assert not Path(out).exists()


def test_caption_help():
    with pytest.raises(SystemExit) as done:
        main(["caption", "--help"])
    assert done.value.code == 0
