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


# -- issue 31: evaluate compares the model's landmarks with the data's body parts -------------------------------
def _keypoint_model(folder, names: tuple[str, ...], count: int | None = None):
    """A tiny ``test_resnet`` keypoint model of ``count`` landmarks (default: one per name) saved in ``folder``."""
    import torch

    from contrastive_landmarks import Hypercolumn, LandmarkModel, LandmarkRegressor, load_backbone

    torch.manual_seed(0)
    hypercolumn = Hypercolumn(load_backbone("test_resnet"), size=8)
    regressor = LandmarkRegressor(hypercolumn.channels, count or len(names), size=8)
    model = LandmarkModel(hypercolumn, None, regressor, regressor_input="hypercolumn", landmark_names=names)
    return model.save_pretrained(folder)


def _frames(folder, header: str):
    """Two smooth 32x32 frames and a keypoint CSV of them with ``header``'s columns (after ``image``)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[:32, :32]
    rows = [f"image,{header}"]
    columns = len(header.split(","))
    for i in range(2):
        smooth = np.stack([xs * 6, ys * 6, (xs + ys) * 3 + 40 * i], -1)  # not noise: no warning about the input
        Image.fromarray(smooth.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png," + ",".join(str(8 + 2 * j + i) for j in range(columns)))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


NAMED = "nose_x,nose_y,tail_x,tail_y,paw_x,paw_y"


def test_evaluate_refuses_a_model_of_other_body_parts_naming_them(tmp_path, capsys):
    pytest.importorskip("PIL")
    labels = _frames(tmp_path / "data", NAMED)
    model = _keypoint_model(tmp_path / "ears", ("nose", "left_ear", "right_ear"))
    assert cli.main(["evaluate", str(model), "--dataset", "csv", "--path", str(labels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other body parts" in err[0], err
    assert "left_ear, right_ear only in the model" in err[0] and "tail, paw only in the data" in err[0]
    strange = _keypoint_model(tmp_path / "fins", ("fin", "gill", "tail_fin"))
    assert cli.main(["evaluate", str(strange), "--dataset", "csv", "--path", str(labels)]) == 2
    assert "other body parts (fin, gill, tail_fin) than the data" in capsys.readouterr().err
    reordered = _keypoint_model(tmp_path / "reordered", ("tail", "nose", "paw"))
    assert cli.main(["evaluate", str(reordered), "--dataset", "csv", "--path", str(labels)]) == 2
    assert "another order" in capsys.readouterr().err


def test_evaluate_of_a_model_with_more_landmarks_names_the_body_parts(tmp_path, capsys):
    pytest.importorskip("PIL")
    labels = _frames(tmp_path / "data", NAMED)
    model = _keypoint_model(tmp_path / "five", ("a", "b", "c", "d", "e"))
    assert cli.main(["evaluate", str(model), "--dataset", "csv", "--path", str(labels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predicts 5 landmarks (a, b, c, d, e)" in err[0], err
    assert "labels 3 (nose, tail, paw)" in err[0] and "shape" not in err[0]


def test_evaluate_with_names_missing_on_a_side_says_so_and_goes_on(tmp_path, capsys):
    pytest.importorskip("PIL")
    unnamed = _keypoint_model(tmp_path / "unnamed", (), count=3)
    labels = _frames(tmp_path / "data", NAMED)
    assert cli.main(["evaluate", str(unnamed), "--dataset", "csv", "--path", str(labels)]) == 0
    captured = capsys.readouterr()
    assert "warning: the model" in captured.err and "names no landmarks" in captured.err
    assert "mean" in captured.out
    numbered = _frames(tmp_path / "numbered", "x1,x2,x3,y1,y2,y3")
    named = _keypoint_model(tmp_path / "named", ("nose", "tail", "paw"))
    assert cli.main(["evaluate", str(named), "--dataset", "csv", "--path", str(numbered)]) == 0
    assert "names no body parts" in capsys.readouterr().err
    assert cli.main(["evaluate", str(named), "--dataset", "csv", "--path", str(labels)]) == 0
    assert "warning" not in capsys.readouterr().err
