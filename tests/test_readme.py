"""Every Python block of README.md and of the built-in model's card runs as pasted (issue 22).

Each block runs in a fresh namespace, in a temporary working directory that holds what a reader would have
there: a clone of this repository under the name the README gives it, and the model directory the "Train
your own" commands would have written (built here from the tiny ``test_resnet``). A top-level expression
whose line ends in a comment that is a Python literal or ``torch.Size(...)`` (``x.shape  # torch.Size([2,
5, 2])``) must also evaluate to that value, so the shapes the README shows are the ones the code gives.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

DOCUMENTS = ["README.md", "contrastive_landmarks/weights/resnet18-faces/README.md"]


def python_blocks(document: str) -> list[tuple[int, str]]:
    """``(first line number, source)`` of each fenced Python block of ``document``."""
    text = (ROOT / document).read_text()
    blocks = []
    for found in re.finditer(r"```python\n(.*?)```", text, flags=re.S):
        blocks.append((text[: found.start()].count("\n") + 2, found.group(1)))
    return blocks


CASES = [
    pytest.param(document, line, source, id=f"{document}:{line}")
    for document in DOCUMENTS
    for line, source in python_blocks(document)
]


def test_the_documents_have_python_blocks():
    assert len(python_blocks("README.md")) >= 4 and python_blocks(DOCUMENTS[1])


def _expected(comment: str) -> object:
    """The value the longest leading literal of ``comment`` states (None when it starts with prose)."""
    ends = [i + 1 for i, char in enumerate(comment) if char in ")]'"]
    for end in reversed(ends):
        try:
            return eval(comment[:end], {"torch": torch})
        except Exception:
            continue
    return None


def _comment(lines: list[str], last: int) -> str:
    """The comment that ends the statement whose last line is ``lines[last]``, or the comment line after it."""
    if "#" in lines[last]:
        return lines[last].split("#", 1)[1].strip()
    following = lines[last + 1].strip() if last + 1 < len(lines) else ""
    return following[1:].strip() if following.startswith("#") else ""


def _reader_folder(tmp_path: Path, source: str) -> None:
    """The files a block refers to, where a reader would have them."""
    os.symlink(ROOT, tmp_path / "contrastive_landmarks")
    if "models/r18-mtfl-100" in source:
        from contrastive_landmarks import Hypercolumn, LandmarkModel, LandmarkRegressor, SpatialProjector, load_backbone

        hypercolumn = Hypercolumn(load_backbone("test_resnet"), size=48)
        channels = sum(hypercolumn.backbone.channels)
        projector = SpatialProjector(channels, 256, size=48)
        regressor = LandmarkRegressor(channels, 5, size=48)
        LandmarkModel(hypercolumn, projector, regressor, regressor_input="hypercolumn").save_pretrained(
            tmp_path / "models" / "r18-mtfl-100"
        )


@pytest.mark.parametrize("document, first_line, source", CASES)
def test_python_block_runs_as_pasted(document, first_line, source, tmp_path, monkeypatch):
    _reader_folder(tmp_path, source)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    lines = source.splitlines()
    for statement in ast.parse(source).body:
        where = f"{document}:{first_line + statement.lineno - 1}"
        code = compile(ast.Module([statement], []), where, "exec")
        if not isinstance(statement, ast.Expr):
            exec(code, namespace)
            continue
        value = eval(compile(ast.Expression(statement.value), where, "eval"), namespace)
        expected = _expected(_comment(lines, statement.end_lineno - 1))
        if expected is not None:
            assert value == expected, f"{where}: the README says {expected}, the code gives {value}"
