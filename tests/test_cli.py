"""The CLI shell: subcommands whose extra is missing are still listed and say which extra to install."""

from __future__ import annotations

import importlib

import pytest

from contrastive_landmarks import cli


def test_missing_extra_lists_each_subcommand_with_its_extra(monkeypatch, capsys):
    real_import = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name == "contrastive_landmarks.train.cli":  # as if it needed a package of the extra
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
