"""`contrastive-landmarks predict MODEL video`: one DeepLabCut row per frame, equal to `detect` on the frames."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

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
    args = [
        "predict",
        "resnet18-faces",
        str(recording),
        "--output",
        str(out),
        "--batch-size",
        "4",
        "--precision",
        "fp32",
    ]
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
    default = tmp_path / "session 1DLC_resnet18-faces.csv"  # DeepLabCut's naming: <video stem><scorer>.csv
    lines = list(csv.reader(default.open()))
    assert len(lines) == 3 + 10 and lines[0][1] == "DLC_resnet18-faces"  # DeepLabCut's layout beside the video
    assert main(["predict", "resnet18-faces", str(video), "--output", str(tmp_path / "p.json"), "--no-progress"]) == 0
    payload = json.loads((tmp_path / "p.json").read_text())
    assert [p["frame"] for p in payload] == list(range(10))
    assert set(payload[0]["landmarks"]["nose"]) == {"x", "y", "score"}
    out = tmp_path / "p.csv"
    args = ["predict", "resnet18-faces", str(video), "--format", "csv", "--output", str(out), "--no-progress"]
    assert main([*args, "--precision", "fp32"]) == 0
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
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "cut_fastDLC_resnet18-faces.csv").exists()


def test_other_user_errors(recording, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "resnet18-faces", str(recording), "--batch-size", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size: must be at least 1, got 0" in err and "range()" not in err
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    assert main(["predict", "resnet18-faces", str(recording), str(image), "--output", str(tmp_path / "o.csv")]) == 2
    assert "videos or images, not both in one call" in capsys.readouterr().err
    assert main(["predict", "resnet18-faces", str(image), "--output", "o.csv", "--labelled-video", "l.mp4"]) == 2
    assert "--labelled-video needs a video" in capsys.readouterr().err
    assert main(["predict", "resnet18-faces", str(recording), "--labelled-video", str(recording)]) == 2
    assert "is an input; write the output elsewhere" in capsys.readouterr().err
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


# -- DeepLabCut's .h5, several videos, filtering, named errors (issue 30) -----------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A test_resnet model directory named ``tiny`` (scorer ``DLC_tiny``): quick to load and run."""
    from tests.conftest import make_tiny_model

    return make_tiny_model().save_pretrained(tmp_path_factory.mktemp("models") / "tiny")


def predict(*args: str) -> int:
    return main(["predict", *map(str, args), "--no-progress", "--batch-size", "4"])


def test_h5_has_deeplabcuts_columns_one_row_per_frame_and_the_csvs_numbers(recording, tiny, tmp_path):
    import pandas  # the [h5] extra, part of [dev]

    assert predict(tiny, recording, "--output", tmp_path / "p.h5") == 0  # .h5 chosen by the extension
    assert predict(tiny, recording, "--output", tmp_path / "p.csv") == 0
    table = pandas.read_hdf(tmp_path / "p.h5", key="df_with_missing")
    assert list(table.columns.names) == ["scorer", "bodyparts", "coords"]
    names = ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"]
    assert list(table.columns) == [("DLC_tiny", n, c) for n in names for c in ("x", "y", "likelihood")]
    assert list(table.index) == list(range(10)) and (table.dtypes == "float64").all()
    _, parts, xy = read_dlc_labels(tmp_path / "p.csv")
    assert parts == names
    h5_xy = table.to_numpy().reshape(10, 5, 3)
    assert abs(h5_xy[..., :2] - xy).max() <= 5e-4  # the CSV holds 3 decimals
    likelihood = [[float(v) for v in line[3::3]] for line in list(csv.reader((tmp_path / "p.csv").open()))[3:]]
    assert abs(h5_xy[..., 2] - likelihood).max() <= 5e-4
    assert h5_xy[..., 2].min() > 0 and h5_xy[..., 2].max() < 1 and h5_xy[..., :2].std() > 0
    # --format h5 with a folder as the output: DeepLabCut's name in it
    (tmp_path / "out").mkdir()
    assert predict(tiny, recording, "--format", "h5", "--output", tmp_path / "out") == 0
    again = pandas.read_hdf(tmp_path / "out" / "squareDLC_tiny.h5")
    assert again.equals(table)


def test_several_videos_or_a_folder_each_written_beside_itself(recording, tiny, tmp_path, capsys):
    import pandas

    for folder in ("day1", "day2"):
        (tmp_path / folder).mkdir()
    first = shutil.copy(recording, tmp_path / "day1" / "mouse A.mp4")
    second = shutil.copy(recording, tmp_path / "day2" / "mouse B.mp4")
    assert predict(tiny, first, second, "--format", "h5") == 0
    assert (tmp_path / "day1" / "mouse ADLC_tiny.h5").is_file() and (tmp_path / "day2" / "mouse BDLC_tiny.h5").is_file()
    assert capsys.readouterr().err.count("wrote 10 predictions") == 2
    # a folder: its videos, sorted; labelled copies and other files left out
    shutil.copy(recording, tmp_path / "day1" / "mouse C.mp4")
    shutil.copy(recording, tmp_path / "day1" / "mouse ADLC_tiny_labeled.mp4")
    (tmp_path / "day1" / "notes.txt").write_text("not a video")
    assert predict(tiny, tmp_path / "day1", "--labelled-video", tmp_path / "day1") == 0
    written = sorted(p.name for p in (tmp_path / "day1").iterdir())
    assert written == [
        "mouse A.mp4",
        "mouse ADLC_tiny.csv",
        "mouse ADLC_tiny.h5",
        "mouse ADLC_tiny_labeled.mp4",  # rewritten by --labelled-video
        "mouse C.mp4",
        "mouse CDLC_tiny.csv",
        "mouse CDLC_tiny_labeled.mp4",
        "notes.txt",
    ]
    assert video_info(tmp_path / "day1" / "mouse CDLC_tiny_labeled.mp4").num_frames == 10
    # both videos hold the same frames: the same numbers
    a, b = (pandas.read_hdf(tmp_path / d / f"mouse {v}DLC_tiny.h5") for d, v in (("day1", "A"), ("day2", "B")))
    assert a.equals(b)
    # one output file for two videos is refused before any work
    capsys.readouterr()
    assert predict(tiny, first, second, "--output", tmp_path / "both.csv") == 2
    err = capsys.readouterr().err
    assert "names one file but there are 2 videos: give a folder" in err and err.count("\n") == 1
    assert not (tmp_path / "both.csv").exists()


def test_predict_filter_writes_the_filtered_track_as_the_filter_command_does(recording, tiny, tmp_path, capsys):
    import pandas

    video = shutil.copy(recording, tmp_path / "v.mp4")
    assert predict(tiny, video, "--format", "h5", "--filter", "savgol", "--pcutoff", "0.0") == 0
    err = capsys.readouterr().err
    assert "filtered (savgol, p-cutoff 0 from --pcutoff" in err
    raw = pandas.read_hdf(tmp_path / "vDLC_tiny.h5")
    filtered = pandas.read_hdf(tmp_path / "vDLC_tiny_filtered.h5")
    assert filtered.shape == raw.shape and list(filtered.columns) == list(raw.columns)
    assert not filtered.equals(raw)  # smoothed
    assert (tmp_path / "vDLC_tiny_filtered.csv").is_file()  # DeepLabCut writes the CSV beside the filtered .h5
    # the filter command on the raw .h5 gives the same file
    (tmp_path / "vDLC_tiny_filtered.h5").rename(tmp_path / "first.h5")
    assert main(["filter", str(tmp_path / "vDLC_tiny.h5"), "--method", "savgol", "--pcutoff", "0"]) == 0
    assert pandas.read_hdf(tmp_path / "vDLC_tiny_filtered.h5").equals(pandas.read_hdf(tmp_path / "first.h5"))


def test_named_one_line_errors_before_any_frame_is_predicted(recording, tiny, tmp_path, capsys, monkeypatch):
    def one_line(*args) -> str:
        assert predict(*args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no video here")
    assert "empty has no videos (.mp4" in one_line(tiny, tmp_path / "empty")
    # a truncated video in a folder is named, and nothing is written for the good one beside it
    (tmp_path / "videos").mkdir()
    good = shutil.copy(recording, tmp_path / "videos" / "a.mp4")
    data = recording.read_bytes()
    (tmp_path / "videos" / "b.mp4").write_bytes(data[: len(data) // 2])
    assert "b.mp4" in one_line(tiny, tmp_path / "videos")
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["a.mp4", "b.mp4"]
    # unwritable outputs: a missing folder, a folder where the file goes, a folder without write permission
    err = one_line(tiny, good, "--output", tmp_path / "missing" / "p.csv")
    assert "cannot write" in err and "does not exist" in err
    (tmp_path / "p.h5").mkdir()  # for videos a folder to write into; for images the file to write
    image = tmp_path / "frame.png"
    image.write_bytes(b"")
    assert "p.h5: it is a folder" in one_line(tiny, image, "--output", tmp_path / "p.h5")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))  # root ignores chmod
    assert f"cannot write {locked / 'aDLC_tiny.csv'}: no permission" in one_line(tiny, good, "--output", locked)
    monkeypatch.undo()
    assert "--pcutoff set how --filter filters" in one_line(tiny, good, "--pcutoff", "0.5")
    assert "--filter needs video input" in one_line(tiny, image, "--filter", "median", "--output", tmp_path / "o.csv")
    err = one_line(tiny, good, "--format", "h5", "--output", tmp_path / "p.csv")
    assert "--format h5 writes a .h5 file, but --output" in err
    monkeypatch.setitem(sys.modules, "tables", None)  # PyTables (the [h5] extra) not installed
    assert 'pip install "contrastive-landmarks[h5]"' in one_line(tiny, good, "--output", tmp_path / "q.h5")
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["a.mp4", "b.mp4"]
    assert not any((tmp_path / name).exists() for name in ("p.csv", "o.csv", "q.h5"))


# -- tracked prediction (issue 30, item 1) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    """The tiny model with a two-stage framing (whole frame, then a crop around the points), saved as ``framed``."""
    from contrastive_landmarks.framing import Framing
    from tests.conftest import make_tiny_model

    model = make_tiny_model()
    model.framing = Framing()
    return model.save_pretrained(tmp_path_factory.mktemp("models") / "framed")


def test_a_two_stage_models_video_is_tracked_unless_every_frame(recording, two_stage, tmp_path, capsys):
    from contrastive_landmarks import LandmarkModel
    from contrastive_landmarks.tracking import TrackState, track_frames

    model = LandmarkModel.from_pretrained(two_stage)
    frames = torch.stack([image for _, image in read_video_frames(recording)])
    fp32 = ("--precision", "fp32", "--device", "cpu")
    assert predict(two_stage, recording, "--output", tmp_path / "every.csv", "--every-frame", *fp32) == 0
    assert "tracked" not in capsys.readouterr().err
    _, _, xy = read_dlc_labels(tmp_path / "every.csv")
    assert torch.allclose(torch.from_numpy(xy).float(), model.detect(frames), atol=2e-3)  # detect on every frame
    assert predict(two_stage, recording, "--output", tmp_path / "tracked.csv", *fp32) == 0
    err = capsys.readouterr().err
    assert "wrote 10 predictions" in err and "tracked, " in err and " frames on the whole frame" in err
    _, _, xy = read_dlc_labels(tmp_path / "tracked.csv")
    state, expected = TrackState(), []
    for start in range(0, 10, 4):  # --batch-size 4: the decoded chunks, fed to the tracker in order
        result = track_frames(model, frames[start : start + 4], state)
        state = result.state
        expected.append(result.points)
    assert torch.allclose(torch.from_numpy(xy).float(), torch.cat(expected), atol=2e-3)
    # the default precision (bfloat16 where this CPU has it) writes the same rows
    assert predict(two_stage, recording, "--output", tmp_path / "auto.csv") == 0
    _, _, auto = read_dlc_labels(tmp_path / "auto.csv")
    assert auto.shape == xy.shape and (abs(auto) < 1e4).all()


def test_device_and_precision_are_named_one_line_errors(recording, two_stage, tmp_path, capsys):
    assert predict(two_stage, recording, "--device", "nonsense", "--output", tmp_path / "o.csv") == 2
    err = capsys.readouterr().err
    assert "--device 'nonsense' is not a torch device" in err and err.count("\n") == 1
    if not torch.cuda.is_available():
        assert predict(two_stage, recording, "--device", "cuda", "--output", tmp_path / "o.csv") == 2
        err = capsys.readouterr().err
        assert "no CUDA device is available" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        predict(two_stage, recording, "--precision", "int8")
    assert not (tmp_path / "o.csv").exists()


def grey_video(path: Path, frames: int = 6, size: tuple[int, int] = (96, 80)) -> Path:
    """``frames`` frames of one grey, which :func:`~contrastive_landmarks.check.content_problem` calls blank."""
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for _ in range(frames):
            array = np.full((size[1], size[0], 3), 128, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("every_frame", [False, True], ids=["tracked", "every-frame"])
def test_blank_frames_are_named_once_by_frame_number(two_stage, tmp_path, capsys, content_checks, every_frame):
    """The frames' content is checked once, as they are decoded: one stderr line, and no warning from ``detect``."""
    import warnings

    checked = content_checks  # predict's own check, and the one detect would run
    video = grey_video(tmp_path / "grey.mp4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = ("--every-frame",) if every_frame else ()
        assert predict(two_stage, video, "--output", tmp_path / "p.csv", "--precision", "fp32", *args) == 0
    assert [str(w.message) for w in caught if "guesses" in str(w.message)] == []
    assert len(checked) == 6  # each frame's content checked once
    lines = [line for line in capsys.readouterr().err.splitlines() if "guesses" in line]
    assert lines == [
        "warning: 6 frames of grey.mp4 are blank (a single colour) (the first: 0, 1, 2, 3, 4): "
        "their points are guesses, not landmarks"
    ]
