"""The stage rule (README, "Layout"): stages import only ``core`` (and their own package); ``core``
imports no stage and has no import cycle. Imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pretrain", "downstream.classification", "downstream.detection", "analysis")
HARNESSES = ("bench", "scripts", "tests")


def _package(module: str) -> str | None:
    """The stage, ``core`` or harness a module name belongs to (None: a third-party module)."""
    for name in (*STAGES, "core", *HARNESSES):
        if module == name or module.startswith(name + "."):
            return name
    return "downstream" if module == "downstream" else None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, here: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every absolute and relative import in a file, at any depth; ``here``: the
    file's module name (default: from its path in the repository)."""
    found, here = [], here or _module_name(path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + is_package]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_core_and_itself(stage):
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in _files(stage)
        for line, module in imports(path)
        if _package(module) not in (None, "core", stage)
    ]
    assert not wrong, "stages import only core/ (move what they share there):\n" + "\n".join(wrong)


def test_core_imports_no_stage_and_has_no_cycle():
    graph: dict[str, set[str]] = {}
    wrong = []
    for path in _files("core"):
        name = _module_name(path)
        graph[name] = set()
        for line, module in imports(path):
            if _package(module) not in (None, "core"):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
            elif _package(module) == "core" and module != name:
                graph[name].add(module)
    assert not wrong, "core/ imports no stage or harness:\n" + "\n".join(wrong)

    # A package's __init__ importing its own modules, and a module importing through its parent
    # package, are how packages work, not cycles: only edges between distinct leaf modules count.
    def leaves(module: str) -> set[str]:
        return {module} if module in graph else set()

    edges = {
        node: {t for m in targets for t in leaves(m) if not node.startswith(t + ".")}
        for node, targets in graph.items()
        if not (ROOT / node.replace(".", "/") / "__init__.py").is_file()
    }
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend([*trail, node, nxt])
                return True
            if nxt in edges and state.get(nxt) is None and visit(nxt, [*trail, node]):
                return True
        state[node] = 2
        return False

    for node in sorted(edges):
        if state.get(node) is None and visit(node, []):
            break
    assert not cycle, "import cycle in core/: " + " -> ".join(cycle)


def test_the_scan_sees_imports_inside_functions(tmp_path):
    """The rule's own check: stage imports hidden in a function body, or relative, are found."""
    path = tmp_path / "probe.py"
    path.write_text(
        "def f():\n    from pretrain.train import Trainer\n    from ..detection import run\n"
    )
    found = imports(path, "downstream.classification.probe")
    assert found == [(2, "pretrain.train"), (3, "downstream.detection")]
    assert [_package(m) for _, m in found] == ["pretrain", "downstream.detection"]
