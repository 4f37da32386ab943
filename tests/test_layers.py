"""The package's import graph, read from the source (every import, function-local ones included): no cycle
anywhere in r1lab/, imports only point down the floors that docs/ARCHITECTURE.md draws, no module imports
another's private names; and every module and function stays short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "r1lab"

# Bottom to top, as docs/ARCHITECTURE.md draws them: a folder (or top-level module) imports only from floors
# below its own. Folders on one floor do not import each other.
FLOORS = [
    {"errors", "disk", "progress"},
    {"config", "plugins"},
    {"models"},
    {"dist", "train"},
    {"store"},
    {"data", "tools"},
    {"engines", "rewards"},
    {"tinyworld"},
    {"rl", "sft", "evaluation"},
    {"recipes", "gym"},
    {"experiments", "serve", "export"},
    {"api"},
    {"ui"},
    {"__main__"},
]


def modules() -> dict[str, Path]:
    """'r1lab.rl.loop' -> its file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[tuple[str, str]]:
    """(module imported, name imported from it or '') for every r1lab import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(a.name, "") for a in node.names if a.name.split(".")[0] == "r1lab"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "r1lab":
                continue
            for alias in node.names:  # `from r1lab.models import lora` imports a module, not a name
                sub = f"{base}.{alias.name}"
                found.add((sub, "") if sub in known else (base, alias.name))
    return found


def graph() -> dict[str, set[tuple[str, str]]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def floor(module: str) -> int:
    parts = module.split(".")
    room = parts[1] if len(parts) > 1 else "r1lab"
    for i, rooms in enumerate(FLOORS):
        if room in rooms:
            return i
    raise AssertionError(f"{module}: its folder '{room}' is on no floor of FLOORS (and of docs/ARCHITECTURE.md)")


def test_the_graph_is_read():
    edges = graph()
    assert ("r1lab.rl.algorithms", "ALGORITHMS") in edges["r1lab.recipes.load"]
    assert any(m == "r1lab.models.lora" for m, _ in edges["r1lab.models.io"])  # a function-local import counts


def test_no_import_cycle():
    edges = {m: {t for t, _ in out if t != m and t in modules()} for m, out in graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_imports_point_down_the_floors():
    upward = sorted(f"{m} imports {t} (floor {floor(t)} >= {floor(m)})"
                    for m, out in graph().items() if m != "r1lab" for t, _ in out
                    if t != "r1lab" and t.split(".")[1] != m.split(".")[1] and floor(t) >= floor(m))
    assert not upward, "\n".join(upward)


def test_config_imports_only_the_errors_below_it():
    for m, out in graph().items():
        if m.startswith("r1lab.config"):
            assert {t for t, _ in out} <= {"r1lab.errors"} | {n for n in modules() if n.startswith("r1lab.config")}, m


def test_modules_and_functions_stay_short():
    """A reader finds one job per module: no file over 350 lines, no function over 80."""
    long = []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 350:
            long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, "\n".join(long)


def test_the_architecture_page_draws_these_floors():
    """docs/ARCHITECTURE.md's Layers table names the same rooms on the same floors as FLOORS."""
    text = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    table = text[text.index("## Layers"):text.index("## Adding things")]
    drawn = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1].isdigit():
            drawn.append({name.strip("`").removesuffix("/").removesuffix(".py") for name in cells[2].split(", ")})
    assert drawn == [rooms - {"__main__"} for rooms in FLOORS if rooms != {"__main__"}]


def test_no_module_imports_another_modules_private_names():
    private = sorted(f"{m} imports {t}.{n}" for m, out in graph().items() for t, n in out
                     if n.startswith("_") and t != m)
    assert not private, "\n".join(private)
