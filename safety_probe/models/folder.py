"""A model folder checked before anything loads it, and the identity of its weights that keys a resume.

Weights are read from safetensors only; a folder with pickle weights alone (``pytorch_model.bin``) is refused and
nothing in it is ever unpickled. Every safetensors file is checked from its header
(:func:`~safety_probe.core.files.safetensors_header`), so a corrupt or truncated file is named before a model is built.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.core.files import check_input_path, read_json, safetensors_header

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# any one of these is a tokenizer's vocabulary (fast tokenizer, sentencepiece, BPE, WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as an ``owner/name`` hub id rather than a local path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def weight_files(folder: Path) -> list[Path]:
    """The safetensors weights of a model folder (one file, or the shards its index names), each header-checked."""
    if (folder / WEIGHTS_INDEX).is_file():
        index = read_json(folder / WEIGHTS_INDEX, "weights index")
        shards = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
        if not shards or not all(isinstance(s, str) for s in shards):
            raise InputError(f"{folder / WEIGHTS_INDEX}: expected a 'weight_map' of tensor -> shard file")
        files = [check_input_path(folder / s, "weights shard") for s in shards]
    elif (folder / WEIGHTS).exists() or (folder / WEIGHTS).is_symlink():
        files = [check_input_path(folder / WEIGHTS, "weights file")]
    else:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise InputError(f"{folder}: only pickle weights ({', '.join(pickles)}), which are never loaded (they can "
                             f"run code): convert them to {WEIGHTS}")
        raise InputError(f"{folder}: no weights ({WEIGHTS} or {WEIGHTS_INDEX})")
    for file in files:
        safetensors_header(file)
    return files


def read_model_config(folder: str | Path, what: str = "model") -> dict:
    """The ``config.json`` of a local model folder (a JSON object with ``model_type``), or InputError naming it."""
    folder = check_input_path(folder, f"{what} folder", folder=True)
    config = read_json(folder / "config.json", f"{what} config")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InputError(f"{folder / 'config.json'}: expected a JSON object with 'model_type'")
    return config


def check_model_files(folder: str | Path, processor: bool = True) -> None:
    """Check the files a model folder loads from: safetensors weights, a tokenizer and (with ``processor``) an image
    processor config; one-line InputError naming the file (or the missing kind of file) otherwise."""
    folder = Path(folder)
    weight_files(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{folder}: no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    if processor and not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise InputError(f"{folder}: no image processor ({' or '.join(PROCESSOR_FILES)})")


def weights_identity(name_or_path: str | Path) -> str:
    """A cheap identity of a model's weights: per safetensors file its name, size, modification time and header hash
    (a retrained or replaced model differs); a hub id stands for itself."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return str(name_or_path)
    h = hashlib.sha256()
    for file in weight_files(folder):
        st = file.stat()
        h.update(f"{file.name}:{st.st_size}:{st.st_mtime_ns}:".encode())
        h.update(hashlib.sha256(safetensors_header(file)).digest())
    return h.hexdigest()[:16]
