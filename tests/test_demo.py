"""The ``demo`` subcommand: pictures written, points where the model puts them, clear errors."""

from __future__ import annotations

import PIL.Image
import pytest
import torch

from contrastive_landmarks import Hypercolumn, LandmarkModel, LandmarkRegressor, SpatialProjector, load_backbone
from contrastive_landmarks.cli import main
from contrastive_landmarks.demo import _DISPLAY, example_faces, load_image, run_demo


@pytest.fixture
def bundle_dir(tmp_path):
    torch.manual_seed(0)
    backbone = load_backbone("test_resnet").with_preprocessing(input_size=(32, 32))
    hc = Hypercolumn(backbone, size=16)
    model = LandmarkModel(hc, SpatialProjector(hc.channels, 8, size=16), LandmarkRegressor(8, 5, 2, size=16))
    return model.save_pretrained(tmp_path / "bundle")


def _size(path):
    with PIL.Image.open(path) as image:
        return image.size


def test_example_faces_are_real_views():
    views, titles = example_faces(64)
    assert views.shape == (4, 3, 64, 64) and len(titles) == 4
    assert float(views.min()) >= 0 and float(views.max()) <= 1
    torch.testing.assert_close(views[1], views[0].flip(-1))
    assert float(views[0].std()) > 0.1  # a photograph, not a blank
    assert float((views[2] - views[0]).abs().mean()) > 0.01  # the warp moved things


def test_demo_on_builtin_example(bundle_dir, tmp_path):
    result = run_demo(tmp_path / "out", model=bundle_dir)
    for key in ("landmarks", "matches"):
        assert result[key].is_file() and result[key].stat().st_size > 10_000
    width, height = _size(result["landmarks"])
    assert width > 2 * height  # four panels side by side
    # the plotted points are the model's detections, rescaled to the displayed size
    model = LandmarkModel.from_pretrained(bundle_dir)
    views, _ = example_faces(_DISPLAY)
    inputs = torch.nn.functional.interpolate(
        views, size=(32, 32), mode="bilinear", align_corners=False, antialias=True
    ).clamp(0, 1)
    expected = (model.detect(inputs) + 0.5) * (_DISPLAY / 32) - 0.5
    torch.testing.assert_close(result["points"], expected)
    assert result["matched"].shape == (5, 2) and result["error"] is not None and result["error"] >= 0


def test_demo_cli_with_user_images(bundle_dir, tmp_path, capsys):
    paths = []
    for i in range(2):
        data = (torch.rand(40, 50, 3) * 255).to(torch.uint8).numpy()
        path = tmp_path / f"face{i}.png"
        PIL.Image.fromarray(data).save(path)
        paths.append(str(path))
    assert load_image(paths[0]).shape == (3, 40, 40)  # centre square
    assert main(["demo", "--out", str(tmp_path / "d"), "--model", str(bundle_dir), "--images", *paths]) == 0
    assert "landmarks.png" in capsys.readouterr().out
    assert (tmp_path / "d" / "matches.png").is_file()


def _photos(folder, count=2):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"face{i}.png"
        PIL.Image.fromarray((torch.rand(40, 40, 3) * 255).to(torch.uint8).numpy()).save(path)
        paths.append(path)
    return paths


def test_demo_errors(bundle_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        run_demo(tmp_path, model=bundle_dir, images=[tmp_path / "a.jpg", tmp_path / "b.jpg"])
    one = _photos(tmp_path / "one", 1)
    with pytest.raises(ValueError, match="at least two"):
        run_demo(tmp_path, model=bundle_dir, images=one)


def test_demo_checks_inputs_before_loading_the_model(tmp_path, monkeypatch):
    """A wrong path fails at once: the model (here a missing one) is never loaded."""
    from contrastive_landmarks import pipeline

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(pipeline.LandmarkModel, "from_pretrained", no_loading)
    with pytest.raises(FileNotFoundError, match="image not found"):
        run_demo(tmp_path / "out", images=[*_photos(tmp_path / "p"), tmp_path / "missing.jpg"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        run_demo(tmp_path / "file", images=_photos(tmp_path / "p"))


def _one_line_error(capsys, code, *names):
    """Exit status 2, one line on stderr naming each of ``names``, no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("contrastive-landmarks demo: error: ")
    for name in names:
        assert str(name) in lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_cli_missing_image_file(bundle_dir, tmp_path, capsys):
    missing = tmp_path / "no_such_face.jpg"
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "d"),
            "--model",
            str(bundle_dir),
            "--images",
            str(_photos(tmp_path / "p")[0]),
            str(missing),
        ]
    )
    assert "not found" in _one_line_error(capsys, code, missing)


def test_cli_non_image_file(bundle_dir, tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "d"),
            "--model",
            str(bundle_dir),
            "--images",
            str(text),
            str(_photos(tmp_path / "p")[0]),
        ]
    )
    assert "not a readable image" in _one_line_error(capsys, code, text)


@pytest.mark.parametrize("where", ["a file", "below a file", "read-only folder"])
def test_cli_unwritable_out(bundle_dir, tmp_path, capsys, where):
    import os

    (tmp_path / "file").write_text("x")
    out = {
        "a file": tmp_path / "file",
        "below a file": tmp_path / "file" / "sub",
        "read-only folder": tmp_path / "ro" / "out",
    }[where]
    if where == "read-only folder":
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            pytest.skip("root can write to read-only folders")
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
    try:
        code = main(
            ["demo", "--out", str(out), "--model", str(bundle_dir), "--images", *map(str, _photos(tmp_path / "p"))]
        )
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o700)
    assert "--out" in _one_line_error(capsys, code, out)


def test_cli_folder_of_images(bundle_dir, tmp_path, capsys):
    folder = tmp_path / "faces"
    photos = _photos(folder, 3)
    (folder / "README.txt").write_text("not an image, and not a .jpg: skipped")
    assert main(["demo", "--out", str(tmp_path / "d"), "--model", str(bundle_dir), "--images", str(folder)]) == 0
    assert "landmarks.png" in capsys.readouterr().out
    result = run_demo(tmp_path / "d2", model=bundle_dir, images=[folder])
    assert result["points"].shape == (len(photos), 5, 2)
    assert result["scores"].shape == (len(photos), 5)
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["demo", "--out", str(tmp_path / "d"), "--model", str(bundle_dir), "--images", str(empty)])
    assert "has no images" in _one_line_error(capsys, code, empty)


def test_cli_verbose_prints_the_traceback_too(bundle_dir, tmp_path, capsys):
    missing = tmp_path / "a.jpg"
    assert (
        main(
            [
                "-v",
                "demo",
                "--out",
                str(tmp_path / "d"),
                "--model",
                str(bundle_dir),
                "--images",
                str(missing),
                str(missing),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("contrastive-landmarks demo: error:")


def test_cli_unpublished_model_is_one_line(tmp_path, capsys):
    """A registered model without published weights: its "not published" message alone, no traceback."""
    code = main(["demo", "--out", str(tmp_path / "d"), "--model", "resnet50-celeba"])
    assert "not published" in _one_line_error(capsys, code, "resnet50-celeba")
