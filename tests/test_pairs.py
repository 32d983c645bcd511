"""Bad input ends in one line naming the culprit, and writes nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from safety_probe.cli import probe_layers_main
from safety_probe.core.errors import InputError
from safety_probe.data.pairs import load_pairs


@pytest.fixture
def pairs_copy(pairs_file, tmp_path):
    folder = tmp_path / "pairs"
    shutil.copytree(pairs_file.parent, folder)
    return folder / "pairs.jsonl"


def test_valid_file_loads_with_defaults(pairs_copy):
    lines = pairs_copy.read_text().splitlines()
    row = json.loads(lines[0])
    del row["instruction"], row["label"]
    pairs_copy.write_text(json.dumps(row) + "\n")
    (pair,) = load_pairs(pairs_copy)
    assert pair.instruction == "Describe this image." and pair.label is None
    assert pair.image.is_file() and pair.load_image().mode == "RGB"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: lines.__setitem__(2, '{"image": "img2.png", "caption": '), r"pairs.jsonl:3: malformed JSON"),
        (lambda lines: lines.__setitem__(1, json.dumps({"image": "img1.png"})), r"pairs.jsonl:2: missing field 'caption'"),
        (lambda lines: lines.__setitem__(0, json.dumps({"image": "nope.png", "caption": "x"})), r"pairs.jsonl:1: image not found: .*nope.png"),
        (lambda lines: lines.__setitem__(0, json.dumps({"image": "img0.png", "caption": "x", "label": "toxic"})), r"label must be one of"),
    ],
)
def test_malformed_lines_name_file_and_line(pairs_copy, mutate, message):
    lines = pairs_copy.read_text().splitlines()
    mutate(lines)
    pairs_copy.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message):
        load_pairs(pairs_copy)


def test_corrupt_image(pairs_copy):
    (pairs_copy.parent / "img1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match=r"pairs.jsonl:2: corrupt image .*img1.png"):
        load_pairs(pairs_copy)


def _cli_fails(capsys, argv, out, message):
    capsys.readouterr()
    assert probe_layers_main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (out / "states.safetensors").exists() and not (out / "run.json").exists()


def test_cli_bad_inputs_one_line_no_output(capsys, tmp_path, pairs_copy, tiny_model_dir):
    from safety_probe.testing.tiny import build_tiny_text_lm

    model = str(tiny_model_dir("llava"))
    (pairs_copy.parent / "img3.png").write_bytes(b"garbage")
    _cli_fails(capsys, ["--model", model, "--pairs", str(pairs_copy)], tmp_path / "a", "img3.png")
    text_lm = build_tiny_text_lm(tmp_path / "textlm")
    good = pairs_copy.parent / "good.jsonl"
    good.write_text(pairs_copy.read_text().splitlines()[0] + "\n")
    _cli_fails(capsys, ["--model", str(text_lm), "--pairs", str(good)], tmp_path / "b", "text-only model")
    _cli_fails(capsys, ["--model", model, "--pairs", str(good), "--layers", "0,99"], tmp_path / "c", "layer 99 is out of range")
    _cli_fails(capsys, ["--model", str(tmp_path / "missing"), "--pairs", str(good)], tmp_path / "d", "no such model folder")


def _modes_of(base):
    """(name, image as saved, format, the RGB content it must load as)."""
    import numpy as np
    from PIL import Image

    grey = base.convert("L")
    rgba = base.convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[..., 3] = 0
    alpha[:10, :, 3] = 255  # top rows opaque, the rest transparent: white where transparent
    white = np.asarray(base).copy()
    white[10:] = 255
    g16 = np.asarray(grey).astype(np.uint16) * 257  # the same picture at 16 bits
    return [
        ("16-bit grey", Image.fromarray(g16), "png", grey.convert("RGB")),
        ("palette", base.convert("P"), "png", base.convert("P").convert("RGB")),
        ("cmyk", base.convert("CMYK"), "tiff", base.convert("CMYK").convert("RGB")),
        ("rgba", Image.fromarray(alpha, "RGBA"), "png", Image.fromarray(white)),
        ("la", grey.convert("LA"), "png", grey.convert("RGB")),
        ("1-bit", base.convert("1"), "png", base.convert("1").convert("RGB")),
    ]


def test_every_image_mode_loads_as_its_content_in_rgb(tmp_path):
    import numpy as np
    from PIL import Image

    from safety_probe.data.pairs import load_image

    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    for name, image, fmt, expected in _modes_of(base):
        path = tmp_path / f"{name}.{fmt}"
        image.save(path)
        loaded = load_image(path)
        assert loaded.mode == "RGB" and loaded.size == base.size, name
        assert np.array_equal(np.asarray(loaded), np.asarray(expected)), name
    frames = [base, Image.new("RGB", base.size, (255, 0, 0))]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
    first = np.asarray(load_image(tmp_path / "animated.gif")).astype(int)
    assert np.abs(first - np.asarray(base).astype(int)).mean() < 20  # the first frame (palette-quantised), not red


def test_a_16_bit_image_is_not_seen_as_white(tmp_path):
    import numpy as np
    from PIL import Image

    from safety_probe.data.pairs import load_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    pixels = np.asarray(load_image(tmp_path / "ramp16.png"))
    assert (pixels == 255).mean() < 0.01 and abs(pixels.mean() - 127.5) < 1


def test_a_repeated_pair_is_counted_once_with_one_warning_or_refused_when_strict(tmp_path, capsys):
    from conftest import write_pairs_file

    path = write_pairs_file(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1], lines[3]]) + "\n")  # lines 6 and 7 repeat lines 2 and 4
    pairs = load_pairs(path)
    assert len(pairs) == len(lines)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 line(s) repeat an earlier pair" in err[0] and "6 (= 2), 7 (= 4)" in err[0], err
    with pytest.raises(InputError, match=r"pairs\.jsonl:6: repeats the pair of line 2 \(--strict\)"):
        load_pairs(path, strict=True)
