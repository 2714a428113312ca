"""No import cycles among ftui modules, counting imports inside functions too (a lazy import is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

FTUI = Path(__file__).resolve().parents[1] / "ftui"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(FTUI.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """ftui modules that `path` imports anywhere in its body (`from a import b` counts a.b when it is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # `import ftui.x.y` also imports its packages, which are not edges worth reporting.
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(FTUI.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_among_ftui_modules():
    graph = import_graph()
    assert "ftui.train.trainer" in graph and "ftui.train.callbacks" in graph["ftui.train.trainer"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The layer contract: a module may import its own layer and the layers below it, never one above, and never a
# sibling at the same rank (data and models know nothing of each other). The top-level base modules are files,
# settings and errors that every layer uses.
LAYERS = {
    "base": 0,  # ftui.errors, config, devices, stats, runs (the run folder's files): no torch model code
    "data": 1, "models": 1,
    "train": 2,
    "results": 3, "doctor": 3,
    "jobs": 4,
    "bench": 5,
    "ui": 6, "cli": 6, "fix_cli": 6,
    "__main__": 7,
}
BASE = {"ftui", "ftui.errors", "ftui.config", "ftui.devices", "ftui.stats", "ftui.runs"}


def layer_of(module: str) -> str:
    return "base" if module in BASE else module.split(".")[1]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for importer, imported in sorted(graph.items()):
        a = layer_of(importer)
        for target in sorted(imported):
            b = layer_of(target)
            if a != b and LAYERS[b] >= LAYERS[a] and not (a == "cli" and b == "fix_cli"):
                out.append(f"{importer} ({a}) imports {target} ({b})")
    return out


def test_the_layer_check_sees_an_upward_and_a_sideways_import():
    graph = {"ftui.train.trainer": {"ftui.results.predict", "ftui.data.images"},
             "ftui.data.images": {"ftui.models.backbones"}, "ftui.models.backbones": {"ftui.errors"}}
    assert layer_violations(graph) == [
        "ftui.data.images (data) imports ftui.models.backbones (models)",
        "ftui.train.trainer (train) imports ftui.results.predict (results)",
    ]


def test_every_module_belongs_to_a_known_layer_and_no_import_goes_up():
    graph = import_graph()
    assert all(layer_of(m) in LAYERS for m in graph), sorted(m for m in graph if layer_of(m) not in LAYERS)
    assert not layer_violations(graph), "\n".join(layer_violations(graph))


def test_at_most_a_dozen_modules_stay_at_the_top():
    top = sorted(p.name for p in FTUI.glob("*.py"))
    assert len(top) <= 12, top
