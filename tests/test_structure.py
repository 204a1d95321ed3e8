"""The shape of the code: layering, no import cycles, small modules, no other language
hidden in Python strings. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("keys", "relay", "clients")
MAX_LINES = 800


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """Every module this file imports (also under TYPE_CHECKING: a cycle is a cycle)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name


def _graph() -> dict[str, set[str]]:
    return {
        mod: {name for name in _imports(path) if name in MODULES and name != mod}
        for mod, path in MODULES.items()
    }


def test_the_layers_keep_their_direction() -> None:
    wrong = []
    for mod, path in MODULES.items():
        top = mod.split(".")[0]
        for name in _imports(path):
            other = name.split(".")[0]
            if other not in PACKAGES or other == top:
                continue
            if top == "keys" or (top, other) in {("relay", "clients"), ("clients", "relay")}:
                wrong.append(f"{mod} imports {name}")
    assert wrong == []


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
    assert cycles == []


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_module_is_over_the_limit(mod: str) -> None:
    lines = MODULES[mod].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{mod} has {lines} lines (at most {MAX_LINES})"


_FOREIGN = {
    "HTML": re.compile(r"<(html|body|div|table|script|style)\b", re.I),
    "CSS": re.compile(r"\{\s*[a-z-]+\s*:\s*[^;{}]+;"),
    "JS": re.compile(r"\b(function\s*\(|addEventListener|document\.)"),
    "Lua": re.compile(r"\b(redis\.call|local\s+\w+\s*=)"),
}


def test_no_other_language_inside_python_strings() -> None:
    found = []
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if node.value.count("\n") < 3:
                continue  # a one-line message may mention anything
            for language, pattern in _FOREIGN.items():
                if pattern.search(node.value):
                    found.append(f"{mod}:{node.lineno} holds {language}")
    assert found == []


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in fixture modules (tests/*fixture.py, tests/waiting.py)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for name in _imports(path):
            if name.startswith("tests.") and (".test_" in name or name.endswith(".test")):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []
