"""The catalogue of bad inputs: whatever a user types, every command ends with exit 2 and one line naming the culprit.

One parametrised test per command. Each case asserts exit code 2, exactly one line on stderr that starts with
``error:`` and contains the case's keyword, no traceback, and no new or changed file in the output folder (its
files snapshotted before and after). The defective models, pairs files, images, data and run folders are built
once per module; almost every case is refused by the config's validator before a model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch

from safety_probe.cli import main
from safety_probe.organism.preset import write_tga_data

CUDA = torch.cuda.is_available()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb(path: Path) -> Path:
    """A 100-byte PNG that declares 40000 x 40000 pixels: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b""))
                     + _png_chunk(b"IEND", b""))
    return path


class World:
    """Every defective input of the catalogue, under one folder."""

    def __init__(self, root: Path, model: Path, pairs: Path):
        self.root, self.model, self.pairs = root, model, pairs
        self.file = self._write("a-file.txt", "not a folder")
        self.ro = self._read_only()
        self.images = pairs.parent

    def _write(self, name: str, text: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    def _read_only(self) -> Path:
        if os.geteuid() == 0:  # root writes anywhere chmod allows; sysfs refuses new files even to root
            return Path("/sys/kernel/safety-probe-catalogue")
        folder = self.root / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "out"

    def out(self, name: str) -> Path:
        return self.root / "outs" / name

    # pairs files -------------------------------------------------------------------------------------------
    def pairs_with(self, name: str, text: str | bytes) -> Path:
        return self._write(f"pairs/{name}.jsonl", text)

    def pairs_line(self, name: str, **row) -> Path:
        image = row.pop("image", str(self.images / "img0.png"))
        row = {"image": image, "caption": "a red cup", "label": "harmful", **row}
        return self.pairs_with(name, json.dumps({k: v for k, v in row.items() if v is not ...}) + "\n")

    def image(self, name: str, data: bytes | None = None) -> Path:
        path = self.root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        return path

    # model folders -----------------------------------------------------------------------------------------
    def model_like(self, name: str, keep: tuple[str, ...] | None = None, drop: tuple[str, ...] = (),
                   files: dict[str, bytes] | None = None) -> Path:
        folder = self.root / "models" / name
        if folder.is_dir():  # several commands share a defect
            return folder
        shutil.copytree(self.model, folder)
        for p in list(folder.iterdir()):
            if (keep is not None and p.name not in keep) or p.name in drop:
                p.unlink()
        for fname, data in (files or {}).items():
            (folder / fname).write_bytes(data)
        return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir, pairs_file) -> World:
    return World(tmp_path_factory.mktemp("catalogue"), tiny_model_dir("llava"), pairs_file)


def snapshot(path: Path) -> dict | str | None:
    """Every file under ``path`` (name -> sha256), the file's own hash, or None when absent."""
    if not path.exists():
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def refused(capsys, argv: list[str], out: Path, needle: str) -> None:
    """Run ``argv``; assert exit 2, one ``error:`` line containing ``needle``, no traceback, ``out`` untouched."""
    before = snapshot(out)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (needle, err)
    assert "Traceback" not in err[0]
    assert snapshot(out) == before, f"{out} changed"


Case = tuple[str, object, str]  # id, function world -> (extra argv, out override or None), keyword


def _ids(cases: list[Case]) -> list[str]:
    return [c[0] for c in cases]


def _out_cases(fmt: str = "--out") -> list[Case]:
    """--out as a file, under a file, in a read-only folder."""
    return [
        ("out-is-a-file", lambda w: ([fmt, str(w.file)], w.file), "is a file"),
        ("out-parent-is-a-file", lambda w: ([fmt, str(w.file / "sub")], w.file), "is a file, not a folder"),
        ("out-read-only", lambda w: ([fmt, str(w.ro)], w.ro), "cannot write"),
    ]


def _model_cases() -> list[Case]:
    """Model folders that cannot load: each refused in one line naming the file at fault."""
    tensors = b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}        "
    return [
        ("model-missing", lambda w: (["--model", str(w.root / "no-model")], None), "no such model folder"),
        ("model-is-a-file", lambda w: (["--model", str(w.file)], None), "is a file"),
        ("model-only-config", lambda w: (["--model", str(w.model_like("only-config", keep=("config.json",)))], None),
         "no weights"),
        ("model-no-tokenizer", lambda w: (["--model", str(w.model_like("no-tok", drop=("tokenizer.json",)))], None),
         "no tokenizer"),
        ("model-no-processor", lambda w: (["--model", str(w.model_like("no-proc", drop=("processor_config.json",)))],
                                          None), "no image processor"),
        ("model-pickle-only", lambda w: (["--model", str(w.model_like("pickle", drop=("model.safetensors",),
                                                                      files={"pytorch_model.bin": b"PK\x03\x04"}))],
                                         None), "pytorch_model.bin"),
        ("model-garbage-weights", lambda w: (["--model", str(w.model_like("garbage", files={
            "model.safetensors": os.urandom(4096)}))], None), "model.safetensors"),
        ("model-bad-header", lambda w: (["--model", str(w.model_like("bad-header", files={
            "model.safetensors": tensors}))], None), "model.safetensors"),
        ("model-truncated-weights", lambda w: (["--model", str(w.model_like("truncated", files={
            "model.safetensors": (w.model / "model.safetensors").read_bytes()[:-100]}))], None), "truncated"),
        ("model-config-malformed", lambda w: (["--model", str(w.model_like("bad-config", files={
            "config.json": b"{not json"}))], None), "malformed JSON"),
        ("model-config-not-utf8", lambda w: (["--model", str(w.model_like("latin1-config", files={
            "config.json": b'{"model_type": "llava\xe9"}'}))], None), "not UTF-8"),
        ("model-config-no-type", lambda w: (["--model", str(w.model_like("no-type", files={
            "config.json": b'{"hidden_size": 8}'}))], None), "model_type"),
        ("model-missing-shard", lambda w: (["--model", str(w.model_like("shards", drop=("model.safetensors",), files={
            "model.safetensors.index.json": b'{"weight_map": {"a": "model-00001-of-00002.safetensors"}}'}))], None),
         "not found"),
        ("model-text-only", lambda w: (["--model", str(_text_lm(w))], None), "text-only model"),
    ]


def _text_lm(w: World) -> Path:
    from safety_probe.testing.tiny import build_tiny_text_lm

    folder = w.root / "models" / "text-lm"
    return folder if folder.is_dir() else build_tiny_text_lm(folder)


def _device_cases() -> list[Case]:
    cases = [("device-unknown", lambda w: (["--device", "tpu"], None), "--device"),
             ("device-bad-index", lambda w: (["--device", "cuda:x"], None), "--device"),
             ("dtype-unknown", lambda w: (["--dtype", "float8"], None), "--dtype")]
    if not CUDA:
        cases.append(("device-cuda-without-cuda", lambda w: (["--device", "cuda"], None), "CUDA is not available"))
    return cases


# ---------------------------------------------------------------------------------------------------------
# probe-layers
# ---------------------------------------------------------------------------------------------------------


def _pairs_cases(option: str = "--pairs") -> list[Case]:
    """Pairs files with one defect each (the file itself, a line, or the image it names)."""
    def pairs(make):
        return lambda w: ([option, str(make(w))], None)

    return [
        ("pairs-missing", pairs(lambda w: w.root / "nope.jsonl"), "not found"),
        ("pairs-is-a-folder", pairs(lambda w: w.images), "is a folder"),
        ("pairs-symlink-loop", pairs(lambda w: _loop(w.root / "pairs" / "loop.jsonl")), "symlink loop"),
        ("pairs-not-utf8", pairs(lambda w: w.pairs_with("latin1", b'{"image": "x.png", "caption": "caf\xe9"}\n')),
         "not UTF-8"),
        ("pairs-binary", pairs(lambda w: w.pairs_with("binary", os.urandom(256) + b"\xff\xfe")), "not UTF-8"),
        ("pairs-malformed-json", pairs(lambda w: w.pairs_with("malformed", '{"image": "a.png",\n')), "malformed JSON"),
        ("pairs-not-an-object", pairs(lambda w: w.pairs_with("list", "[1, 2]\n")), "expected a JSON object"),
        ("pairs-empty", pairs(lambda w: w.pairs_with("empty", "\n\n")), "no pairs"),
        ("pairs-no-image-field", pairs(lambda w: w.pairs_line("no-image", image=...)), "missing field 'image'"),
        ("pairs-image-not-a-string", pairs(lambda w: w.pairs_line("image-int", image=3)), "'image'"),
        ("pairs-no-caption", pairs(lambda w: w.pairs_line("no-caption", caption=...)), "missing field 'caption'"),
        ("pairs-caption-not-text", pairs(lambda w: w.pairs_line("caption-list", caption=["a"])), "'caption'"),
        ("pairs-bad-label", pairs(lambda w: w.pairs_line("label", label="toxic")), "label must be"),
        ("pairs-image-missing", pairs(lambda w: w.pairs_line("gone", image="gone.png")), "image not found"),
        ("pairs-image-is-a-folder", pairs(lambda w: w.pairs_line("image-dir", image=str(w.images))), "is a folder"),
        ("pairs-image-symlink-loop", pairs(lambda w: w.pairs_line("image-loop", image=str(
            _loop(w.image("loop.png"))))), "symlink loop"),
        ("pairs-image-corrupt", pairs(lambda w: w.pairs_line("corrupt", image=str(w.image("bad.png", b"not a png")))),
         "corrupt image"),
        ("pairs-image-truncated", pairs(lambda w: w.pairs_line("truncated", image=str(w.image(
            "cut.png", (w.images / "img0.png").read_bytes()[:200])))), "corrupt image"),
        ("pairs-image-bomb", pairs(lambda w: w.pairs_line("bomb", image=str(write_bomb(w.image("bomb.png"))))),
         "too large"),
    ]


def _loop(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_symlink():
        os.symlink(path.name, path)  # points at itself
    return path


PROBE: list[Case] = [
    *_out_cases(),
    *_model_cases(),
    *_device_cases(),
    *_pairs_cases(),
    *[(f"{opt.strip('-')}-{value}", lambda w, o=opt, v=value: ([o, v], None), opt) for opt, value in [
        ("--batch-size", "0"), ("--batch-size", "-3"), ("--demo-pairs", "0"), ("--rule", "bogus"),
        ("--patch-mode", "bogus"), ("--padding-side", "middle"), ("--band-share", "0"), ("--band-share", "1.5"),
        ("--min-support", "0"), ("--candidates", "-1"), ("--refusal-tokens", "bogus"), ("--text-template", "bogus"),
        ("--text-run", "image"), ("--backend", "bogus"), ("--patch-pairs", "-1"), ("--layers", "99"),
        ("--layers", "abc"), ("--layers", "5-2"), ("--safety-layers", "99"), ("--refusal-phrase", " "),
        ("--batch-size", "abc"), ("--band-share", "nan")]],
    ("unknown-option", lambda w: (["--bogus", "1"], None), "unrecognized arguments"),
    ("bool-not-a-bool", lambda w: (["--figures", "maybe"], None), "--figures"),
    ("query-run-without-text-query", lambda w: (["--text-run", "query"], None), "text_query"),
]


@pytest.mark.parametrize("case", PROBE, ids=_ids(PROBE))
def test_probe_layers_refuses_bad_input(case, world, capsys):
    name, make, needle = case
    extra, out = make(world)
    default_out = world.out(f"probe-{name}")
    argv = ["probe", "--model", str(world.model), "--pairs", str(world.pairs), "--out", str(default_out),
            "--device", "cpu", "--figures", "false", "--patch-pairs", "0", *extra]
    refused(capsys, argv, out or default_out, needle)


# ---------------------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------------------


EVAL: list[Case] = [
    *_out_cases(),
    *_model_cases()[:8],
    *_device_cases(),
    *_pairs_cases()[:6],
    ("pairs-image-bomb", _pairs_cases()[-1][1], "too large"),
    *[(f"{opt.strip('-')}-{value}", lambda w, o=opt, v=value: ([o, v], None), opt) for opt, value in [
        ("--batch-size", "0"), ("--batch-size", "-1"), ("--max-new-tokens", "0"), ("--judge-format", "bogus"),
        ("--text-run", "bogus"), ("--refusal-phrase", ""), ("--max-new-tokens", "abc")]],
    ("no-pairs", lambda w: (["--pairs", ""], None), "--pairs is required"),
    ("judge-model-missing", lambda w: (["--judge-model", str(w.root / "no-guard")], None), "--judge-model"),
    ("judge-model-pickle-only", lambda w: (["--judge-model", str(w.model_like("guard-pickle", drop=(
        "model.safetensors",), files={"pytorch_model.bin": b"PK"}))], None), "pytorch_model.bin"),
    ("judge-model-no-tokenizer", lambda w: (["--judge-model", str(w.model_like("guard-no-tok", drop=(
        "tokenizer.json",)))], None), "no tokenizer"),
]


@pytest.mark.parametrize("case", EVAL, ids=_ids(EVAL))
def test_eval_refuses_bad_input(case, world, capsys):
    name, make, needle = case
    extra, out = make(world)
    default_out = world.out(f"eval-{name}")
    argv = ["eval", "--model", str(world.model), "--pairs", str(world.pairs), "--out", str(default_out),
            "--device", "cpu", "--max-new-tokens", "2", "--figures", "false", *extra]
    refused(capsys, argv, out or default_out, needle)


# ---------------------------------------------------------------------------------------------------------
# caption
# ---------------------------------------------------------------------------------------------------------


def _captions_file(w: World, name: str, text: str | bytes) -> Path:
    return w._write(f"outs/caption-{name}/captions.jsonl", text)


CAPTION: list[Case] = [
    ("out-is-a-folder", lambda w: (["--out", str(w.images)], w.images), "is a folder"),
    ("out-parent-is-a-file", lambda w: (["--out", str(w.file / "c.jsonl")], w.file), "is a file, not a folder"),
    ("out-read-only", lambda w: (["--out", str(w.ro / "c.jsonl")], w.ro), "cannot write"),
    *_model_cases()[:6],
    *_device_cases()[:2],
    ("images-missing", lambda w: (["--images", str(w.root / "nowhere")], None), "no such folder or pairs file"),
    ("images-one-image", lambda w: (["--images", str(w.images / "img0.png")], None), "is one image"),
    ("images-empty-folder", lambda w: (["--images", str(w._write("empty/notes.txt", "x").parent)], None),
     "no image files"),
    ("images-folder-corrupt-image", lambda w: (["--images", str(w._write("badimgs/a.png", b"junk").parent)], None),
     "corrupt image"),
    ("images-folder-bomb", lambda w: (["--images", str(write_bomb(w._write("bombs/a.png", b"")).parent)], None),
     "too large"),
    ("images-pairs-not-utf8", lambda w: (["--images", str(w.pairs_with("cap-latin1", b'{"image": "\xe9.png"}\n'))],
                                         None), "not UTF-8"),
    ("merge-with-folder", lambda w: (["--images", str(w.images), "--merge", str(w.root / "m.jsonl")], None),
     "--merge needs a pairs file"),
    ("merge-is-a-folder", lambda w: (["--merge", str(w.images)], None), "--merge"),
    ("merge-overwrites-images", lambda w: (["--merge", str(w.pairs)], None), "would overwrite"),
    ("batch-size-0", lambda w: (["--batch-size", "0"], None), "--batch-size"),
    ("max-new-tokens-0", lambda w: (["--max-new-tokens", "0"], None), "--max-new-tokens"),
    ("prompt-blank", lambda w: (["--prompt", "  "], None), "--prompt"),
    ("captions-of-another-model", lambda w: (["--out", str(p := _captions_file(w, "other", json.dumps(
        {"image": "img0.png", "caption": "x", "model": "other", "prompt": "p", "refused": False}) + "\n"))],
        p.parent), "--overwrite"),
    ("captions-file-corrupt", lambda w: (["--out", str(p := _captions_file(w, "corrupt", "{}\nnot json\n"))],
                                         p.parent), "not a captions row"),
    ("captions-file-not-utf8", lambda w: (["--out", str(p := _captions_file(w, "latin1", b"\xe9\n"))], p.parent),
     "not UTF-8"),
]


@pytest.mark.parametrize("case", CAPTION, ids=_ids(CAPTION))
def test_caption_refuses_bad_input(case, world, capsys):
    name, make, needle = case
    extra, out = make(world)
    default_out = world.out(f"caption-{name}") / "captions.jsonl"
    argv = ["caption", "--model", str(world.model), "--images", str(world.pairs), "--out", str(default_out),
            "--device", "cpu", *extra]
    refused(capsys, argv, out or default_out.parent, needle)


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------


DATA: list[Case] = [
    *_out_cases(),
    ("seed-negative", lambda w: (["--seed", "-1"], None), "--seed"),
    ("seed-too-large", lambda w: (["--seed", str(2**40)], None), "--seed"),
    ("seed-not-a-number", lambda w: (["--seed", "abc"], None), "--seed"),
    ("n-0", lambda w: (["--n", "0"], None), "--n"),
    ("harmful-share-2", lambda w: (["--harmful-share", "2"], None), "--harmful-share"),
    ("unknown-command", lambda w: (["bogus"], None), "unknown data command"),
    ("convert-no-root", lambda w: (["convert"], None), "--root is required"),
    ("convert-root-missing", lambda w: (["convert", "--root", str(w.root / "nowhere")], None), "--root"),
    ("convert-root-is-a-file", lambda w: (["convert", "--root", str(w.file)], None), "is a file"),
    ("convert-format-bogus", lambda w: (["convert", "--root", str(w.images), "--format", "bogus"], None),
     "unknown benchmark format"),
    ("convert-out-is-a-folder", lambda w: (["convert", "--root", str(w.images), "--out", str(w.images)], w.images),
     "is a folder"),
    ("convert-unknown-layout", lambda w: (["convert", "--root", str(w._write("layout/readme.txt", "x").parent),
                                           "--out", str(w.out("data-layout") / "p.jsonl")], w.out("data-layout")),
     "no known benchmark layout"),
]


@pytest.mark.parametrize("case", DATA, ids=_ids(DATA))
def test_data_refuses_bad_input(case, world, capsys):
    name, make, needle = case
    extra, out = make(world)
    default_out = world.out(f"data-{name}")
    command = [extra.pop(0)] if extra and not extra[0].startswith("-") else ["organism"]
    argv = ["data", *command, "--out", str(default_out), "--n", "2", *extra]
    refused(capsys, argv, out or default_out, needle)


# ---------------------------------------------------------------------------------------------------------
# tga
# ---------------------------------------------------------------------------------------------------------


def _tga_data(w: World) -> Path:
    folder = w.root / "tga-data"
    return folder / "tga.json" if folder.is_dir() else write_tga_data(seed=0, n=2, out_dir=folder, retrieval="world")


def _layers_json(w: World, name: str, obj) -> Path:
    return w._write(f"layers/{name}.json", json.dumps(obj))


TGA: list[Case] = [
    *_out_cases(),
    *_model_cases()[:8],
    *[(f"{opt.strip('-')}-{value}", lambda w, o=opt, v=value: ([o, v], None), opt) for opt, value in [
        ("--save-every", "0"), ("--lr", "-1"), ("--lr", "0"), ("--batch-size", "0"), ("--max-steps", "-1"),
        ("--epochs", "0"), ("--grad-accum", "0"), ("--stage", "3"), ("--guide-weight", "-1"), ("--warmup-ratio", "1"),
        ("--plain-share", "2"), ("--lora-r", "0"), ("--keep-checkpoints", "0"), ("--threads", "0"), ("--seed", "-1"),
        ("--mixed-precision", "fp8"), ("--guide-form", "bogus"), ("--caption-target", "bogus"), ("--dtype", "fp8"),
        ("--stop-after", "0"), ("--filter-threshold", "2"), ("--eval-batch-size", "0"), ("--max-new-tokens", "0"),
        ("--layers", "99"), ("--device", "tpu"), ("--guide-span", "bogus"), ("--keep-targets-mb", "-1")]],
    *([("device-cuda-without-cuda", lambda w: (["--device", "cuda"], None), "CUDA is not available")] if not CUDA
      else []),
    ("layers-json-true", lambda w: (["--layers", str(_layers_json(w, "true", {"safety_layers": True}))], None),
     "safety_layers"),
    ("layers-json-empty-band", lambda w: (["--layers", str(_layers_json(w, "empty", {"safety_layers": []}))], None),
     "no safety layers"),
    ("layers-json-missing", lambda w: (["--layers", str(w.root / "layers" / "gone.json")], None), "not found"),
    ("data-missing", lambda w: (["--data", str(w.root / "gone.json")], None), "--data"),
    ("data-not-json", lambda w: (["--data", str(w._write("tga/bad.json", "{nope"))], None), "malformed JSON"),
    ("data-not-utf8", lambda w: (["--data", str(w._write("tga/latin1.json", b'[{"id": "\xe9"}]'))], None),
     "not UTF-8"),
    ("data-not-a-list", lambda w: (["--data", str(w._write("tga/dict.json", "{}"))], None), "non-empty JSON list"),
    ("data-bad-entry", lambda w: (["--data", str(w._write("tga/entry.json", '[{"id": "1"}]'))], None),
     "conversations"),
    ("eval-pairs-missing", lambda w: (["--eval-pairs", str(w.root / "gone.jsonl")], None), "--eval-pairs"),
    ("baselines-bogus", lambda w: (["--baselines", "bogus"], None), "unknown --baselines"),
    ("baselines-safety-ft-no-data", lambda w: (["--baselines", "safety_ft"], None), "--safety-ft-data"),
    ("baselines-filter-no-clip", lambda w: (["--baselines", "filter"], None), "--clip"),
    ("clip-missing", lambda w: (["--clip", str(w.root / "no-clip")], None), "--clip"),
    ("corpus-missing", lambda w: (["--corpus", str(w.root / "no-corpus.txt")], None), "--corpus"),
    ("organism-layers-99", lambda w: (["--model", "organism", "--layers", "99"], None), "--layers"),
    ("organism-train-n-0", lambda w: (["--model", "organism", "--train-n", "0"], None), "--train-n"),
    ("organism-retrieval-bogus", lambda w: (["--model", "organism", "--retrieval", "bogus"], None), "--retrieval"),
    ("organism-toxic-share", lambda w: (["--model", "organism", "--toxic-share", "-0.5"], None), "--toxic-share"),
    ("device-bad-index", lambda w: (["--device", "cuda:x"], None), "--device"),
    ("device-map-in-training", lambda w: (["--device-map", "auto"], None), "--device-map"),
    ("text-run-query", lambda w: (["--text-run", "query"], None), "--text-run"),
    ("text-template-bogus", lambda w: (["--text-template", "bogus"], None), "--text-template"),
]


@pytest.mark.parametrize("case", TGA, ids=_ids(TGA))
def test_tga_refuses_bad_input(case, world, capsys):
    name, make, needle = case
    extra, out = make(world)
    default_out = world.out(f"tga-{name}")
    argv = ["tga", "--model", str(world.model), "--data", str(_tga_data(world)), "--out", str(default_out),
            "--layers", "0-1", "--device", "cpu", "--stage", "1", "--max-steps", "1", "--batch-size", "2",
            "--baselines", *extra]
    refused(capsys, argv, out or default_out, needle)


# ---------------------------------------------------------------------------------------------------------
# defend
# ---------------------------------------------------------------------------------------------------------

DEFEND: list[Case] = [
    *_out_cases(),
    *_model_cases()[:8],
    *_device_cases(),
    *_pairs_cases()[:8],
    *[(f"calibrate-{name}", make, needle) for name, make, needle in _pairs_cases("--calibrate")[:4]],
    *[(f"{opt.strip('-')}-{value}", lambda w, o=opt, v=value: ([o, v], None), opt) for opt, value in [
        ("--method", "bogus"), ("--method", "refusal_steering:bogus"), ("--batch-size", "0"),
        ("--max-new-tokens", "0"), ("--max-fpr", "2"), ("--repeats", "0"), ("--positions", "bogus"),
        ("--layers", "99"), ("--layers", "abc"), ("--batch-size", "abc")]],
    ("state-missing", lambda w: (["--state", str(w.root / "no-state")], None), "--state"),
    ("unknown-option", lambda w: (["--bogus", "1"], None), "unrecognized arguments"),
]


@pytest.mark.parametrize("case", DEFEND, ids=_ids(DEFEND))
def test_defend_refuses_bad_input(case, world, capsys):
    name, make, needle = case
    extra, out = make(world)
    default_out = world.out(f"defend-{name}")
    calibration = world.images / "calibration.jsonl"  # beside the test pairs: the same relative image paths
    if not calibration.exists():
        shutil.copy(world.pairs, calibration)
    argv = ["defend", "--method", "hidden_detect", "--model", str(world.model), "--calibrate", str(calibration),
            "--pairs", str(world.pairs), "--layers", "0-1", "--out", str(default_out), "--device", "cpu",
            "--max-new-tokens", "2", *extra]
    refused(capsys, argv, out or default_out, needle)


# ---------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------

GOOD_CSV = ("layer,hook,safety_layer,cos_matched_mean,cos_matched_lower,cos_matched_upper\n"
            "0,blocks.0.hook_resid_post,False,0.1,0.0,0.2\n1,blocks.1.hook_resid_post,True,0.3,0.2,0.4\n")
GOOD_JSON = {"safety_layers": [1], "n_layers": 2, "histogram": {"counts": [0, 3], "n_none": 0},
             "support": {"harmful": 3, "benign": 2, "refusing": 3}}


def _run(w: World, name: str, csv: str | bytes | None = GOOD_CSV, meta=GOOD_JSON, metrics=None) -> Path:
    folder = w.root / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    for fname, content in (("layers.csv", csv), ("layers.json", meta), ("metrics.json", metrics)):
        if content is not None:
            text = content if isinstance(content, (str, bytes)) else json.dumps(content)
            (folder / fname).write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


FIGURES: list[Case] = [
    ("no-run", lambda w: ([""], None), "give the run folder"),
    ("run-missing", lambda w: ([str(w.root / "no-run")], None), "not found"),
    ("run-is-a-file", lambda w: ([str(w.file)], w.file), "is a file"),
    ("run-without-results", lambda w: ([str(r := _run(w, "empty", csv=None, meta=None))], r), "holds no layers.csv"),
    ("layers-json-malformed", lambda w: ([str(r := _run(w, "jbad", meta="{oops"))], r), "malformed JSON"),
    ("layers-json-safety-true", lambda w: ([str(r := _run(w, "jtrue", meta={"safety_layers": True}))], r),
     "safety_layers"),
    ("layers-json-not-object", lambda w: ([str(r := _run(w, "jlist", meta=[1, 2]))], r), "JSON object"),
    ("layers-json-missing", lambda w: ([str(r := _run(w, "jgone", meta=None))], r), "layers.json"),
    ("layers-json-out-of-range", lambda w: ([str(r := _run(w, "jrange", meta={**GOOD_JSON, "safety_layers": [7]}))],
                                            r), "outside"),
    ("layers-json-bad-histogram", lambda w: ([str(r := _run(w, "jhist", meta={**GOOD_JSON, "histogram": [1]}))], r),
     "histogram"),
    ("layers-json-not-utf8", lambda w: ([str(r := _run(w, "jlatin", meta=b'{"safety_layers": "\xe9"}'))], r),
     "not UTF-8"),
    ("layers-csv-empty", lambda w: ([str(r := _run(w, "cempty", csv=""))], r), "empty"),
    ("layers-csv-binary", lambda w: ([str(r := _run(w, "cbin", csv=b"\x89PNG\r\n\x1a\n\x00\xff" * 20))], r),
     "not UTF-8"),
    ("layers-csv-nul", lambda w: ([str(r := _run(w, "cnul", csv="layer,a\n0,\x00\n"))], r), "layers.csv"),
    ("layers-csv-truncated", lambda w: ([str(r := _run(w, "ccut", csv=GOOD_CSV[:-12]))], r), "truncated"),
    ("layers-csv-short-row", lambda w: ([str(r := _run(w, "cshort", csv=GOOD_CSV + "2,blocks.2\n",
                                                        meta={**GOOD_JSON, "n_layers": 3}))], r), "fields"),
    ("layers-csv-fewer-rows", lambda w: ([str(r := _run(w, "crows", meta={**GOOD_JSON, "n_layers": 5}))], r),
     "n_layers"),
    ("layers-csv-no-layer-column", lambda w: ([str(r := _run(w, "ccol", csv="a,b\n1,2\n"))], r), "'layer'"),
    ("layers-csv-not-a-number", lambda w: ([str(r := _run(w, "cnum", csv=GOOD_CSV.replace("0.3", "high")))], r),
     "not a number"),
    ("layers-csv-layers-out-of-order", lambda w: ([str(r := _run(w, "corder", csv=GOOD_CSV.replace("\n1,", "\n5,")))],
                                                  r), "'layer'"),
    ("metrics-malformed", lambda w: ([str(r := _run(w, "mbad", csv=None, meta=None, metrics="[oops"))], r),
     "malformed JSON"),
    ("metrics-no-benchmarks", lambda w: ([str(r := _run(w, "mold", csv=None, meta=None, metrics={"overall": {}}))],
                                         r), "no benchmarks table"),
    ("metrics-bad-benchmarks", lambda w: ([str(r := _run(w, "mtable", csv=None, meta=None, metrics={
        "benchmarks": {"x": {"variants": {"all": {"all": {"headline": "dsr"}}}}}}))], r), "malformed benchmarks"),
]


@pytest.mark.parametrize("case", FIGURES, ids=_ids(FIGURES))
def test_figures_refuses_bad_input(case, world, capsys):
    name, make, needle = case
    extra, out = make(world)
    refused(capsys, ["figures", *extra], out or world.out(f"figures-{name}"), needle)


def test_the_catalogue_holds_over_a_hundred_bad_inputs():
    sizes = {name: len(cases) for name, cases in
             (("probe", PROBE), ("eval", EVAL), ("caption", CAPTION), ("data", DATA), ("tga", TGA), ("defend", DEFEND),
              ("figures", FIGURES))}
    assert sum(sizes.values()) >= 100, sizes
    for cases in (PROBE, EVAL, CAPTION, DATA, TGA, DEFEND, FIGURES):
        assert len(set(_ids(cases))) == len(cases)  # every case has its own id
