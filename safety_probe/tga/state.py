"""TGA checkpoints without pickle: trainable weights, optimizer state and RNG states in safetensors, the rest in JSON.

A checkpoint folder ``step_N`` holds ``model.safetensors`` (the trainable parameters), ``optimizer.safetensors``
(the optimizer's tensors; its layout and param groups in the metadata), ``rng_{process}.safetensors`` (torch and
CUDA generators and numpy's Mersenne Twister; Python's ``random`` state in the metadata) and, written last,
``trainer_state.json`` (step, run key, log, gradient scaler): a folder without it is incomplete and never
resumed. Every file is written atomically and read back with the checked readers of :mod:`safety_probe.core.files`.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from safety_probe.core.errors import InputError
from safety_probe.core.files import read_json, read_tensors, write_json, write_tensors

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
_TENSOR = "<tensor>"  # stands in the optimizer layout where the value is a tensor of the safetensors file


def checkpoints(ckpt_dir: Path) -> list[Path]:
    """The complete checkpoints under ``ckpt_dir`` (those with ``trainer_state.json``), oldest first."""
    done = [p for p in ckpt_dir.glob("step_*") if (p / STATE_FILE).is_file() and p.name[5:].isdigit()]
    return sorted(done, key=lambda p: int(p.name[5:]))


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint, its ``trainer_state.json`` first: a deletion cut short never leaves one that looks whole."""
    (path / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, python_gauss = random.getstate()
    return tensors, {"numpy": [name, int(pos), int(has_gauss), float(gauss)],
                     "python": [version, list(internal), python_gauss]}


def _set_rng_state(tensors: dict[str, torch.Tensor], info: dict) -> None:
    name, pos, has_gauss, gauss = info["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda_{i}"] for i in range(torch.cuda.device_count()) if f"cuda_{i}" in tensors]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    version, internal, python_gauss = info["python"]
    random.setstate((version, tuple(internal), python_gauss))


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, layout = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        layout["state"][str(index)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
                value = _TENSOR
            layout["state"][str(index)][key] = value
    return tensors, layout


def _join_optimizer(tensors: dict[str, torch.Tensor], layout: dict) -> dict:
    state = {int(i): {k: tensors[f"{i}.{k}"] if v == _TENSOR else v for k, v in entry.items()}
             for i, entry in layout["state"].items()}
    return {"state": state, "param_groups": layout["param_groups"]}


def save_checkpoint(path: Path, accelerator, model: torch.nn.Module, optimizer, names: list[str], state: dict) -> None:
    """Write checkpoint ``path`` (see the module docstring): every process its RNG states, the main process the
    trainable weights ``names``, the optimizer and, once all are written, ``trainer_state.json`` with ``state``."""
    rng, info = _rng_state()
    write_tensors(path / f"rng_{accelerator.process_index}.safetensors", rng, {"state": json.dumps(info)})
    if accelerator.is_main_process:
        weights = accelerator.unwrap_model(model).state_dict()
        write_tensors(path / MODEL_FILE, {n: weights[n] for n in names})
        tensors, layout = _split_optimizer(optimizer.state_dict())
        write_tensors(path / OPTIMIZER_FILE, tensors, {"layout": json.dumps(layout)})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        write_json(path / STATE_FILE, {**state, "scaler": scaler})
    accelerator.wait_for_everyone()


def read_state(path: Path) -> dict:
    """The ``trainer_state.json`` of checkpoint ``path`` (step, total_steps, run key, log, scaler)."""
    state = read_json(path / STATE_FILE, "trainer state")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise InputError(f"{path / STATE_FILE}: expected an object with an integer 'step'")
    return state


def load_checkpoint(path: Path, accelerator, model: torch.nn.Module, optimizer, state: dict) -> None:
    """Restore checkpoint ``path`` into the prepared ``model`` and ``optimizer``, the RNG states of this process and
    the gradient scaler; a file that does not fit is an InputError naming it."""
    weights, _ = read_tensors(path / MODEL_FILE, "checkpoint weights")
    target = accelerator.unwrap_model(model)
    unknown = sorted(set(weights) - set(target.state_dict()))
    if unknown:
        raise InputError(f"{path / MODEL_FILE}: tensor {unknown[0]!r} is not a parameter of this model")
    target.load_state_dict(weights, strict=False)
    tensors, meta = read_tensors(path / OPTIMIZER_FILE, "checkpoint optimizer state")
    rng, rng_meta = read_tensors(path / f"rng_{accelerator.process_index}.safetensors", "checkpoint RNG state")
    try:
        optimizer.load_state_dict(_join_optimizer(tensors, json.loads(meta["layout"])))
        _set_rng_state(rng, json.loads(rng_meta["state"]))
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"{path}: checkpoint does not fit this run ({type(e).__name__}: {e})") from None
    if accelerator.scaler is not None and state.get("scaler"):
        accelerator.scaler.load_state_dict(state["scaler"])
