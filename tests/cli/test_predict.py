"""`contrastive-landmarks predict`: the built-in model's points and scores for image files, in three formats."""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image

from contrastive_landmarks import LandmarkModel
from contrastive_landmarks.cli import main
from contrastive_landmarks.data import load_image


@pytest.fixture(scope="module")
def images(tmp_path_factory, hopper_face):
    """The portrait face at three sizes (one not square) and a noise image, as PNG files."""
    folder = tmp_path_factory.mktemp("images")
    face = (hopper_face.permute(1, 2, 0) * 255).round().byte().numpy()
    for size in ((64, 64), (128, 128), (96, 80)):
        Image.fromarray(face).resize(size, Image.BILINEAR).save(folder / f"face_{size[0]}x{size[1]}.png")
    Image.fromarray((torch.rand(70, 70, 3) * 255).byte().numpy()).save(folder / "noise.png")
    return folder


def test_predict_writes_the_points_detect_gives_in_each_images_own_frame(images, tmp_path):
    out = tmp_path / "points.csv"
    assert main(["predict", "resnet18-faces", str(images), "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    files = sorted(images.iterdir())
    assert [r["image"] for r in rows] == [str(f) for f in files]
    model = LandmarkModel.from_pretrained("resnet18-faces")
    points, scores = model.detect([load_image(f) for f in files], return_scores=True)
    names = model.landmark_names
    for row, p, s in zip(rows, points, scores):
        got = torch.tensor([[float(row[f"{n}_x"]), float(row[f"{n}_y"])] for n in names])
        assert torch.allclose(got, p, atol=2e-3)
        assert torch.allclose(torch.tensor([float(row[f"{n}_score"]) for n in names]), s, atol=2e-3)
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in rows}
    # the same face at 64 and 128 px: points in each image's own pixels, so twice as far from the origin
    small, large = by_name["face_64x64.png"], by_name["face_128x128.png"]
    for n in names:
        assert abs((float(small[f"{n}_x"]) + 0.5) * 2 - 0.5 - float(large[f"{n}_x"])) < 1.5
    mean_face = sum(float(small[f"{n}_score"]) for n in names) / len(names)
    mean_noise = sum(float(by_name["noise.png"][f"{n}_score"]) for n in names) / len(names)
    assert mean_face > mean_noise


def test_noise_and_blank_images_are_named_in_one_warning_line(images, tmp_path, capsys, content_checks):
    checked = content_checks  # predict's own check, and the one detect would run
    Image.new("RGB", (50, 40), (0, 0, 0)).save(tmp_path / "black.png")
    files = [images / "face_64x64.png", images / "noise.png", tmp_path / "black.png"]
    with warnings.catch_warnings(record=True) as caught:  # the content is checked once, by predict, not by detect
        warnings.simplefilter("always")
        assert main(["predict", "resnet18-faces", *map(str, files), "--output", str(tmp_path / "p.csv")]) == 0
    assert [str(w.message) for w in caught if "guesses" in str(w.message)] == []
    assert len(checked) == len(files)  # each image's content checked once
    lines = [line for line in capsys.readouterr().err.splitlines() if "guesses" in line]
    assert lines == [
        f"warning: {files[1]} is noise (neighbouring pixels uncorrelated); {files[2]} is blank (a single colour): "
        "their points are guesses, not landmarks"
    ]


def test_json_and_deeplabcut_formats(images, tmp_path):
    files = [str(images / "face_64x64.png"), str(images / "noise.png")]
    assert main(["predict", "resnet18-faces", *files, "--output", str(tmp_path / "p.json")]) == 0
    payload = json.loads((tmp_path / "p.json").read_text())
    assert [p["image"] for p in payload] == files and set(payload[0]["landmarks"]["nose"]) == {"x", "y", "score"}
    assert main(["predict", "resnet18-faces", *files, "--format", "dlc", "--output", str(tmp_path / "p.csv")]) == 0
    lines = list(csv.reader((tmp_path / "p.csv").open()))
    assert lines[0][0] == "scorer" and lines[1][1:4] == ["left_eye"] * 3 and lines[2][1:4] == ["x", "y", "likelihood"]
    assert len(lines) == 3 + 2 and len(lines[3]) == 1 + 3 * 5


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", "resnet18-faces", str(tmp_path / "missing.png"), "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "missing.png" in err and "Traceback" not in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["predict", "resnet18-faces", str(tmp_path / "empty"), "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "empty has no videos (.mp4" in err and "or images (.jpg" in err and err.count("\n") == 1
    (tmp_path / "a.png").write_text("not an image")
    assert main(["predict", "resnet18-faces", str(tmp_path / "a.png"), "--output", str(tmp_path / "o.csv")]) == 2
    assert "cannot read image" in capsys.readouterr().err
