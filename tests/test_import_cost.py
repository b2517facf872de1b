"""`import contrastive_landmarks` and `contrastive-landmarks --help` import neither torch (~1.5 s here) nor
timm (~2 s): the package's names are imported on first use, and the command line imports the module of the
subcommand it runs only (issue 22: --help under 1 s; 0.07 s here)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_import_does_not_import_timm():
    _run(
        "import contrastive_landmarks, contrastive_landmarks.data, sys\n"
        "assert 'timm' not in sys.modules and 'torch' not in sys.modules, 'torch or timm imported'"
    )


def test_cli_help_lists_every_subcommand_without_importing_torch():
    _run(
        "import contextlib, io, sys\n"
        "from contrastive_landmarks.cli import _COMMANDS, main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch or timm imported by --help'\n"
        "assert all(f'    {name} ' in out.getvalue() for name in _COMMANDS), out.getvalue()\n"
    )


def test_a_subcommand_gets_its_options_and_the_table_help_line():
    pytest.importorskip("PIL")  # predict registers only with its extra
    _run(
        "import contextlib, io\n"
        "from contrastive_landmarks.cli import _COMMANDS, build_parser, main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['predict', '--help'])\n"
        "assert '--labelled-video' in out.getvalue(), out.getvalue()\n"
        "choices = build_parser()._subparsers._group_actions[0]\n"
        "helps = {a.dest: a.help for a in choices._choices_actions}\n"
        "assert helps == {name: c.help for name, c in _COMMANDS.items()}, helps\n"
    )


def test_a_backbone_still_builds_after_the_lazy_import():
    _run(
        "import torch, contrastive_landmarks as cl\n"
        "b = cl.load_backbone('test_resnet')\n"
        "assert [m.shape[1] for m in b(torch.rand(1, 3, 32, 32))]\n"
    )
