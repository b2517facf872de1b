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
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCUMENTS = ["README.md", "contrastive_landmarks/weights/resnet18-faces/README.md"]
# What a clone holds that the blocks can reach (the package, torch.hub's entry points, the documents).
CLONE_ENTRIES = ("contrastive_landmarks", "hubconf.py", "README.md", "docs", "setup.cfg", "pyproject.toml")

# Runs in the fresh interpreter: reads {"document", "first_line", "source"} from the file it is given, runs the
# block statement by statement in one namespace, checking each expression against the literal its comment states.
RUNNER = r'''
import ast, json, sys

import torch

with open(sys.argv[1]) as file:
    block = json.load(file)
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


def _start_block(document: str, first_line: int, source: str, cwd: Path) -> subprocess.Popen:
    """``source`` started under :data:`RUNNER` in a fresh interpreter in ``cwd`` (``sys.path[0]`` is ``cwd``, as
    for code pasted into ``python``), offline, one thread, without the test session's ``PYTHONPATH``; the block
    and its output are files beside ``cwd`` (:func:`_finish` reads them back)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    with tempfile.NamedTemporaryFile("w", dir=cwd.parent, prefix="block-", suffix=".json", delete=False) as file:
        block = Path(file.name)
    block.write_text(json.dumps({"document": document, "first_line": first_line, "source": source}))
    with open(block.with_suffix(".out"), "w") as stdout, open(block.with_suffix(".err"), "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(block)], stdout=stdout, stderr=stderr, cwd=cwd, env=env, text=True
        )


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    """The finished run of a started block, its output read back."""
    returncode = process.wait(timeout=600)
    block = Path(process.args[-1])
    return subprocess.CompletedProcess(
        process.args, returncode, block.with_suffix(".out").read_text(), block.with_suffix(".err").read_text()
    )


@pytest.fixture(scope="module")
def started_blocks(tmp_path_factory) -> dict:
    """Every block started at once, each in its own fresh interpreter and reader's clone (each is one thread
    that mostly imports: run side by side, they take the time of the longest instead of the sum)."""
    running = {}
    for document, first_line, source in (case.values for case in CASES):
        clone = _reader_clone(tmp_path_factory.mktemp("reader"), source)
        running[document, first_line] = (_start_block(document, first_line, source, clone), clone)
    yield running
    for process, _ in running.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("document, first_line, source", CASES)
def test_python_block_runs_as_pasted_in_a_fresh_interpreter(document, first_line, source, started_blocks):
    process, clone = started_blocks[document, first_line]
    done = _finish(process)
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
    missing = _start_block("x.md", 1, "from contrastive_landmarks import no_such_name\n", clone)
    wrong = _start_block("x.md", 1, "import torch\ntorch.zeros(2).shape  # torch.Size([3])\n", clone)
    missing, wrong = _finish(missing), _finish(wrong)
    assert missing.returncode != 0 and "no_such_name" in missing.stderr
    assert wrong.returncode != 0 and "x.md:2: the README says torch.Size([3])" in wrong.stderr
