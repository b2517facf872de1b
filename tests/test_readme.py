"""Every Python block of README.md and of the built-in model's card runs as pasted (issues 22 and 31).

Each block runs in a fresh Python interpreter (a subprocess, as a reader pastes it into ``python``), not inside
pytest where the package is already imported: so a folder that shadows the installed package, or an import the
block forgets, fails here as it fails for the reader. The interpreter starts in the reader's layout: inside a
clone of this repository (where the README's set-up commands leave them), which also holds the model directory
the "Train your own" commands would have written (built here from the tiny ``test_resnet``). A top-level
expression whose line ends in a comment that is a Python literal or ``torch.Size(...)`` (``x.shape  #
torch.Size([2, 5, 2])``) must also evaluate to that value, so the shapes the README shows are the ones the code
gives. The first example runs on a real face and must not warn.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCUMENTS = ["README.md", "contrastive_landmarks/weights/resnet18-faces/README.md"]
# What a clone holds that the blocks can reach (the package, torch.hub's entry points, the documents).
CLONE_ENTRIES = ("contrastive_landmarks", "hubconf.py", "README.md", "docs", "setup.cfg", "pyproject.toml")

# Runs in the fresh interpreter: reads {"document", "first_line", "source"} on stdin and runs the block statement
# by statement in one namespace, checking each expression against the literal its comment states.
RUNNER = r'''
import ast, json, sys

import torch

block = json.loads(sys.stdin.read())
document, first_line, source = block["document"], block["first_line"], block["source"]


def expected(comment):
    """The value the longest leading literal of ``comment`` states (None when it starts with prose)."""
    ends = [i + 1 for i, char in enumerate(comment) if char in ")]'"]
    for end in reversed(ends):
        try:
            return eval(comment[:end], {"torch": torch})
        except Exception:
            continue
    return None


def comment_of(lines, last):
    """The comment that ends the statement whose last line is ``lines[last]``, or the comment line after it."""
    if "#" in lines[last]:
        return lines[last].split("#", 1)[1].strip()
    following = lines[last + 1].strip() if last + 1 < len(lines) else ""
    return following[1:].strip() if following.startswith("#") else ""


namespace = {"__name__": "__main__"}
lines = source.splitlines()
for statement in ast.parse(source).body:
    where = f"{document}:{first_line + statement.lineno - 1}"
    if not isinstance(statement, ast.Expr):
        exec(compile(ast.Module([statement], []), where, "exec"), namespace)
        continue
    value = eval(compile(ast.Expression(statement.value), where, "eval"), namespace)
    stated = expected(comment_of(lines, statement.end_lineno - 1))
    if stated is not None and value != stated:
        sys.exit(f"{where}: the README says {stated}, the code gives {value}")
'''


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


def _reader_clone(tmp_path: Path, source: str) -> Path:
    """A clone of this repository as a reader has it after the README's set-up, with the files a block refers to."""
    clone = tmp_path / "contrastive_landmarks"
    clone.mkdir()
    for name in CLONE_ENTRIES:
        os.symlink(ROOT / name, clone / name)
    if "models/r18-mtfl-100" in source:
        from contrastive_landmarks import Hypercolumn, LandmarkModel, LandmarkRegressor, SpatialProjector, load_backbone

        hypercolumn = Hypercolumn(load_backbone("test_resnet"), size=48)
        channels = sum(hypercolumn.backbone.channels)
        projector = SpatialProjector(channels, 256, size=48)
        regressor = LandmarkRegressor(channels, 5, size=48)
        LandmarkModel(hypercolumn, projector, regressor, regressor_input="hypercolumn").save_pretrained(
            clone / "models" / "r18-mtfl-100"
        )
    return clone


def _run_block(document: str, first_line: int, source: str, cwd: Path) -> subprocess.CompletedProcess:
    """``source`` run by :data:`RUNNER` in a fresh interpreter started in ``cwd`` (``sys.path[0]`` is ``cwd``, as
    for code pasted into ``python``), offline, without the test session's ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    block = json.dumps({"document": document, "first_line": first_line, "source": source})
    return subprocess.run(
        [sys.executable, "-c", RUNNER], input=block, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("document, first_line, source", CASES)
def test_python_block_runs_as_pasted_in_a_fresh_interpreter(document, first_line, source, tmp_path):
    clone = _reader_clone(tmp_path, source)
    done = _run_block(document, first_line, source, clone)
    assert done.returncode == 0, f"{document}:{first_line} fails as pasted in {clone}:\n{done.stderr[-3000:]}"
    if (document, first_line) == ("README.md", python_blocks("README.md")[0][0]):  # the first example, below
        warned = [line for line in done.stderr.splitlines() if line.startswith("README.md:") and "Warning" in line]
        assert not warned, f"README.md:{first_line} warns as pasted: {warned}"


def test_the_first_example_shows_a_real_face():
    """The README's first example shows the built-in model on a real face, not on ``torch.rand`` input that the
    model then warns is noise (that it runs without warnings is checked where it runs, above)."""
    _, source = python_blocks("README.md")[0]
    assert "resnet18-faces" in source and "torch.rand" not in source


def test_a_failing_block_fails_here(tmp_path):
    """The runner reports what a reader would see: an import the package lacks, a shape the comment misstates."""
    clone = _reader_clone(tmp_path, "")
    missing = _run_block("x.md", 1, "from contrastive_landmarks import no_such_name\n", clone)
    assert missing.returncode != 0 and "no_such_name" in missing.stderr
    wrong = _run_block("x.md", 1, "import torch\ntorch.zeros(2).shape  # torch.Size([3])\n", clone)
    assert wrong.returncode != 0 and "x.md:2: the README says torch.Size([3])" in wrong.stderr
