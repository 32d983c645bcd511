"""The package's shape: data flows one way through the pipeline stages, and only the CLI knows the organism.

Every import of every module (top-level and inside functions) is read with ``ast``; an import of a later stage,
or of ``organism`` / ``testing`` from a general module, fails the test with the file and line.

One exception, named file by file in :data:`RESULTS_MAY_DRAW`: results draw and save themselves
(``result.plot_locate()``, ``result.save(dir, figures=True)`` writing what the command writes), so the results
modules may import ``viz`` — and only inside a function, where it runs when a figure is asked for. A top-level import
there, or a viz import anywhere else before the viz stage, still fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1] / "safety_probe"

# Pipeline order by folder: a module may import its own stage or an earlier one, never a later one.
STAGES: dict[str, int] = {
    "core": 0,
    "data": 1,
    "models": 2,
    **dict.fromkeys(("probe", "caption"), 3),
    "analysis": 4,
    "eval": 5,
    **dict.fromkeys(("tga", "defenses"), 6),
    "compare": 7,
    "viz": 8,
    **dict.fromkeys(("cli", "__main__"), 9),
}
BESIDE = ("organism", "testing")  # test subject and test tools: beside the pipeline, imported by none of it
# The results modules (file relative to the package -> the later stage they may import inside a function only).
RESULTS_MAY_DRAW = {"analysis/results.py": "viz", "eval/results.py": "viz", "compare/result.py": "viz"}
MAY_IMPORT_ORGANISM = ("cli",)


def _component(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "safety_probe" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, inside a function) for every import statement in ``path``, nested ones included; a
    relative import reads as ``.`` (the package writes absolute imports, so the checker needs no resolution)."""
    tree = ast.parse(path.read_text(), str(path))
    in_function = {id(inner) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for inner in ast.walk(node) if inner is not node}
    out = []
    for node in ast.walk(tree):
        nested = id(node) in in_function
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, nested) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." if node.level else node.module or ""
            out.append((node.lineno, base, nested))
            out += [(node.lineno, f"{base}.{alias.name}", nested) for alias in node.names]  # `from safety_probe import x`
    return out


def violations(package: Path = PACKAGE) -> list[str]:
    """Every backward edge and every forbidden organism/testing import in ``package``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        me = rel.parts[0].removesuffix(".py")
        if me == "__init__" or me in BESIDE:
            continue
        if me not in STAGES:
            found.append(f"{rel}: module not placed in a pipeline stage (add it to STAGES)")
            continue
        for line, module, nested in _imports(path):
            if module.startswith("."):
                found.append(f"{rel}:{line}: relative import (write it absolute)")
                continue
            other = _component(module)
            if other is None or other == "__init__" or other == me:
                continue
            if other in BESIDE:
                if not (other == "organism" and me in MAY_IMPORT_ORGANISM):
                    found.append(f"{rel}:{line}: a general module imports safety_probe.{other}")
            elif other in STAGES and STAGES[other] > STAGES[me]:
                if nested and RESULTS_MAY_DRAW.get(rel.as_posix()) == other:
                    continue  # a result drawing itself (module docstring)
                found.append(f"{rel}:{line}: {me} (stage {STAGES[me]}) imports the later stage {other} ({STAGES[other]})")
    return found


def test_imports_flow_one_way_and_only_the_cli_knows_the_organism():
    assert violations() == []


def test_the_checker_sees_a_backward_edge_and_an_organism_import(tmp_path):
    copy = tmp_path / "safety_probe"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    shift = copy / "analysis" / "shift.py"
    shift.write_text(shift.read_text() + "\n\ndef _late():\n    from safety_probe import organism\n"
                     "    from safety_probe.eval.evaluate import evaluate\n")
    found = violations(copy)
    assert any("shift.py" in v and "safety_probe.organism" in v for v in found)
    assert any("shift.py" in v and "later stage eval" in v for v in found)


def test_results_may_draw_themselves_only_inside_a_function(tmp_path):
    copy = tmp_path / "safety_probe"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    assert violations(copy) == []
    results, scores = copy / "analysis" / "results.py", copy / "analysis" / "scores.py"
    results.write_text("from safety_probe.viz.render import COLORS\n" + results.read_text())
    scores.write_text(scores.read_text() + "\n\ndef _draw():\n    from safety_probe.viz.layers import draw_all\n")
    found = violations(copy)
    assert any(v.startswith("analysis/results.py:1:") and "later stage viz" in v for v in found)  # top level
    assert any("analysis/scores.py" in v and "later stage viz" in v for v in found)  # not a results module
    results.write_text(results.read_text() + "\n\ndef _late():\n    from safety_probe.cli.show import console\n")
    assert any("analysis/results.py" in v and "later stage cli" in v for v in violations(copy))  # viz only


def test_top_level_api_names_no_organism_part():
    import safety_probe

    assert not [m for m in safety_probe._EXPORTS.values() if m.split(".")[1] in BESIDE]


def test_hooks_are_removed_when_the_block_raises(tiny_model_dir):
    from safety_probe.models.hooks import StopForward, Trace
    from safety_probe.models.load import load_vlm

    vlm = load_vlm(tiny_model_dir("llava"))
    inputs = vlm.tokenizer(["a red cup"], return_tensors="pt")

    def hooks_attached() -> int:
        return sum(len(b._forward_hooks) + len(b._forward_pre_hooks) for b in vlm.layers)

    def boom(layer: int, hidden: torch.Tensor) -> None:
        raise RuntimeError("inside the forward")

    with pytest.raises(RuntimeError, match="inside the forward"):
        with Trace(vlm.layers, [0, 1], edit_output=boom, edit_input=lambda l, h: None):
            vlm.model(**inputs)
    assert hooks_attached() == 0
    with pytest.raises(KeyError):
        with Trace(vlm.layers, [1]):
            raise KeyError("in the with block")
    assert hooks_attached() == 0
    with Trace(vlm.layers, [0], stop=True) as trace:  # StopForward is swallowed, the output kept
        vlm.model(**inputs)
        pytest.fail("the forward should have stopped after block 0")
    assert 0 in trace.outputs and hooks_attached() == 0
    with pytest.raises(StopForward):  # outside a Trace it is an ordinary exception
        raise StopForward(0)


def test_trace_edits_only_the_chosen_block(tiny_model_dir):
    from safety_probe.models.hooks import Trace
    from safety_probe.models.load import load_vlm

    vlm = load_vlm(tiny_model_dir("llava"))
    inputs = vlm.tokenizer(["a red cup on a table"], return_tensors="pt")
    with torch.no_grad():
        clean = vlm.model(**inputs, output_hidden_states=True).hidden_states
        with Trace(vlm.layers, [0], edit_output=lambda l, h: h * 0) as edited, Trace(vlm.layers, [1]) as seen:
            vlm.model(**inputs)
    assert torch.equal(edited.outputs[0], torch.zeros_like(clean[1])) and set(edited.outputs) == {0}
    assert not torch.allclose(seen.outputs[1], clean[2])  # block 1 read the edited stream
    with torch.no_grad(), Trace(vlm.layers, [1], edit_input=lambda l, h: h * 0, retain=False) as t:
        vlm.model(**inputs)
    assert t.outputs == {}
