"""`contrastive-landmarks predict MODEL video`: one DeepLabCut row per frame, equal to `detect` on the frames."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import pytest
import torch

pytest.importorskip("av")

from contrastive_landmarks.cli import main
from contrastive_landmarks.cli.predict import PALETTE
from contrastive_landmarks.data.dlc import read_dlc_labels
from contrastive_landmarks.data.video import read_video_frames, video_info
from tests.data.test_video import make_video


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """10 frames, 96x80, of the moving square (H.264 when PyAV has it)."""
    return make_video(tmp_path_factory.mktemp("recording") / "square.mp4", size=(96, 80))


def detected(model, path):
    """``detect`` on the frames of ``path``, decoded here independently of the CLI: (points, scores)."""
    frames = torch.stack([image for _, image in read_video_frames(path)])
    return model.detect(frames, return_scores=True)


def test_one_deeplabcut_row_per_frame_equal_to_detect(recording, faces_model, tmp_path):
    out = tmp_path / "points.csv"
    args = ["predict", "resnet18-faces", str(recording), "--output", str(out), "--batch-size", "4"]
    assert main([*args, "--labelled-video", str(tmp_path / "labelled.mp4")]) == 0
    lines = list(csv.reader(out.open()))
    names = list(faces_model.landmark_names)
    assert [line[0] for line in lines[:3]] == ["scorer", "bodyparts", "coords"]
    assert lines[1][1:] == [n for n in names for _ in range(3)]
    assert lines[2][1:] == ["x", "y", "likelihood"] * len(names)
    assert [line[0] for line in lines[3:]] == [str(i) for i in range(10)]  # the row index is the frame number
    frames, parts, xy = read_dlc_labels(out)  # the library's own DeepLabCut reader takes it
    assert frames == [str(i) for i in range(10)] and parts == names and xy.shape == (10, len(names), 2)
    points, scores = detected(faces_model, recording)
    assert torch.allclose(torch.from_numpy(xy).float(), points, atol=2e-3)
    likelihood = torch.tensor([[float(v) for v in line[3::3]] for line in lines[3:]])
    assert torch.allclose(likelihood, scores, atol=2e-3)
    # the labelled copy: same frames, rate and size, a dot of the last (topmost) landmark's colour at its point
    info = video_info(tmp_path / "labelled.mp4")
    assert (info.num_frames, info.fps, info.width, info.height) == (10, 25.0, 96, 80)
    for i, image in read_video_frames(tmp_path / "labelled.mp4", every=3):
        x, y = (round(v) for v in points[i, -1].tolist())
        colour = torch.tensor(PALETTE[len(names) - 1]) / 255
        if 0 <= x < 96 and 0 <= y < 80:
            assert (image[:, y, x] - colour).abs().max() < 0.15, (i, image[:, y, x])


def test_json_csv_and_the_default_output(recording, faces_model, tmp_path):
    video = shutil.copy(recording, tmp_path / "session 1.mp4")
    assert main(["predict", "resnet18-faces", str(video), "--no-progress"]) == 0
    default = tmp_path / "session 1_resnet18-faces.csv"
    assert len(list(csv.reader(default.open()))) == 3 + 10  # DeepLabCut's layout beside the video
    assert main(["predict", "resnet18-faces", str(video), "--output", str(tmp_path / "p.json"), "--no-progress"]) == 0
    payload = json.loads((tmp_path / "p.json").read_text())
    assert [p["frame"] for p in payload] == list(range(10))
    assert set(payload[0]["landmarks"]["nose"]) == {"x", "y", "score"}
    out = tmp_path / "p.csv"
    args = ["predict", "resnet18-faces", str(video), "--format", "csv", "--output", str(out), "--no-progress"]
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    points, _ = detected(faces_model, recording)
    assert [r["frame"] for r in rows] == [str(i) for i in range(10)]
    assert abs(float(rows[7]["nose_x"]) - points[7, 2, 0].item()) < 2e-3


def test_a_truncated_video_is_one_line_naming_it(recording, tmp_path, capsys):
    data = recording.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert main(["predict", "resnet18-faces", str(cut), "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "cut.mp4" in err and "Traceback" not in err and err.count("\n") == 1
    fast = make_video(tmp_path / "fast.mp4", 40, options={"movflags": "faststart"}).read_bytes()
    (tmp_path / "cut_fast.mp4").write_bytes(fast[: len(fast) // 2])
    assert main(["predict", "resnet18-faces", str(tmp_path / "cut_fast.mp4"), "--labelled-video", "l.mp4"]) == 2
    err = capsys.readouterr().err
    assert "cut_fast.mp4 is truncated" in err and err.count("\n") == 1
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "cut_fast_resnet18-faces.csv").exists()


def test_other_user_errors(recording, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "resnet18-faces", str(recording), "--batch-size", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size: must be at least 1, got 0" in err and "range()" not in err
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    assert main(["predict", "resnet18-faces", str(recording), str(image), "--output", str(tmp_path / "o.csv")]) == 2
    assert "one video at a time" in capsys.readouterr().err
    assert main(["predict", "resnet18-faces", str(image), "--output", "o.csv", "--labelled-video", "l.mp4"]) == 2
    assert "--labelled-video needs a video" in capsys.readouterr().err
    assert main(["predict", "resnet18-faces", str(recording), "--labelled-video", str(recording)]) == 2
    assert "is the input video" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    assert main(["predict", "resnet18-faces", str(recording), "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "[video]" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.data
def test_real_recording_gives_a_row_per_frame(shared_data, tmp_path):
    video = shared_data / "lp-mirror-mouse" / "videos" / "test_vid.mp4"
    out = tmp_path / "test_vid.csv"
    assert main(["predict", "resnet18-faces", str(video), "--output", str(out), "--no-progress"]) == 0
    frames, _, xy = read_dlc_labels(out)
    assert frames == [str(i) for i in range(994)] and xy.shape == (994, 5, 2)
    assert (xy[..., 0] > -1).all() and (xy[..., 0] < 396).all() and (xy[..., 1] > -1).all() and (xy[..., 1] < 406).all()
