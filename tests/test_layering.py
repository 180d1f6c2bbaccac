"""The rooms of kbservice/ import each other only downwards (DESIGN.md), and never in a cycle.

The graph is built from the source: every `import kbservice...` / `from kbservice... import` that runs at
run time, wherever it sits (a lazy import inside a function counts), except those under `if TYPE_CHECKING:`.
A room is a top-level module or package of kbservice (`db`, `recommend`, `services`, ...).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kbservice"

# Layers of DESIGN.md, from the ground up. A room may import the rooms of lower layers, and those rooms of its
# own layer that SAME_LAYER names (never both ways: the cycle test would fail).
LAYERS: list[set[str]] = [
    {
        "kbservice",
        "types",
        "errors",
        "config",
        "checksums",
        "progress",
        "classification",
        "negation",
        "control_characters",
        "process_identity",
        "crypto",
        "process_memory",
        "durable_files",
        "devices",
    },
    {"db", "audit", "llm", "keys"},
    {"index", "ingest", "imaging", "classifier"},
    {"retrieve", "backup"},
    {"recommend"},
    {"learn"},
    {"services"},
    {"api", "cli", "evaluation", "demo", "__main__"},
]
SAME_LAYER = {
    "config": {"errors"},
    "crypto": {"errors"},
    "audit": {"db"},
    "keys": {"db"},
    "imaging": {"index"},  # each encoder's image index is a FAISS index (faiss stays in index/)
    "ingest": {"index", "imaging"},  # an ingest updates the index; case images are prepared by imaging
    "cli": {"api", "evaluation", "demo"},  # `serve` runs the API; `eval` runs evaluations; `demo` the demo
    "__main__": {"cli"},
}


def _layer_of(room: str) -> int:
    for level, rooms in enumerate(LAYERS):
        if room in rooms:
            return level
    raise AssertionError(f"room {room!r} is in no layer of tests/test_layering.py: place it in DESIGN.md's order")


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "kbservice":
        return None
    return parts[1] if len(parts) > 1 else "kbservice"


def _is_room(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return skipped


def room_imports() -> dict[str, dict[str, set[str]]]:
    """room -> imported room -> the modules that import it (for the failure message)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        source_room = _room(module)
        assert source_room is not None
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                base = node.module
                # `from kbservice import cli` names a room; `from kbservice import __version__` the package root.
                rooms = [f"{base}.{alias.name}" for alias in node.names if _is_room(alias.name)]
                targets = rooms if base == "kbservice" and rooms else [base]
            else:
                continue
            for target in targets:
                room = _room(target)
                if room is not None and room != source_room:
                    graph[source_room][room].add(module)
    return graph


def _cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(room: str) -> list[str] | None:
        state[room] = 1
        stack.append(room)
        for nxt in sorted(graph.get(room, {})):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[room] = 2
        return None

    for room in sorted(graph):
        if room not in state and (found := visit(room)):
            return found
    return None


def test_rooms_import_each_other_without_a_cycle() -> None:
    cycle = _cycle(room_imports())
    assert cycle is None, "import cycle between rooms: " + " -> ".join(cycle or [])


def test_rooms_import_only_rooms_below_them() -> None:
    wrong = []
    for room, targets in sorted(room_imports().items()):
        for target, modules in sorted(targets.items()):
            below = _layer_of(target) < _layer_of(room)
            if not below and target not in SAME_LAYER.get(room, set()):
                wrong.append(f"{room} -> {target} (in {', '.join(sorted(modules))})")
    assert not wrong, "imports against DESIGN.md's layering:\n" + "\n".join(wrong)


def test_the_graph_sees_lazy_imports_and_skips_type_only_ones(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from kbservice.services import Services\n"
        "def f():\n    from kbservice.learn.update import run_update_cycle\n"
    )
    tree = ast.parse(source)
    skipped = _type_checking_nodes(tree)
    found = [
        n.module
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and id(n) not in skipped and n.module.startswith("kbservice")
    ]
    assert found == ["kbservice.learn.update"]
    assert _cycle({"a": {"b": {"x"}}, "b": {"a": {"y"}}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b": {"x"}}, "b": {}}) is None
