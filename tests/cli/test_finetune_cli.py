"""``finetune`` and ``evaluate keypoints`` end to end through ``cli.main`` on frames the test writes."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image

from contrastive_landmarks import LandmarkModel
from contrastive_landmarks.cli import main
from contrastive_landmarks.data.base import load_image
from tests.train.test_finetune import dot_frames

FAST = ["--backbone", "test_resnet", "--image-size", "64", "--batch-size", "4", "--no-progress"]


def write_csv(folder: Path, count: int = 12, *, seed: int = 0, drop_part: bool = False) -> Path:
    """PNG frames of two sizes and a named-column CSV (``red_x, red_y, green_x, green_y``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,red_x,red_y,green_x,green_y"]
    for i, sample in enumerate(dot_frames(count, seed)):
        name = f"frame{i:03d}.png"
        array = (sample["image"].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(array).save(folder / name)
        (rx, ry), (gx, gy) = sample["keypoints"].tolist()
        rows.append(f"{name},{rx},{ry},{'' if drop_part else gx},{'' if drop_part else gy}")
    path = folder / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_finetune_then_evaluate(tmp_path, capsys):
    labels = write_csv(tmp_path / "train")
    out = tmp_path / "model"
    code = main(["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "12", "--output", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "finetune.json").read_text())
    assert report["steps"] == 12 and any("too few" in w for w in report["warnings"])
    model = LandmarkModel.from_pretrained(out)
    assert model.landmark_names == ("red", "green") and model.framing is not None

    test = write_csv(tmp_path / "test", 5, seed=3)
    metrics_path = tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["evaluate", str(out), "--dataset", "csv", "--path", str(test), "--output", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())
    assert metrics_path.with_suffix(".png").is_file()
    # the metrics are those of the model's own predictions on the test frames
    frames = [load_image(test.parent / f"frame{i:03d}.png") for i in range(5)]
    pred = model.detect(frames)
    truth = torch.stack([s["keypoints"] for s in dot_frames(5, 3)])
    assert metrics["mean_px"] == pytest.approx(float((pred - truth).norm(dim=-1).mean()), rel=1e-4)
    assert set(metrics["per_part"]) == {"red", "green"} and "mean_pose" in metrics and "p_cutoff" in metrics

    # with a calibrated likelihood, evaluate says how it holds on these frames (issue 30)
    from contrastive_landmarks.calibration import LikelihoodCalibration

    model.calibration = LikelihoodCalibration([(1.0, 0.0)] * 2, radius=3.0)
    model.save_pretrained(tmp_path / "calibrated")
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "calibrated"),
                "--dataset",
                "csv",
                "--path",
                str(test),
                "--output",
                str(metrics_path),
                "--no-plot",
            ]
        )
        == 0
    )
    held = json.loads(metrics_path.read_text())["likelihood"]
    _, likelihood = model.detect(frames, return_scores=True)
    good, kept = (pred - truth).norm(dim=-1) <= 3.0, likelihood >= 0.6
    assert held["radius"] == "within 3 px" and held["points"] == 10
    expected = float((good & kept).sum() / kept.sum()) if bool(kept.any()) else None
    assert held["kept_within_radius"] == pytest.approx(expected)


def test_bad_input_is_one_line(tmp_path, capsys):
    out = str(tmp_path / "model")
    labels = write_csv(tmp_path / "never", drop_part=True)
    assert main(["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "2", "--output", out, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "['green'] are labelled in none" in err and len(err.splitlines()) == 1

    labels = write_csv(tmp_path / "missing")
    (labels.parent / "frame003.png").unlink()
    assert main(["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "2", "--output", out, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "frame003.png" in err and len(err.splitlines()) == 1

    labels = write_csv(tmp_path / "broken")
    (labels.parent / "frame004.png").write_bytes(b"not a png")
    assert main(["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "2", "--output", out, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read image" in err and "frame004.png" in err

    empty = tmp_path / "empty.csv"
    empty.write_text("image,red_x,red_y\n")
    assert main(["finetune", "--dataset", "csv", "--path", str(empty), "--steps", "2", "--output", out, *FAST]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.data
def test_lightning_pose_labels_without_a_project(shared_data):
    from contrastive_landmarks.data.registry import frames_by_name

    frames = frames_by_name("dlc", str(shared_data / "lp-mirror-mouse" / "CollectedData.csv"), "test")
    assert len(frames) == 18 and frames.names[0] == "paw1LH_top"
    sample = frames[0]
    assert sample["image"].shape == (3, 406, 396) and int(sample["visible"].sum()) > 0


def write_dlc_project(folder: Path, count: int = 12) -> Path:
    """A DeepLabCut project (config.yaml, labeled-data/v1/CollectedData_me.csv, PNG frames of two sizes)."""
    frames = folder / "labeled-data" / "v1"
    frames.mkdir(parents=True)
    (folder / "config.yaml").write_text("scorer: me\nbodyparts:\n- red\n- green\nskeleton: []\n")
    rows = ["scorer,me,me,me,me", "bodyparts,red,red,green,green", "coords,x,y,x,y"]
    for i, sample in enumerate(dot_frames(count)):
        array = (sample["image"].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(array).save(frames / f"img{i:03d}.png")
        (rx, ry), (gx, gy) = sample["keypoints"].tolist()
        rows.append(f"labeled-data/v1/img{i:03d}.png,{rx},{ry},{gx},{gy}")
    (frames / "CollectedData_me.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_fit_regressor_on_dlc_frames_letterboxes_at_detect(tmp_path):
    import torch.nn.functional as F

    from contrastive_landmarks.framing import Framing

    project = write_dlc_project(tmp_path / "project")
    out = tmp_path / "frozen"
    args = ["fit-regressor", "--dataset", "dlc", "--root", str(project), "--backbone", "test_resnet"]
    assert main([*args, "--image-size", "64", "--steps", "5", "--output", str(out), "--no-progress"]) == 0
    model = LandmarkModel.from_pretrained(out)
    assert model.framing == Framing(stages=1)  # fitted on letterboxed frames, so detect letterboxes too
    frame = load_image(project / "labeled-data" / "v1" / "img000.png")  # 60 x 80: 10 rows of padding each side
    square = F.pad(frame, (0, 0, 10, 10))
    model.framing = None
    by_hand = model.detect(F.interpolate(square[None], size=(64, 64), mode="bilinear", antialias=True))[0]
    by_hand[:, 1] = (by_hand[:, 1] + 0.5) * 80 / 64 - 0.5 - 10
    by_hand[:, 0] = (by_hand[:, 0] + 0.5) * 80 / 64 - 0.5
    model.framing = Framing(stages=1)
    torch.testing.assert_close(model.detect([frame])[0], by_hand, atol=0.5, rtol=0)


def test_ctrl_c_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    finetune_module = importlib.import_module("contrastive_landmarks.train.finetuning")

    real_step, calls = finetune_module._step, []

    def step_then_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 3:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args)

    monkeypatch.setattr(finetune_module, "_step", step_then_ctrl_c)
    labels = write_csv(tmp_path / "train")
    argv = ["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "8", "--output", str(tmp_path / "m")]
    monkeypatch.setattr("sys.argv", ["contrastive-landmarks", *argv, *FAST])
    assert main([*argv, *FAST]) == 130
    err = capsys.readouterr().err
    assert (
        "interrupted after step 3" in err
        and "--resume" in err
        and (tmp_path / "m" / "finetune_checkpoint.pt").is_file()
    )
    monkeypatch.setattr(finetune_module, "_step", real_step)
    assert main([*argv, *FAST, "--resume"]) == 0
    report = json.loads((tmp_path / "m" / "finetune.json").read_text())
    assert report["steps"] == 8


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_the_footage_step_adapts_to_the_named_video_and_is_recorded(tmp_path, capsys):
    pytest.importorskip("av")
    from tests.data.test_video import make_video

    labels = write_csv(tmp_path / "train")
    video = make_video(tmp_path / "clip.mp4", frames=66, size=(48, 40))
    out = tmp_path / "model"
    argv = ["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "4", "--output", str(out), *FAST]
    assert main([*argv, "--video", str(video), "--footage-steps", "1"]) == 0, capsys.readouterr().err
    report = json.loads((out / "finetune.json").read_text())
    assert report["footage"]["steps"] == 1 and report["footage"]["videos"] == [str(video)]
    assert (out / "footage" / "backbone" / "config.json").is_file()
    assert "adapted to 1 video(s)" in (out / "README.md").read_text()
    # without a video the default path says there is no footage step and goes on
    capsys.readouterr()
    assert main([*argv[: -len(FAST)], *FAST, "--output", str(tmp_path / "plain")]) == 0
    said = capsys.readouterr().out
    assert "no footage step" in said and "random init and there is no footage step" in said
    assert json.loads((tmp_path / "plain" / "finetune.json").read_text())["footage"] is None


def test_finetune_refuses_in_one_line_what_it_cannot_do(tmp_path, capsys):
    labels = write_csv(tmp_path / "train")
    base = ["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "2", *FAST]
    out = ["--output", str(tmp_path / "m")]
    assert main([*base, *out, "--footage-steps", "3"]) == 2
    assert "needs videos" in _one_line_error(capsys)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert main([*base, *out, "--video", str(broken)]) == 2
    assert "broken.mp4" in _one_line_error(capsys)
    assert main([*base, *out, "--split", "test"]) == 2
    assert "its own test frames" in _one_line_error(capsys)
    assert main([*base, *out, "--resume"]) == 2
    assert "nothing to resume" in _one_line_error(capsys)
    assert main([*base, *out, "--device", "nonsense"]) == 2
    assert "nonsense" in _one_line_error(capsys)
    assert main([*base, *out, "--num-labelled", "50"]) == 2
    assert "50" in _one_line_error(capsys)
    (tmp_path / "file").write_text("x")
    assert main([*base, "--output", str(tmp_path / "file")]) == 2
    assert "existing file" in _one_line_error(capsys)


def test_num_labelled_fits_on_that_many_frames(tmp_path, capsys):
    labels = write_csv(tmp_path / "train")
    out = tmp_path / "few"
    argv = ["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "2", "--output", str(out), *FAST]
    assert main([*argv, "--num-labelled", "6"]) == 0, capsys.readouterr().err
    config = json.loads((out / "finetune.json").read_text())["config"]
    assert config["train_frames"] + config["val_frames"] == 6
    assert main([*argv, "--num-labelled", "6", "--no-relations", "--output", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "finetune.json").read_text())["config"]
    assert plain["relations"] == "none (turned off)" and plain["relations"] != config["relations"]


def test_ctrl_c_in_the_footage_step_resumes_it_and_then_fits(tmp_path, capsys, monkeypatch):
    pytest.importorskip("av")
    from dataclasses import replace

    from contrastive_landmarks.train import footage as footage_module
    from contrastive_landmarks.train.pretraining import PretrainInterrupted
    from tests.data.test_video import make_video

    real_pretrain, calls = footage_module.pretrain, []

    def stopped_after_one_step(config):
        calls.append(config.resume)
        if len(calls) == 1:  # as a Ctrl-C after step 1 would: its checkpoint written, then the interrupt
            result = real_pretrain(replace(config, max_steps=1))
            raise PretrainInterrupted(1, result["checkpoint"])
        return real_pretrain(config)

    monkeypatch.setattr(footage_module, "pretrain", stopped_after_one_step)
    labels = write_csv(tmp_path / "train")
    video = make_video(tmp_path / "clip.mp4", frames=66, size=(48, 40))
    out = tmp_path / "m"
    argv = ["finetune", "--dataset", "csv", "--path", str(labels), "--steps", "3", "--output", str(out), *FAST]
    argv += ["--video", str(video), "--footage-steps", "2"]
    assert main(argv) == 130
    assert "interrupted after step 1" in capsys.readouterr().err
    assert not (out / "finetune_checkpoint.pt").exists()
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert calls == [False, True]  # the second call continued the footage run
    steps = [json.loads(line)["step"] for line in (out / "footage" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert json.loads((out / "finetune.json").read_text())["footage"]["steps"] == 2
