"""The pretraining loop's behaviour a user relies on: Ctrl-C at a step boundary and exact resume, a log that
does not repeat redone steps, bf16 autocast on the CPU, and videos as image sources."""

from __future__ import annotations

import importlib
import json
import math
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_landmarks.cli import main as cli_main
from contrastive_landmarks.device import cpu_has_bfloat16
from contrastive_landmarks.train import PretrainConfig, pretrain
from contrastive_landmarks.train.checkpoint import load_checkpoint, save_checkpoint
from contrastive_landmarks.train.images import PretrainImages
from contrastive_landmarks.train.moco_views import MoCoAugment, get_preset
from contrastive_landmarks.train.pretraining import PretrainInterrupted, export_backbone

# the package exports the function ``pretrain`` under the module's name
pretrain_module = importlib.import_module("contrastive_landmarks.train.pretraining")


def _gratings(folder, count: int = 8, size: int = 40):
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        angle = math.pi * i / count
        g = 0.5 + 0.5 * np.sin(0.2 * (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi)
        Image.fromarray((np.stack([g, g * 0.5, 1 - g], -1) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _config(data, out, **kwargs) -> PretrainConfig:
    base = dict(
        data=[str(data)],
        output_dir=str(out),
        preset="generic",
        image_size=32,
        arch="test_resnet",
        queue_size=16,
        batch_size=4,
        epochs=3,
        num_workers=0,
        log_every=1,
        progress=False,
        checkpoint_every=100,
        export=False,
        threads=1,
    )
    base.update(kwargs)
    return PretrainConfig(**base)


def _interrupt_after(monkeypatch, step: int) -> None:
    """Deliver a real SIGINT right after optimisation step ``step`` finishes."""
    original = pretrain_module._step

    def step_then_interrupt(run, batch):
        out = original(run, batch)
        if run.global_step == step:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(pretrain_module, "_step", step_then_interrupt)


def _same_weights(a: dict, b: dict) -> None:
    for key in ("encoder_q", "encoder_k"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    assert torch.equal(a["queue"], b["queue"])


def test_ctrl_c_checkpoints_the_finished_step_and_resume_is_exact(tmp_path, monkeypatch):
    data = _gratings(tmp_path / "images", count=10)  # 2 steps per epoch
    full = pretrain(_config(data, tmp_path / "full", max_steps=5))
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(PretrainInterrupted) as stop:
        pretrain(_config(data, tmp_path / "part", max_steps=5))
    assert stop.value.step == 3 and stop.value.checkpoint == tmp_path / "part" / "checkpoint.pt"
    # checkpoint_every=100: without the interrupt nothing would have been saved before the end
    assert load_checkpoint(stop.value.checkpoint)["position"]["global_step"] == 3
    monkeypatch.undo()
    resumed = pretrain(_config(data, tmp_path / "part", max_steps=5, resume=True))
    _same_weights(load_checkpoint(full["checkpoint"]), load_checkpoint(resumed["checkpoint"]))
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_resume_drops_the_log_records_of_redone_steps(tmp_path):
    data = _gratings(tmp_path / "images", count=10)
    out = tmp_path / "run"
    pretrain(_config(data, out, max_steps=2))
    log = out / "log.jsonl"
    # what a run killed after step 4 (its last checkpoint at step 2) leaves: records 3, 4 and a cut line
    log.write_text(log.read_text() + '{"step": 3, "loss": -1}\n{"step": 4, "loss": -1}\n{"step": 5, "lo')
    resumed = pretrain(_config(data, out, max_steps=4, resume=True))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["loss"] for r in records[2:]] == [h["loss"] for h in resumed["history"]] != [-1, -1]


def test_resume_removes_the_partial_file_of_a_killed_checkpoint_write(tmp_path):
    data = _gratings(tmp_path / "images", count=10)
    out = tmp_path / "run"
    first = pretrain(_config(data, out, max_steps=2))
    # what a SIGKILL during save_checkpoint leaves: the temp file beside the last good checkpoint
    stale = out / ".checkpoint.pt.k3x9_q.tmp"
    stale.write_bytes(b"PK\x03\x04 half a zip")
    other = out / ".other.pt.abc.tmp"  # another file's temp is not this checkpoint's business
    other.write_bytes(b"x")
    with pytest.warns(UserWarning, match=r"removed 1 partial checkpoint file.*\.checkpoint\.pt\.k3x9_q\.tmp"):
        resumed = pretrain(_config(data, out, max_steps=3, resume=True))
    assert not stale.exists() and other.exists()
    assert resumed["checkpoint"] == first["checkpoint"]
    assert load_checkpoint(resumed["checkpoint"])["position"]["global_step"] == 3


def test_cli_ctrl_c_exits_130_and_prints_the_resume_command(tmp_path, monkeypatch, capsys):
    data = _gratings(tmp_path / "images", count=8)
    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(data), "--output-dir", str(out), "--preset", "generic", "--image-size", "32"]
    argv += ["--arch", "test_resnet", "--queue-size", "16", "--batch-size", "4", "--epochs", "2", "--num-workers"]
    argv += ["0", "--no-progress", "--no-export", "--threads", "1"]
    monkeypatch.setattr("sys.argv", ["contrastive-landmarks", *argv])
    _interrupt_after(monkeypatch, 1)
    assert cli_main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted after step 1" in err and err.strip().endswith("--resume")
    assert err.count("\n") <= 3  # a message, not a traceback
    monkeypatch.undo()
    assert cli_main([*argv, "--resume"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["position"]["global_step"] == 4


@pytest.mark.skipif(not cpu_has_bfloat16(), reason="this CPU has no native bfloat16")
def test_auto_precision_is_bf16_on_this_cpu_and_close_to_fp32(tmp_path):
    data = _gratings(tmp_path / "images", count=8)
    runs = {p: pretrain(_config(data, tmp_path / p, max_steps=1, precision=p)) for p in ("auto", "fp32", "bf16")}
    assert runs["auto"]["history"][0]["loss"] == runs["bf16"]["history"][0]["loss"]
    assert runs["auto"]["history"][0]["loss"] != runs["fp32"]["history"][0]["loss"]
    assert runs["auto"]["history"][0]["loss"] == pytest.approx(runs["fp32"]["history"][0]["loss"], rel=0.02)


def test_precision_auto_choice(tmp_path, monkeypatch):
    """The run's autocast dtype is the device's (:func:`contrastive_landmarks.device.autocast_dtype`)."""
    from contrastive_landmarks.train.pretrain_run import build_run

    data, cpu = _gratings(tmp_path / "images", count=4), torch.device("cpu")
    monkeypatch.setattr("contrastive_landmarks.device.cpu_has_bfloat16", lambda: True)
    assert build_run(_config(data, tmp_path / "a"), 0, 1, cpu).autocast_dtype == torch.bfloat16
    monkeypatch.setattr("contrastive_landmarks.device.cpu_has_bfloat16", lambda: False)
    assert build_run(_config(data, tmp_path / "b"), 0, 1, cpu).autocast_dtype is None
    monkeypatch.setattr("contrastive_landmarks.device.cpu_has_bfloat16", lambda: True)
    assert build_run(_config(data, tmp_path / "c", precision="fp32"), 0, 1, cpu).autocast_dtype is None


def test_a_device_torch_does_not_know_is_refused_in_one_line(tmp_path):
    data = _gratings(tmp_path / "images", count=4)
    with pytest.raises(ValueError, match="'nonsense' is not a torch device"):
        pretrain(_config(data, tmp_path / "out", device="nonsense"))


# -- videos -------------------------------------------------------------------------------------------
def _video(path, frames: int = 12, size: tuple[int, int] = (48, 40)):
    av = pytest.importorskip("av")
    width, height = size
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            array = np.zeros((height, width, 3), np.uint8)
            array[8:24, 2 + 2 * i : 18 + 2 * i] = 255  # a square moving 2 px right per frame
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_video_source_frames_every_max_frames_and_crop(tmp_path):
    video = _video(tmp_path / "clip.mp4")
    all_frames = PretrainImages([str(video)], 16)
    assert len(all_frames) == 12
    chosen = PretrainImages([f"{video};every=3;max_frames=3"], 16)
    assert [item[2] for item in chosen.items] == [0, 3, 6]
    assert torch.equal(chosen[1]["image"], all_frames[3]["image"])
    # the square moves right: the bright columns' mean grows with the frame number
    centres = [float(all_frames[i]["image"].float().mean(0).gt(128).nonzero()[:, 1].float().mean()) for i in (0, 6)]
    assert centres[1] > centres[0] + 2
    cropped = PretrainImages([f"{video};crop=8,0,16,24"], 16)[0]["image"]  # rows 8..24, columns 0..24
    assert cropped.float().mean() > all_frames[0]["image"].float().mean()
    with pytest.raises(ValueError, match="for videos"):
        PretrainImages([f"{tmp_path};every=2"], 16)
    with pytest.raises(FileNotFoundError, match="video not found"):
        PretrainImages([str(tmp_path / "missing.mp4")], 16)


def test_pretrain_on_a_video_from_the_command_line(tmp_path):
    video = _video(tmp_path / "clip.mp4", frames=10)
    out = tmp_path / "run"
    argv = ["pretrain", "--video", str(video), "--every", "2", "--output-dir", str(out)]
    argv += ["--image-size", "32", "--arch", "test_resnet", "--queue-size", "16", "--batch-size", "4"]
    argv += ["--epochs", "2", "--num-workers", "0", "--no-progress", "--threads", "1"]
    assert cli_main(argv) == 0
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["num_images"] == 5 and saved["position"]["global_step"] == 2
    # videos alone get the animals recipe by default: no border, blur, no JPEG noise or PCA lighting
    assert saved["preset"]["name"] == "animals" and saved["preset"]["border"] == 0
    assert (saved["preset"]["jpeg"], saved["preset"]["blur"], saved["preset"]["pca_std"]) == (False, True, 0.0)
    assert saved["preset"]["min_scale"] == 0.7  # milder crops of a whole frame
    assert "min_scale=0.7" in (out / "backbone" / "README.md").read_text()
    assert (out / "backbone" / "model.safetensors").is_file()


def test_preset_defaults_and_recipe_overrides():
    assert PretrainConfig(video=["a.mp4"]).preset_name == "animals"
    assert PretrainConfig(data=["faces/"], video=["a.mp4"]).preset_name == "faces"
    assert PretrainConfig(data=["x"], video=["a.mp4"], preset="birds").preset_name == "birds"
    faces, animals = MoCoAugment.from_preset(get_preset("faces")), MoCoAugment.from_preset(get_preset("animals", 64))
    assert (faces.jpeg, faces.blur, faces.pca_std, faces.border) == (True, False, 0.1, 20)
    assert (animals.jpeg, animals.blur, animals.pca_std, animals.border, animals.image_size) == (False, True, 0, 0, 64)
    assert MoCoAugment.from_preset(get_preset("animals"), jpeg=True).jpeg
    assert (faces.scale, animals.scale) == ((0.2, 1.0), (0.7, 1.0))
    assert MoCoAugment.from_preset(get_preset("animals"), scale=(0.3, 1.0)).scale == (0.3, 1.0)
    # a grey frame stays grey through the animals views (no PCA lighting, which adds a colour per sample)
    grey = torch.full((2, 3, 128, 128), 100, dtype=torch.uint8)
    out = MoCoAugment.from_preset(get_preset("animals"))(grey, torch.Generator().manual_seed(0))
    pixels = out * animals.std + animals.mean
    assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-5) and torch.allclose(
        pixels[:, 1], pixels[:, 2], atol=1e-5
    )


def test_a_loss_that_stays_at_chance_is_reported_and_a_falling_one_is_not():
    from contrastive_landmarks.train.pretraining import learning_check

    chance = math.log(1 + 512)
    stuck = [{"step": s, "loss": chance - 0.05} for s in range(10, 610, 10)]  # the mirror-mouse video run
    message = learning_check(stuck, 512)
    assert message and "near chance" in message and "6.24" in message
    falling = [{"step": s, "loss": 8.3 - 5 * s / 5000} for s in range(10, 5010, 10)]  # the face run, 8.3 -> 3.3
    assert learning_check(falling, 4096) is None
    assert learning_check(stuck[:5], 512) is None  # 40 steps: too short to judge


def test_pretrain_returns_and_warns_the_chance_check(tmp_path, monkeypatch):
    data = _gratings(tmp_path / "images", count=10)
    monkeypatch.setattr(pretrain_module, "learning_check", lambda history, queue: "MoCo's loss stayed near chance")
    with pytest.warns(UserWarning, match="near chance"):
        result = pretrain(_config(data, tmp_path / "run", max_steps=2))
    assert result["warning"] == "MoCo's loss stayed near chance"


def test_equivariance_term_is_logged_resumes_exactly_and_learns(tmp_path):
    data = _gratings(tmp_path / "images", count=10, size=48)
    settings = dict(image_size=48, equivariance=0.5, max_steps=4)
    full = pretrain(_config(data, tmp_path / "full", **settings))
    for record in full["history"]:
        assert record["loss"] == pytest.approx(record["moco_loss"] + 0.5 * record["equivariance_loss"], rel=1e-4)
    assert full["history"][0]["equivariance_loss"] != full["history"][1]["equivariance_loss"]
    pretrain(_config(data, tmp_path / "part", **{**settings, "max_steps": 2}))
    resumed = pretrain(_config(data, tmp_path / "part", **settings, resume=True))
    _same_weights(load_checkpoint(full["checkpoint"]), load_checkpoint(resumed["checkpoint"]))
    with pytest.raises(ValueError, match=r"equivariance: 0\.5 -> 1\.0"):
        pretrain(_config(data, tmp_path / "part", **{**settings, "equivariance": 1.0, "max_steps": 6}, resume=True))
    # the term falls when it is the objective that matters: views of 10 gratings, 40 steps
    run = pretrain(
        _config(data, tmp_path / "learn", **{**settings, "max_steps": None}, epochs=20, lr=0.1, schedule="constant")
    )
    terms = [r["equivariance_loss"] for r in run["history"]]
    assert np.mean(terms[-8:]) < 0.9 * np.mean(terms[:8]), (terms[:8], terms[-8:])  # 4.3 -> 3.6 here


def test_the_chance_check_reads_the_moco_term_when_equivariance_is_on():
    from contrastive_landmarks.train.pretraining import learning_check

    chance = math.log(1 + 512)
    stuck = [{"step": s, "loss": chance + 1.0, "moco_loss": chance - 0.05} for s in range(10, 610, 10)]
    assert "near chance" in learning_check(stuck, 512)
    learnt = [{"step": s, "loss": chance + 1.0, "moco_loss": 2.0} for s in range(10, 610, 10)]
    assert learning_check(learnt, 512) is None  # the total is above chance only because of the second term


def test_min_scale_defaults_to_the_presets_and_the_option_overrides_it(tmp_path):
    data = _gratings(tmp_path / "images", count=8)
    for given, used in ((None, 0.7), (0.5, 0.5)):
        out = tmp_path / f"run-{given}"
        pretrain(_config(data, out, preset="animals", image_size=32, max_steps=1, min_scale=given))
        assert load_checkpoint(out / "checkpoint.pt")["preset"]["min_scale"] == used


def test_init_starts_both_encoders_from_the_given_backbone_and_keeps_its_normalisation(tmp_path):
    from contrastive_landmarks import load_backbone

    torch.manual_seed(3)
    start = load_backbone("test_resnet", weights=None).with_preprocessing(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    folder = start.save_pretrained(tmp_path / "start")
    data = _gratings(tmp_path / "images")
    result = pretrain(_config(data, tmp_path / "run", init=str(folder), max_steps=0))
    saved = load_checkpoint(result["checkpoint"])
    body = load_backbone(str(folder)).body.state_dict()
    for key in ("encoder_q", "encoder_k"):
        weights = {k.removeprefix("backbone.body."): v for k, v in saved[key].items() if k.startswith("backbone.body.")}
        assert weights.keys() == body.keys()
        assert all(torch.equal(weights[k], body[k]) for k in body), key
    assert (saved["preset"]["mean"], saved["preset"]["std"]) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    fresh = load_checkpoint(pretrain(_config(data, tmp_path / "fresh", max_steps=0))["checkpoint"])
    assert not torch.equal(fresh["encoder_q"]["backbone.body.conv1.0.weight"], body["conv1.0.weight"])
    with pytest.raises(ValueError, match="resume"):
        pretrain(_config(data, tmp_path / "run", max_steps=0, resume=True))  # init dropped: refused, named


def test_init_of_another_architecture_is_refused_naming_both(tmp_path):
    from contrastive_landmarks import load_backbone

    folder = load_backbone("test_resnet", weights=None).save_pretrained(tmp_path / "start")
    with pytest.raises(ValueError, match=r"test_resnet.*resnet18"):
        pretrain(_config(_gratings(tmp_path / "images"), tmp_path / "run", init=str(folder), arch="resnet18"))


def test_a_checkpoint_of_another_recipe_is_refused_naming_what_it_is_not(tmp_path):
    from contrastive_landmarks.train.checkpoint import save_checkpoint
    from contrastive_landmarks.train.pretraining import export_backbone

    save_checkpoint({"format": "contrastive_landmarks.projector_fit/1"}, tmp_path / "fit.pt")
    with pytest.raises(ValueError, match=r"fit\.pt is not a MoCo pretraining checkpoint of this library"):
        export_backbone(tmp_path / "fit.pt", tmp_path / "out")


def test_learning_rate_is_the_authors_cosine_per_epoch_a_cosine_per_step_or_constant():
    def lrs(schedule, epochs=800, steps_per_epoch=62):
        config = PretrainConfig(data=["x"], lr=0.03, epochs=epochs, schedule=schedule)
        return [config.learning_rate(step, steps_per_epoch) for step in range(epochs * steps_per_epoch)]

    # the authors' adjust_learning_rate: lr 0.5 (1 + cos(pi e / E)), e counted from 1, set once per epoch
    authors = [0.03 * 0.5 * (1 + math.cos(math.pi * (step // 62 + 1) / 800)) for step in range(800 * 62)]
    assert lrs("cosine-epoch") == pytest.approx(authors, rel=0, abs=1e-15)
    assert lrs("cosine-epoch")[-62:] == [0.0] * 62  # the last epoch at 0, as theirs
    per_step = [0.03 * 0.5 * (1 + math.cos(math.pi * step / (3 * 5))) for step in range(3 * 5)]
    assert lrs("cosine-step", 3, 5) == pytest.approx(per_step, rel=0, abs=1e-15)
    assert lrs("constant", 2, 3) == [0.03] * 6


def _as_moco_1(path, kind=None) -> None:
    """Rewrite a checkpoint in the layout ``moco/1`` had: no ``settings``, the schedule's state under ``scheduler``."""
    saved = load_checkpoint(path)
    del saved["settings"]
    config = saved["config"]
    schedule = {"kind": kind or config["schedule"], "base_lr": config["lr"], "epochs": config["epochs"]}
    saved.update(format="contrastive_landmarks.moco/1", scheduler={**schedule, "steps_per_epoch": 2})
    save_checkpoint(saved, path)


def test_a_checkpoint_of_the_previous_layout_exports_and_resumes_exactly(tmp_path):
    data = _gratings(tmp_path / "images")
    full = pretrain(_config(data, tmp_path / "full"))
    pretrain(_config(data, tmp_path / "part", max_steps=3))
    path = tmp_path / "part" / "checkpoint.pt"
    _as_moco_1(path)
    assert (export_backbone(path, tmp_path / "exported") / "config.json").is_file()
    with pytest.raises(ValueError, match=r"cannot resume .*\(schedule: 'cosine-epoch' -> 'constant'\)"):
        pretrain(_config(data, tmp_path / "part", schedule="constant", resume=True))
    resumed = pretrain(_config(data, tmp_path / "part", resume=True))
    _same_weights(load_checkpoint(full["checkpoint"]), load_checkpoint(resumed["checkpoint"]))
    assert [r["lr"] for r in resumed["history"]] == [r["lr"] for r in full["history"]][3:]
    assert load_checkpoint(resumed["checkpoint"])["format"] == "contrastive_landmarks.moco/2"
    # moco/1 kept the schedule it started with when resumed with another: that one is what a resume must match
    pretrain(_config(data, tmp_path / "other", max_steps=1))
    _as_moco_1(tmp_path / "other" / "checkpoint.pt", kind="cosine-step")
    with pytest.raises(ValueError, match=r"schedule: 'cosine-step' -> 'cosine-epoch'"):
        pretrain(_config(data, tmp_path / "other", resume=True))
