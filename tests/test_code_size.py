"""Issue 28's size limits on the package: no module over 450 lines, no function or method over 100 (a longer one
holds several concepts that want names of their own). Offenders are listed with their line counts."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "contrastive_landmarks"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 100
#: Exceptions by name: a module as its path under the package, a function as ``path::qualified.name``.
ALLOWED: set[str] = set()


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """``(qualified name, lines from def to its last line)`` of every function, method and nested function."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{name}.")
        else:
            yield from _functions(node, prefix)


def _function_lengths(path: Path) -> dict[str, int]:
    return dict(_functions(ast.parse(path.read_text(encoding="utf-8"))))


def test_no_module_over_the_limit():
    long = [
        f"{name}: {lines} lines"
        for name, path in _modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES and name not in ALLOWED
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_the_limit():
    long = [
        f"{name}::{function}: {lines} lines"
        for name, path in _modules()
        for function, lines in _function_lengths(path).items()
        if lines > MAX_FUNCTION_LINES and f"{name}::{function}" not in ALLOWED
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_check_sees_functions_and_methods():
    lengths = _function_lengths(PACKAGE / "data" / "video.py")
    assert "read_video_frames" in lengths and "read_video_frames.frames" in lengths  # nested
    assert "VideoFrames.__getitem__" in lengths  # a method
    source = (PACKAGE / "data" / "video.py").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(source) if line.startswith("def video_info("))
    end = start + lengths["video_info"]
    assert source[end - 1].strip().startswith("return ") and not source[end].strip()  # def .. its last line
