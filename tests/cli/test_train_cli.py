"""The training subcommands end to end through ``contrastive_landmarks.cli.main`` on tiny data written to tmp_path."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image

from contrastive_landmarks import Hypercolumn, LandmarkModel, SpatialProjector, load_backbone, save_pretrained
from contrastive_landmarks.cli import build_parser, main
from contrastive_landmarks.train import PretrainConfig
from contrastive_landmarks.train.checkpoint import load_checkpoint
from contrastive_landmarks.train.moco import MoCo

SIZE = 32
COMMANDS = ("pretrain", "fit-projector", "fit-regressor", "export", "push")


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 3, SIZE, SIZE)`` images in [0, 1] with a coloured blob at each of 3 keypoints ``(n, 3, 2)``."""
    g = torch.Generator().manual_seed(seed)
    keypoints = torch.randint(6, SIZE - 6, (n, 3, 2), generator=g).float()
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    images = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.3
    for i in range(n):
        for k, (x, y) in enumerate(keypoints[i]):
            images[i, k] += 0.7 * torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 4.0)
    return images.clamp(0, 1), keypoints


def _write_data(folder: Path, n: int = 16, seed: int = 0) -> Path:
    """PNG images and a keypoint CSV (``image,x1..x3,y1..y3``); returns the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    images, keypoints = _blobs(n, seed)
    rows = ["image,x1,x2,x3,y1,y2,y3"]
    for i in range(n):
        Image.fromarray((images[i].permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"{i:02d}.png")
        rows.append(
            f"{i:02d}.png," + ",".join(str(v) for v in [*keypoints[i, :, 0].tolist(), *keypoints[i, :, 1].tolist()])
        )
    (folder / "points.csv").write_text("\n".join(rows) + "\n")
    return folder / "points.csv"


def _pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--arch",
        "test_resnet",
        "--preset",
        "generic",
        "--image-size",
        str(SIZE),
        "--batch-size",
        "8",
        "--queue-size",
        "16",
        "--epochs",
        "2",
        "--num-workers",
        "0",
        "--threads",
        "1",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--no-jpeg",
        *extra,
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> Path:
    """A pretraining run stopped after 1 of its 4 steps (16 images, batch 8, 2 epochs)."""
    out = tmp_path_factory.mktemp("runs") / "moco"
    assert main(_pretrain_args(data.parent, out, "--max-steps", "1")) == 0
    return out


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    backbone = load_backbone("test_resnet")
    return save_pretrained(tmp_path_factory.mktemp("backbone") / "b", backbone.body.state_dict(), backbone.config)


# -- help and option generation -------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    for action in parser._actions:
        if action.option_strings:
            assert action.help, f"{command} {action.option_strings} has no help"
            assert action.option_strings[-1] in text
    if command == "pretrain":
        dests = {a.dest: a for a in parser._actions}
        assert set(PretrainConfig.field_help()) <= set(dests)  # every field is an option
        assert "--no-jpeg" in text and "--resume" in text and dests["data"].nargs == "+"
        args = parser.parse_args(["--data", "a", "b", "--no-jpeg", "--max-steps", "5", "--lr", "0.1"])
        assert args.data == ["a", "b"] and args.jpeg is False and args.max_steps == 5 and args.lr == 0.1
        assert args.epochs == PretrainConfig.epochs and args.image_size is None


# -- pretrain / export ------------------------------------------------------------------------------------
def test_pretrain_writes_a_checkpoint_and_resumes_from_its_config(data, run, tmp_path, capsys):
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["position"]["global_step"] == 1 and saved["config"]["jpeg"] is False
    copy = tmp_path / "moco"
    shutil.copytree(run, copy)
    capsys.readouterr()
    # a second start without --resume is refused with a one-line message, not a traceback
    assert main(_pretrain_args(data.parent, copy)) == 2
    assert "--resume" in capsys.readouterr().err
    config = json.loads((copy / "config.json").read_text())
    config["output_dir"] = str(copy)
    (tmp_path / "config.json").write_text(json.dumps(config))
    # the run's own config.json as --config; the command line adds --resume and a new step limit
    assert main(["--config", str(tmp_path / "config.json"), "pretrain", "--resume", "--max-steps", "3"]) == 0
    assert load_checkpoint(copy / "checkpoint.pt")["position"]["global_step"] == 3
    records = [json.loads(line) for line in (copy / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert "stopped" in capsys.readouterr().out and not (copy / "backbone").exists()


def test_export_gives_the_query_encoder_and_a_card(run, tmp_path):
    numbers = tmp_path / "results.json"
    numbers.write_text(
        json.dumps(
            {
                "test": {"mean": 5.5, "std": 0.25},
                "metric": "inter-ocular error (%)",
                "config": {"protocol": "regression", "num_labelled": 10, "dataset": {"name": "mtfl"}},
            }
        )
    )
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"matching error": "3.2 px"}))
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out), "--results", str(numbers), str(flat), "--card", "license=mit"]) == 0
    card = (out / "README.md").read_text()
    assert "| regression mtfl 10-shot | 5.50 ± 0.25 inter-ocular error (%) |" in card
    assert "| matching error | 3.2 px |" in card and "| license | mit |" in card and "training time" in card
    backbone = load_backbone(str(out))
    model = MoCo("test_resnet", dim=128, queue_size=16)
    model.encoder_q.load_state_dict(load_checkpoint(run / "checkpoint.pt")["encoder_q"])
    query = model.encoder_q.backbone.eval()
    query.stage_indices = backbone.stage_indices
    images = torch.randn(2, 3, SIZE, SIZE)
    half_dir = tmp_path / "half"
    assert main(["export", str(run / "checkpoint.pt"), str(half_dir), "--half"]) == 0
    half = load_backbone(str(half_dir))
    with torch.no_grad():
        for ours, theirs, halved in zip(backbone(images), query(images), half(images)):
            assert torch.equal(ours, theirs)
            assert torch.allclose(halved, theirs, rtol=2e-2, atol=2e-2 * float(theirs.abs().max()))
    from safetensors.torch import load_file

    stored = load_file(str(half_dir / "model.safetensors"))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert (half_dir / "model.safetensors").stat().st_size < 0.6 * (out / "model.safetensors").stat().st_size
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2


# -- fitting ------------------------------------------------------------------------------------------------
def test_fit_projector_lowers_the_held_out_loss(data, tmp_path):
    from contrastive_landmarks.train.projector_fitting import projector_loss

    options = tmp_path / "projector.json"
    options.write_text(
        json.dumps({"dim": 16, "train_size": 8, "size": 16, "epochs": 3, "batch-size": 4, "image_size": SIZE})
    )
    out = tmp_path / "projector"
    torch.manual_seed(0)
    assert (
        main(
            [
                "--config",
                str(options),
                "fit-projector",
                "--backbone",
                "test_resnet",
                "--images",
                str(data.parent),
                "--preprocess",
                "face",
                "--val-fraction",
                "0.25",
                "--output",
                str(out),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "cache").glob("*/*.safetensors"))) == 12  # each training image's maps, once
    model = LandmarkModel.from_pretrained(out)
    assert model.projector.dim == 16 and load_backbone(str(out)).channels == model.backbone.channels
    report = json.loads((out / "fit_projector.json").read_text())
    assert len(report["history"]) == 3 and report["best_score"] < report["initial_score"]
    assert "(face preprocessing)" in (out / "README.md").read_text()
    features = Hypercolumn(model.backbone, size=16)
    untrained = SpatialProjector(features.channels, 16, size=8)
    untrained.reset_parameters(torch.Generator().manual_seed(0))  # where fit_projector starts (seed 0)
    held_out, _ = _blobs(8, seed=5)
    before = projector_loss(features, untrained, held_out, size=8)
    after = projector_loss(features, model.projector, held_out, size=8)
    assert after < 0.9 * before, (before, after)


def test_fit_regressor_bundle_loads_back_and_predicts_the_same(data, backbone_dir, tmp_path):
    from contrastive_landmarks.data import KeypointSubset, by_name
    from contrastive_landmarks.evaluation import split_indices
    from contrastive_landmarks.train import fit_regressor
    from contrastive_landmarks.train.regressor_fitting import predict

    projector_dir = tmp_path / "with_projector"
    hc = Hypercolumn(load_backbone(str(backbone_dir)), size=8)
    LandmarkModel(hc, SpatialProjector(hc.channels, 8)).save_pretrained(projector_dir)
    out = tmp_path / "model"
    assert (
        main(
            [
                "fit-regressor",
                "--backbone",
                str(backbone_dir),
                "--dataset",
                "csv",
                "--path",
                str(data),
                "--image-size",
                str(SIZE),
                "--size",
                "8",
                "--heatmaps",
                "2",
                "--steps",
                "30",
                "--num-labelled",
                "6",
                "--val-fraction",
                "0.25",
                "--seed",
                "1",
                "--projector",
                str(projector_dir),
                "--landmark-names",
                "left",
                "right",
                "nose",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "fit_regressor.json").read_text())
    # a CSV names no eyes: the metric is pixels, never inter-ocular error
    assert report["train_images"] == 6 and report["val_images"] == 4 and report["metric"] == "pixel"
    assert report["baseline"] > 0 and "improvement" in report
    model = LandmarkModel.from_pretrained(out)
    assert model.landmark_names == ("left", "right", "nose") and model.regressor_input == "hypercolumn"
    # the directory records the input size the regressor was fitted at (the backbone recorded none)
    assert tuple(model.backbone.input_size) == (SIZE, SIZE)
    # the same fit in Python (the documented split and few-shot draw) predicts what the saved bundle detects
    dataset = by_name("csv", None, "train", image_size=SIZE, path=str(data))
    train_part, val_part = split_indices(len(dataset), 0.25, 0, 1000)
    pick = torch.randperm(len(train_part), generator=torch.Generator().manual_seed(1))[:6].tolist()
    result = fit_regressor(
        hc,
        KeypointSubset(dataset, sorted(train_part[i] for i in pick)),
        KeypointSubset(dataset, val_part),
        heatmaps_per_landmark=2,
        steps=30,
        seed=1,
        warn=False,
    )
    images, _ = _blobs(4, seed=9)
    expected = predict(hc, result.regressor, images)
    assert torch.allclose(model.detect(images), expected, atol=1e-4)
    assert report["score"] == pytest.approx(result.score, rel=1e-5)
    assert model.descriptors(images).shape == (4, 8, 8, 8)  # the bundled projector
    with pytest.raises(SystemExit):  # a config file naming an option the subcommand lacks
        (tmp_path / "bad.json").write_text(json.dumps({"no_such_option": 1}))
        main(["--config", str(tmp_path / "bad.json"), "fit-regressor"])
    assert (
        main(
            [
                "fit-regressor",
                "--dataset",
                "csv",
                "--path",
                str(data),
                "--num-labelled",
                "99",
                "--output",
                str(tmp_path / "x"),
                "--backbone",
                "test_resnet",
            ]
        )
        == 2
    )


def test_cli_and_python_defaults_give_the_same_model(data, tmp_path):
    """`fit-regressor` with only data, backbone and output named is `fit_regressor` with its defaults (the same
    split, seed, steps, views, recipe), down to the detections of the saved model."""
    from contrastive_landmarks.data import KeypointSubset, by_name
    from contrastive_landmarks.evaluation import split_indices
    from contrastive_landmarks.train import fit_regressor
    from contrastive_landmarks.train.regressor_fitting import predict

    out = tmp_path / "defaults"
    quick = ["--steps", "60", "--max-views", "300"]  # the budget, on both sides, to keep the test short
    assert (
        main(
            [
                "fit-regressor",
                "--backbone",
                "test_resnet",
                "--dataset",
                "csv",
                "--path",
                str(data),
                "--output",
                str(out),
                "--no-progress",
                *quick,
            ]
        )
        == 0
    )
    import argparse
    import inspect

    from contrastive_landmarks.cli.fit_regressor import add_fit_regressor_parser

    parser = argparse.ArgumentParser()
    add_fit_regressor_parser(parser.add_subparsers())
    parsed = parser.parse_args(["fit-regressor"])
    assert parsed.max_views == inspect.signature(fit_regressor).parameters["max_views"].default  # the budget set below
    report = json.loads((out / "fit_regressor.json").read_text())
    assert report["config"]["image_size"] == [96, 96]  # test_resnet records no input size: the paper's 96
    torch.manual_seed(0)  # the CLI seeds a random-init backbone with --seed (default 0)
    hc = Hypercolumn(load_backbone("test_resnet"))
    dataset = by_name("csv", None, "train", image_size=96, path=str(data))
    train_part, val_part = split_indices(len(dataset), 0.1, 0, 1000)
    result = fit_regressor(
        hc, KeypointSubset(dataset, train_part), KeypointSubset(dataset, val_part), steps=60, max_views=300, warn=False
    )
    images, _ = _blobs(3, seed=11)
    images = torch.nn.functional.interpolate(images, size=(96, 96), mode="bilinear", align_corners=False)
    assert torch.allclose(
        LandmarkModel.from_pretrained(out).detect(images), predict(hc, result.regressor, images), atol=1e-4
    )
    assert report["score"] == pytest.approx(result.score, rel=1e-5)


# -- push ---------------------------------------------------------------------------------------------------
class _FakeApi:
    calls: typing.ClassVar[list] = []
    fail = False

    def __init__(self, *args, **kwargs):
        self.calls.append(("init", kwargs))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        if self.fail:
            raise ConnectionError("no route to host")
        self.calls.append(("upload_folder", kwargs))
        return "https://huggingface.co/me/model/commit/abc"


def test_push_uploads_with_hfapi_and_fails_clearly_offline(backbone_dir, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    _FakeApi.calls = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", str(backbone_dir), "me/model"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "Traceback" not in err and _FakeApi.calls == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert main(["push", str(backbone_dir), "me/model", "--private"]) == 0
    assert ("create_repo", "me/model", {"private": True, "exist_ok": True}) in _FakeApi.calls
    upload = next(c[1] for c in _FakeApi.calls if c[0] == "upload_folder")
    assert upload["repo_id"] == "me/model" and Path(upload["folder_path"]) == backbone_dir
    assert "commit/abc" in capsys.readouterr().out
    monkeypatch.setattr(_FakeApi, "fail", True)
    assert main(["push", str(backbone_dir), "me/model"]) == 2
    assert "no route to host" in capsys.readouterr().err
    assert main(["push", str(backbone_dir.parent), "me/model"]) == 2
    assert "config.json" in capsys.readouterr().err


@pytest.mark.slow
def test_pretrain_under_torchrun_two_cpu_processes(data, tmp_path):
    pytest.importorskip("torch.distributed.run")
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "contrastive_landmarks.cli",
        *_pretrain_args(data.parent, out),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["position"]["global_step"] == 4 and (out / "backbone" / "model.safetensors").is_file()
    assert math.isfinite(json.loads((out / "log.jsonl").read_text().splitlines()[-1])["loss"])


def test_fit_regressor_refuses_max_views_below_one(data, tmp_path, capsys):
    argv = ["fit-regressor", "--backbone", "test_resnet", "--dataset", "csv", "--path", str(data)]
    assert main([*argv, "--output", str(tmp_path / "m"), "--max-views", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["contrastive-landmarks fit-regressor: error: --max-views must be at least 1, got 0"]


# -- issue 31 (outside finetune): output files, devices, pretrain's sources, push without training state ------
def _argv(command: str, data: Path, output: Path, *extra: str) -> list[str]:
    """The smallest command line of ``command`` on the blob data, writing to ``output``."""
    if command == "pretrain":
        return _pretrain_args(data.parent, output, *extra)
    if command == "fit-projector":
        return [command, "--backbone", "test_resnet", "--images", str(data.parent), "--output", str(output), *extra]
    labels = ["--dataset", "csv", "--path", str(data)]
    return [command, "--backbone", "test_resnet", *labels, "--output", str(output), *extra]


def _no_work(monkeypatch) -> None:
    """Make any model building or training fail loudly: what these tests refuse must be refused before it."""
    import contrastive_landmarks.train as train

    def work(*args, **kwargs):
        raise AssertionError("the command started working before refusing its options")

    monkeypatch.setattr("contrastive_landmarks.load_backbone", work)
    monkeypatch.setattr(train, "pretrain", work)


@pytest.mark.parametrize("command", ["pretrain", "fit-projector", "fit-regressor"])
def test_an_output_that_is_an_existing_file_is_refused_before_any_work(command, data, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    existing = tmp_path / "model"
    existing.write_text("not a folder")
    assert main(_argv(command, data, existing)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{existing} is an existing file, not a folder" in err[0], err
    assert main(_argv(command, data, existing / "below")) == 2
    assert f"{existing} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["pretrain", "fit-projector", "fit-regressor", "evaluate"])
@pytest.mark.parametrize("device", ["nonsense", "cuda:99"])
def test_a_device_that_cannot_be_used_is_one_line_before_any_work(command, device, data, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    if command == "evaluate":
        argv = ["evaluate", "regression", "--backbone", "test_resnet", "--dataset", "csv", "--path", str(data)]
    else:
        argv = _argv(command, data, tmp_path / "out")
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device" in err[0] and device in err[0] and "Traceback" not in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_fit_regressor_device_cuda_without_a_gpu_is_one_line(data, tmp_path, capsys):
    assert main(_argv("fit-regressor", data, tmp_path / "out", "--device", "cuda", "--no-progress")) == 2
    assert capsys.readouterr().err == (
        "contrastive-landmarks fit-regressor: error: --device cuda: no CUDA device is available on this machine "
        "(use cpu)\n"
    )


@pytest.mark.parametrize(
    "command, target",
    [
        ("fit-regressor", "contrastive_landmarks.train.fit_regressor"),
        ("fit-projector", "contrastive_landmarks.train.projector_fitting.fit_projector"),
        ("evaluate", "contrastive_landmarks.evaluation.evaluate_regression"),
    ],
)
def test_device_reaches_where_the_work_runs(command, target, data, tmp_path, monkeypatch):
    """``--device`` is handed, resolved, to the function that moves the model and batches."""
    seen = {}

    class Stop(Exception):
        pass

    def work(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(target, work)
    if command == "evaluate":
        argv = ["evaluate", "regression", "--backbone", "test_resnet", "--dataset", "csv", "--path", str(data)]
    else:
        argv = _argv(command, data, tmp_path / "out")
    with pytest.raises(Stop):
        main([*argv, "--device", "cpu", "--image-size", str(SIZE)])
    assert seen["device"] == torch.device("cpu")


def test_device_is_offered_only_where_it_is_used():
    """matching and the plots run on the CPU: an option they would ignore is not offered."""
    commands = build_parser()._subparsers._group_actions[0].choices

    def options(parser) -> set[str]:
        return {flag for action in parser._actions for flag in action.option_strings}

    for command in ("fit-regressor", "fit-projector", "pretrain"):
        assert "--device" in options(commands[command])
    protocols = commands["evaluate"]._subparsers._group_actions[0].choices
    assert "--device" in options(protocols["regression"]) and "--device" not in options(protocols["matching"])
    plots = commands["plot"]._subparsers._group_actions[0].choices
    assert not any("--device" in options(plot) for plot in plots.values())


def test_pretrain_video_that_is_an_image_says_so(data, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    photo = data.parent / "00.png"
    argv = [a for a in _argv("pretrain", data, tmp_path / "out") if a != str(data.parent)]
    argv.remove("--data")
    assert main([*argv, "--video", str(photo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--video {photo} is not a video" in err[0] and "every=" not in err[0], err
    assert main(argv) == 2  # neither --data nor --video
    assert "--data" in capsys.readouterr().err


def test_pretrain_help_does_not_mark_both_sources_required(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(required)" not in text
    assert text.count("(one of --data / --video is required)") == 2


def test_push_leaves_training_state_out(backbone_dir, tmp_path, monkeypatch, capsys):
    """A finished finetune leaves its training checkpoint in the model directory: it is not published. The upload
    API is a fake and HF_HUB_OFFLINE stays set, so nothing here reaches the network."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    import contrastive_landmarks.cli.pretrain as pretrain_cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pretrain_cli, "_offline", lambda: False)
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    _FakeApi.calls = []
    folder = tmp_path / "model"
    shutil.copytree(backbone_dir, folder)
    (folder / "finetune_checkpoint.pt").write_bytes(b"\0" * 2**20)
    (folder / "runs").mkdir()
    (folder / "runs" / "checkpoint.pt").write_bytes(b"\0" * 10)
    (folder / "finetune.json").write_text("{}")
    assert main(["push", str(folder), "me/model"]) == 0
    upload = next(c[1] for c in _FakeApi.calls if c[0] == "upload_folder")
    files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    sent = set(filter_repo_objects(files, ignore_patterns=upload.get("ignore_patterns")))
    assert sent == {"config.json", "model.safetensors", "README.md", "finetune.json"}
    err = capsys.readouterr().err
    assert "leaving out training state (1.0 MiB): finetune_checkpoint.pt, runs/checkpoint.pt" in err
