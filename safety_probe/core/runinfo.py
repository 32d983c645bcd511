"""What produced a result: config, command line, package versions, timing — saved beside every output."""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from importlib import metadata

PACKAGES = ("safety-probe", "torch", "transformers", "nnsight", "tokenizers", "safetensors", "numpy")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_info(config, started: float, **extra) -> dict:
    """The ``run.json`` record: resolved config, command line, versions and wall time since ``started``."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {
        "config": cfg,
        "command": sys.argv,
        "versions": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
        **extra,
    }
