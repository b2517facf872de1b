"""The CLI shell: subcommands whose extra is missing are still listed and say which extra to install."""

from __future__ import annotations

import importlib

import pytest

from contrastive_landmarks import cli


def test_missing_extra_lists_each_subcommand_with_its_extra(monkeypatch, capsys):
    real_import = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name in (
            "contrastive_landmarks.cli.pretrain",
            "contrastive_landmarks.cli.fit_projector",
            "contrastive_landmarks.cli.fit_regressor",
        ):  # as if needing an extra
            raise ImportError("No module named 'tqdm'", name="tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    for name in ("pretrain", "fit-projector", "fit-regressor", "export", "push"):
        assert name in choices
    assert "cli" not in choices
    assert cli.main(["fit-projector", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "`fit-projector` needs the [train] extra" in err and "tqdm" in err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 1
    assert "COMMAND" in capsys.readouterr().out


def test_config_file_errors(tmp_path):
    with pytest.raises(SystemExit, match="config file not found"):
        cli.main(["--config", str(tmp_path / "missing.json"), "demo"])


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError("data folder not found: /nowhere"),
        NotADirectoryError("/etc/passwd is not a folder"),
        IsADirectoryError("/tmp is a folder, not a file"),
        PermissionError("cannot write /root/x"),
        ValueError("--limit must be positive,\n got -1"),
    ],
)
def test_user_errors_of_any_subcommand_are_one_line_and_exit_2(monkeypatch, capsys, error):
    from contrastive_landmarks import demo

    def handler(args):
        raise error

    monkeypatch.setattr(demo, "_run", handler)
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("contrastive-landmarks demo: error: ")
    assert " ".join(str(error).split()) in err


def test_user_error_class_of_common(monkeypatch, capsys):
    from contrastive_landmarks import demo
    from contrastive_landmarks.cli.common import UserError

    def handler(args):
        raise UserError("--num-labelled 0: give at least one labelled image")

    monkeypatch.setattr(demo, "_run", handler)
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err == (
        "contrastive-landmarks demo: error: --num-labelled 0: give at least one labelled image\n"
    )


def test_other_errors_still_raise(monkeypatch):
    from contrastive_landmarks import demo

    def handler(args):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(demo, "_run", handler)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["demo"])


# -- Ctrl-C (issue 31) ----------------------------------------------------------------------------------------
def test_ctrl_c_while_a_subcommand_imports_torch_is_one_line_and_exit_130(tmp_path):
    """A real start-up: a fresh interpreter whose ``import torch`` is interrupted, as Ctrl-C during the 1-2 s
    that import takes does (it printed a 90-line traceback from inside torch before)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from contrastive_landmarks.cli import main\n"
        "sys.exit(main(['predict', 'resnet18-faces', 'video.mp4']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "contrastive-landmarks predict: interrupted (Ctrl-C)\n"


def test_ctrl_c_in_parsing_or_in_a_command_is_one_line_and_exit_130(monkeypatch, capsys):
    from contrastive_landmarks import demo

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    assert cli.main(["predict", "resnet18-faces", "a.mp4"]) == 130
    assert capsys.readouterr().err == "contrastive-landmarks predict: interrupted (Ctrl-C)\n"
    monkeypatch.undo()
    monkeypatch.setattr(demo, "_run", interrupted)
    assert cli.main(["demo"]) == 130
    assert capsys.readouterr().err == "contrastive-landmarks demo: interrupted (Ctrl-C)\n"
