"""The code a side-by-side measurement compares against, and how either code runs: a subprocess whose ``PYTHONPATH``
puts that code's ``safety_probe`` first, on one thread.

    >>> old = code_folder("93a6382")          # a git ref: checked out once into a worktree of this repository
    >>> old = code_folder("/work/before")     # or a folder holding an older safety_probe/
    >>> subprocess.run([sys.executable, "-m", "safety_probe", "probe", ...], env=code_env(old, threads=1))
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from safety_probe.core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
"""This checkout: the code measured against the baseline."""


def cache_dir() -> Path:
    """Where baseline worktrees are kept between runs: ``$SAFETY_PROBE_CACHE/speed`` (default ``~/.cache/safety-probe``)."""
    return Path(os.environ.get("SAFETY_PROBE_CACHE") or Path.home() / ".cache" / "safety-probe") / "speed"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode:
        raise InputError(f"git {' '.join(args)}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}")
    return done.stdout.strip()


def code_folder(spec: str, repo: Path = ROOT) -> Path:
    """The folder of the baseline code: ``spec`` itself when it holds ``safety_probe/``, else a git ref (commit,
    branch, tag) of ``repo`` (this repository) checked out as a detached worktree under :func:`cache_dir`, once per
    commit."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "safety_probe" / "__init__.py").is_file():
            raise InputError(f"--baseline {spec}: the folder holds no safety_probe/ package")
        return path.resolve()
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except InputError:
        raise InputError(f"--baseline {spec}: neither a folder nor a git ref of {repo}") from None
    folder = cache_dir() / f"baseline-{commit[:12]}"
    if not (folder / "safety_probe" / "__init__.py").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        _git(repo, "worktree", "prune")
        _git(repo, "worktree", "add", "--detach", "--force", str(folder), commit)
    return folder


def describe(folder: Path) -> str:
    """The commit a code folder is at (and ``+changes`` when its work tree differs), or its path outside git."""
    done = subprocess.run(["git", "-C", str(folder), "describe", "--always", "--dirty=+changes"], capture_output=True,
                          text=True)
    return done.stdout.strip() if done.returncode == 0 else str(folder)


def code_env(folder: Path, threads: int = 1) -> dict[str, str]:
    """The environment of a subprocess that runs ``folder``'s safety_probe on ``threads`` CPU threads, offline."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(folder), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               **{name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    return env


def machine(**extra) -> dict:
    """The ``meta`` record of a measurement: when, where, the load (start; :func:`finish` adds the end), versions."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "accelerate", "nnsight", "transformer-lens"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "missing"
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_start": os.getloadavg(), "versions": versions,
            "started": time.perf_counter(), **extra}


def finish(meta: dict) -> dict:
    """``meta`` with the load at the end and the wall time since it was made."""
    started = meta.pop("started")
    return {**meta, "load_avg_end": os.getloadavg(), "wall_s": round(time.perf_counter() - started, 1)}
