"""The package's import graph (issue 20): no cycle among module-level imports, type-only ones under
``if TYPE_CHECKING:`` included (issue 28: a type-only cycle is still two modules that need each other), and no
import that runs upward through the layers core < ``train`` < ``evaluation`` < ``cli`` (lazy imports included)."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGE = ROOT / "contrastive_landmarks"
#: higher layers may import lower ones, never the reverse (evaluation protocols fit heads with train)
LAYERS = {"train": 1, "evaluation": 2, "cli": 3}


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every import of the package in ``path``; the imports in a
    module-level ``if`` block (``if TYPE_CHECKING:`` among them) count as module level."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    top_level |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in (*node.body, *node.orelse)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target]
            if not node.module:  # from . import a, b: submodules
                targets = [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("contrastive_landmarks"):
                found.append((target, id(node) in top_level))
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_import_runs_upward():
    upward = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target, _ in targets
        if _layer(target) > _layer(module) and module != "contrastive_landmarks"
    ]
    assert not upward, upward


def test_module_level_imports_have_no_cycle():
    graph = _graph()
    modules = set(graph)

    def resolve(target: str) -> str | None:  # "pkg.mod.name" -> the module it names
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {r for t, top in targets if top and (r := resolve(t)) and r != m} for m, targets in graph.items()}
    # a package's __init__ importing its own submodules is how packages are built, not a cycle
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if node.startswith(nxt + ".") or nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif not state.get(nxt):
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if not state.get(module):
            visit(module, [module])
    assert not cycles, cycles


def test_the_check_sees_imports():
    graph = _graph()
    assert ("contrastive_landmarks.backbone", True) in graph["contrastive_landmarks.pipeline"]
    assert any(t.startswith("contrastive_landmarks.train") for t, _ in graph["contrastive_landmarks.cli.pretrain"])
    # type-only imports (under ``if TYPE_CHECKING:``) are module-level edges too
    assert ("contrastive_landmarks.data.base", True) in graph["contrastive_landmarks.data"]
