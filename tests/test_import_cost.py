"""`import contrastive_landmarks` and `contrastive-landmarks --help` do not import timm (~2 s): it is
imported when a backbone is first created (issue 22)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_import_does_not_import_timm():
    _run("import contrastive_landmarks, sys; assert 'timm' not in sys.modules, 'timm imported'")


def test_cli_help_does_not_import_timm():
    pytest.importorskip("PIL")  # the train/viz subcommands register only with their extras
    _run(
        "import contextlib, io, sys\n"
        "from contrastive_landmarks.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert 'timm' not in sys.modules, 'timm imported by --help'\n"
    )


def test_a_backbone_still_builds_after_the_lazy_import():
    _run(
        "import torch, contrastive_landmarks as cl\n"
        "b = cl.load_backbone('test_resnet')\n"
        "assert [m.shape[1] for m in b(torch.rand(1, 3, 32, 32))]\n"
    )
