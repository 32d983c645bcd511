"""Docs that run: every command README.md and docs/getting-started.md show runs as written (on a CPU, on the
organisms, from the files the commands before it make), or is listed in :data:`NOT_RUN` with why a test cannot run
it; the Python they show runs too, and the numbers their comments and prose quote are what it prints.

The commands run in this process, in a temporary folder, in the order the pages give them (``probe-layers ARGS`` as
``probe_layers_main(ARGS)``, ``safety-probe ARGS`` as ``main(ARGS)``: the console scripts' own entry points), which
spares each one the seconds of importing torch again.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from safety_probe.cli import main, probe_layers_main

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", ROOT / "docs" / "getting-started.md")

#: Commands no test runs, by how they begin, and why. A command in a page that is in neither this list nor runs
#: fails the test, so a new command gets a test or a reason.
NOT_RUN = {
    "git clone": "the clone itself",
    "make demo": "installs the package and runs probe-layers --out figures/demo: what the suite runs after (make test)",
    "make test": "runs this suite",
    "safety-probe tga --model organism": "about 15 minutes on 2 CPU cores; SAFETY_PROBE_SLOW_DOCS=1 runs it",
    "probe-layers --model llava-hf/": "a 7B or 72B model from the Hugging Face hub, on a GPU",
    "safety-probe caption --model llava-hf/": "a 13B model from the Hugging Face hub, on a GPU",
    "safety-probe tga --model llava-hf/": "a 7B model from the Hugging Face hub on a GPU, and its alignment data",
    "accelerate launch --multi_gpu": "8 GPUs",
}
SLOW = ("safety-probe tga --model organism",)


def blocks(page: Path, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in ``page``."""
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


def commands(page: Path) -> list[str]:
    """The shell commands of ``page``, one per command: continuation lines joined, comments dropped."""
    found = []
    for block in blocks(page, "bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = " ".join(shlex.split(command, comments=True))
            if command:
                found.append(command)
    return found


def why_not_run(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


def run(command: str) -> int:
    """``command`` through the entry point its console script calls."""
    argv = shlex.split(command)
    if argv[0] == "probe-layers":
        return probe_layers_main(argv[1:])
    if argv[0] == "safety-probe":
        return main(argv[1:])
    if argv[:3] == ["python", "-m", "safety_probe"]:
        return main(argv[3:])
    raise AssertionError(f"a documented command of no known program: {command}")


def all_commands() -> list[str]:
    """Every command of every page, each once, in page order."""
    return list(dict.fromkeys(c for page in PAGES for c in commands(page)))


def test_every_documented_command_is_run_or_says_why_not():
    listed = all_commands()
    assert len(listed) >= 15
    run_here = [c for c in listed if why_not_run(c) is None]
    assert {c.split()[0] for c in run_here} <= {"probe-layers", "safety-probe"}
    for start in NOT_RUN:
        assert any(c.startswith(start) for c in listed), f"NOT_RUN names {start!r}, which no page shows any more"


@pytest.mark.slow
def test_the_cpu_commands_and_the_python_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (c for c in all_commands() if why_not_run(c) is None):
        assert run(command) == 0, command
    # The numbers getting-started quotes are this run's.
    layers = json.loads((tmp_path / "runs" / "organism" / "layers.json").read_text())
    assert layers["safety_layers"] == [6] and layers["support"]["refusing"] == 50
    assert [t["text"].strip() for t in layers["refusal_tokens"]["tokens"].values()] == ["Sorry"]
    assert "locate" in json.loads((tmp_path / "runs" / "organism" / "run.json").read_text())
    python = list(dict.fromkeys(b for page in PAGES for b in blocks(page, "python")))
    assert len(python) == 1, "README and getting-started show the same Python"
    namespace: dict = {}
    exec(compile(python[0], "README.md", "exec"), namespace)  # noqa: S102 - the documented code, as written
    for claim in re.findall(r"# (?:pure: )?((?:LayerAnalysis|EvalResult)\(.*?), \.\.\.\)", python[0]):
        assert repr(namespace["result"]).startswith(claim) or repr(namespace["evaluation"]).startswith(claim), claim
    said = re.search(r'vlm\.generate\(pairs\[:2\], "text"\)\s+# (\[.*\])', python[0]).group(1)
    assert namespace["vlm"].generate(namespace["pairs"][:2], "text") == ast.literal_eval(said)
    files = sorted(str(p.relative_to(tmp_path / "runs" / "python")) for p in (tmp_path / "runs" / "python").rglob("*"))
    assert files == sorted(str(p.relative_to(tmp_path / "runs" / "organism"))
                           for p in (tmp_path / "runs" / "organism").rglob("*"))


@pytest.mark.skipif(not os.environ.get("SAFETY_PROBE_SLOW_DOCS"), reason=NOT_RUN[SLOW[0]])
def test_the_slow_commands_run_as_written(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "figures" / "demo", tmp_path / "figures" / "demo")
    monkeypatch.chdir(tmp_path)
    for command in (c for c in all_commands() if c.startswith(SLOW)):
        assert run(command) == 0, command
