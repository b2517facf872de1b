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
    inputs = torch.nn.functional.interpolate(views, size=(32, 32), mode="bilinear", align_corners=False,
                                             antialias=True).clamp(0, 1)
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


def test_demo_errors(bundle_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        run_demo(tmp_path, model=bundle_dir, images=[tmp_path / "a.jpg", tmp_path / "b.jpg"])
    with pytest.raises(ValueError, match="at least two"):
        run_demo(tmp_path, model=bundle_dir, images=[tmp_path / "a.jpg"])
