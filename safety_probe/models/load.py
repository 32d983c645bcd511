"""Load a vision-language model by name: a registered name, a local Hugging Face folder or a hub id.

    >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf", device="cuda", dtype="bfloat16")
    >>> vlm = load_vlm("organism-smol")                  # a name a package registered (here: the test subjects)
    >>> registered_models()                              # {"organism": ..., "organism-smol": ...}

Names are registered through the ``safety_probe.models`` entry-point group: each entry is a callable that returns
the model's folder (building or assembling it on first use if it must). General code never imports the package that
registers a name; the Python API and every command resolve names here, the same way.
"""

from __future__ import annotations

import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path

from safety_probe.core.errors import InputError
from safety_probe.models.folder import check_model_files, is_hub_id, read_model_config, weights_identity
from safety_probe.models.placement import DeviceMap
from safety_probe.models.processor import load_processor
from safety_probe.models.vlm import DTYPES, SUPPORTED_FAMILIES, VLM, supported_list

#: The entry-point group where packages register model names (name -> callable returning the model's folder).
MODEL_NAMES = "safety_probe.models"


@cache
def registered_models() -> dict[str, metadata.EntryPoint]:
    """The registered model names and their entry points (read once per process)."""
    return {ep.name: ep for ep in metadata.entry_points(group=MODEL_NAMES)}


def resolve_model(name_or_path: str) -> str:
    """The folder a registered name stands for (the callable may build or assemble it), else ``name_or_path`` as is."""
    entry = registered_models().get(name_or_path)
    if entry is None:
        return name_or_path
    try:
        return str(entry.load()())
    except ImportError as e:  # the registering package needs an optional dependency
        raise InputError(f"model {name_or_path!r}: {e}") from None


def n_layers_of(name_or_path: str | Path, trust_remote_code: bool = False) -> int:
    """The number of decoder blocks of a model, read from its config alone (to check layers before any work)."""
    return int(_config(resolve_model(str(name_or_path)), trust_remote_code).get_text_config().num_hidden_layers)


def _config(path: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot load model {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def check_vlm(name_or_path: str | Path, trust_remote_code: bool = False):
    """Check a model before loading it (folder files, config, supported family); returns its config.

    A registered name resolves to its folder first; a local folder is checked file by file
    (:mod:`safety_probe.models.folder`); a hub id only by its config (which must then be in the local cache or
    reachable)."""
    path = resolve_model(str(name_or_path))
    local = not is_hub_id(path)
    if local and not Path(path).exists() and not Path(path).is_symlink():
        raise InputError(f"no such model folder: {path} (give a local Hugging Face folder or an owner/name hub id)")
    if local:
        read_model_config(path)
    config = _config(path, trust_remote_code)
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED_FAMILIES:
        kind = "a text-only model" if getattr(config, "vision_config", None) is None else "not a supported vision-language model"
        raise InputError(f"{name_or_path} ({model_type}) is {kind}; supported: {supported_list()}")
    if local:
        check_model_files(path)
    return config


def load_vlm(
    name_or_path: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    device_map: DeviceMap | None = None,
    offload_folder: str | Path | None = None,
) -> VLM:
    """Load a vision-language model with its processor: a registered name (:func:`registered_models`, e.g. the
    organisms), a local Hugging Face folder or a hub name.

    Weights load from safetensors only. A missing, corrupt, pickle-only, text-only or unsupported model raises
    InputError naming it (or the file at fault). With ``device_map`` (a strategy such as ``"auto"`` or a
    ``{module: device}`` dict, see :func:`~safety_probe.models.placement.parse_device_map`) accelerate places the
    modules instead of ``device``; weights mapped to ``"disk"`` go to ``offload_folder`` (default: a temporary
    folder kept while the VLM lives).
    """
    from transformers import AutoModelForImageTextToText

    path = resolve_model(str(name_or_path))
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    check_vlm(path, trust_remote_code)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    offload = None
    if device_map is not None:
        if offload_folder is None:
            offload = tempfile.TemporaryDirectory(prefix="safety-probe-offload-")
        extra.update(device_map=device_map, offload_folder=str(offload_folder or offload.name))
    try:
        processor = load_processor(path, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True, **extra)
    except (ValueError, RuntimeError) as e:
        if device_map is not None:  # a device map accelerate cannot place (a module left out, no such GPU)
            raise InputError(f"--device-map for {name_or_path}: {str(e).splitlines()[0]}") from None
        raise InputError(f"cannot load model {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except (OSError, KeyError, TypeError) as e:  # what the file checks cannot see (e.g. wrong shapes)
        raise InputError(f"cannot load model {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    vlm = VLM(model if device_map is not None else model.to(device), processor, name=str(name_or_path),
              weights=weights_identity(path))
    vlm.offload_dir = offload  # removed with the VLM: the offloaded weights are read from it during every forward
    return vlm
