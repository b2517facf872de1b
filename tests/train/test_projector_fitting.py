"""fit_projector / projector_loss: Eq. 3 against a naive formula, training lowers held-out loss, caching,
determinism, validation selection, frozen backbone, TPS pairs, Ctrl-C checkpoints and exact resume."""

from __future__ import annotations

import importlib
import math
import signal

import pytest
import torch

from contrastive_landmarks import Hypercolumn, SpatialProjector, load_backbone
from contrastive_landmarks.hypercolumn import hypercolumn
from contrastive_landmarks.train.checkpoint import load_checkpoint, save_checkpoint
from contrastive_landmarks.train.feature_cache import FeatureCache
from contrastive_landmarks.train.projector_fitting import (
    ProjectorFitInterrupted,
    ProjectorFitResult,
    fit_projector,
    projector_loss,
)

fitting = importlib.import_module("contrastive_landmarks.train.projector_fitting")

SIZE, GRID, DIM = 32, 8, 16


def _images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """Smooth random colour patterns in [0, 1] (locally distinct, so a projector can learn positions)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    freq = torch.rand(n, 3, 3, generator=g) * 6 + 1
    phase = torch.rand(n, 3, generator=g) * 6
    arg = freq[..., 0, None, None] * xs + freq[..., 1, None, None] * ys + freq[..., 2, None, None] * xs * ys
    return 0.5 + 0.5 * torch.sin(arg + phase[..., None, None])


@pytest.fixture(scope="module")
def hc() -> Hypercolumn:
    torch.manual_seed(0)
    return Hypercolumn(load_backbone("test_resnet"), size=16)


def _naive_eq3(desc: torch.Tensor, image_size: tuple[int, int], tau: float = 1 / 7, power: float = 0.5) -> float:
    """Eq. 3 with x' = x written out: mean over b, u of sum_v ||c_u - c_v||^power softmax_v(cos(f_u, f_v) / tau)."""
    h, w = desc.shape[-2:]
    f = torch.nn.functional.normalize(desc.double().flatten(2).transpose(1, 2), dim=-1)  # (B, hw, d)
    p = torch.softmax(f @ f.transpose(1, 2) / tau, dim=-1)
    height, width = image_size
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    centres = torch.stack([(jj + 0.5) * width / w - 0.5, (ii + 0.5) * height / h - 0.5], -1).reshape(-1, 2)
    dist = torch.cdist(centres, centres).pow(power)
    return float((p * dist).sum(-1).mean())


def _untrained(hc: Hypercolumn, seed: int = 0, dim: int = DIM) -> SpatialProjector:
    """The projector fit_projector starts from (same seeded init)."""
    projector = SpatialProjector(hc.channels, dim, size=GRID)
    projector.reset_parameters(torch.Generator().manual_seed(seed))
    return projector


def test_projector_loss_matches_naive_eq3(hc):
    images = _images(3, 5)
    projector = _untrained(hc)
    with torch.no_grad():
        desc = projector(hc.stage_maps(hc.backbone.normalize(images)), GRID)
    expected = _naive_eq3(desc, (SIZE, SIZE))
    assert projector_loss(hc, projector, images, size=GRID, batch_size=2) == pytest.approx(expected, rel=1e-5)
    # the distance unit is input pixels: the same descriptors on a twice larger image cost sqrt(2) more
    assert _naive_eq3(desc, (2 * SIZE, 2 * SIZE)) == pytest.approx(math.sqrt(2) * expected, rel=1e-9)


def test_fit_lowers_held_out_loss_selects_on_validation_and_is_deterministic(hc):
    train, val, held_out = _images(32, 0), _images(8, 1), _images(8, 2)
    calls = []
    hook = hc.backbone.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        result = fit_projector(hc, train, val, dim=DIM, size=GRID, epochs=4, batch_size=8, seed=0)
    finally:
        hook.remove()
    assert isinstance(result, ProjectorFitResult) and len(result.history) == 4
    assert sum(calls) == 32 + 8  # cached: the backbone saw each training and validation image once
    before = projector_loss(hc, _untrained(hc), held_out, size=GRID)
    after = projector_loss(hc, result.projector, held_out, size=GRID)
    assert after < 0.8 * before, (before, after)
    assert result.initial_score == pytest.approx(projector_loss(hc, _untrained(hc), val, size=GRID), rel=1e-5)
    # the kept projector is the epoch with the lowest validation loss, and scores that loss
    val_losses = [row["val_loss"] for row in result.history]
    assert result.best_epoch == min(range(4), key=val_losses.__getitem__)
    assert result.best_score == pytest.approx(min(val_losses), rel=1e-6)
    assert projector_loss(hc, result.projector, val, size=GRID) == pytest.approx(result.best_score, rel=1e-5)
    assert not result.projector.training and "SGD lr 0.001 momentum 0.9" in result.recipe
    # same seed, recomputed features instead of the cache: identical weights; another seed: different
    again = fit_projector(hc, train, val, dim=DIM, size=GRID, epochs=4, batch_size=8, seed=0, cache=False)
    assert torch.equal(again.projector.weight, result.projector.weight)
    other = fit_projector(hc, train, None, dim=DIM, size=GRID, epochs=1, batch_size=8, seed=1)
    assert not torch.equal(other.projector.weight, result.projector.weight)
    assert math.isnan(other.best_score) and other.best_epoch == 0 and "val_loss" not in other.history[0]


def test_backbone_stays_frozen_and_modes_are_restored(hc):
    hc.train()  # BatchNorm would update its running statistics in train mode
    before = {k: v.clone() for k, v in hc.state_dict().items()}
    samples = [{"image": image, "index": i} for i, image in enumerate(_images(8, 3))]  # a list of sample dicts
    seen = []
    result = fit_projector(
        hc,
        samples,
        dim=8,
        size=GRID,
        epochs=1,
        batch_size=4,
        optimizer="adam",
        lr=1e-2,
        cosine=True,
        cache=FeatureCache(0),
        callback=seen.append,
    )
    assert all(torch.equal(before[k], v) for k, v in hc.state_dict().items())
    assert all(p.grad is None for p in hc.parameters())
    assert all(m.training for m in hc.modules())
    assert [row["epoch"] for row in seen] == [0] and result.history[0]["images_per_s"] > 0
    assert result.config["optimizer"] == "adam" and "Adam lr 0.01" in result.recipe
    hc.eval()


def test_a_cache_too_small_for_the_data_is_reported(hc):
    images = _images(8, 3)
    with pytest.warns(RuntimeWarning, match="kept 2 of 8"):
        fit_projector(hc, images, dim=8, size=GRID, epochs=1, batch_size=4, cache=FeatureCache(2 * 3680 * 4 + 100))


def test_tps_pairs_and_other_feature_modes(hc):
    train, val = _images(8, 4), _images(4, 6)
    warped = fit_projector(hc, train, val, dim=8, size=GRID, epochs=2, batch_size=4, warp=True, seed=0)
    assert warped.config["warp"] and "TPS pairs" in warped.recipe
    # validation pairs are fixed: re-scoring the kept projector gives its selection score
    assert projector_loss(hc, warped.projector, val, size=GRID, warp=True, seed=7919, batch_size=4) == pytest.approx(
        warped.best_score, rel=1e-5
    )
    assert warped.best_score < warped.initial_score
    soft = fit_projector(hc, train, dim=8, mode="softmax", size=GRID, epochs=1, batch_size=4)
    assert soft.projector.mode == "softmax" and math.isfinite(soft.history[0]["train_loss"])
    normalized = Hypercolumn(hc.backbone, size=16, normalize=True)
    fit = fit_projector(normalized, train, dim=8, size=GRID, epochs=1, batch_size=4)
    with torch.no_grad():
        column = hypercolumn(hc.stage_maps(hc.backbone.normalize(train[:2])), GRID, normalize=True)
        desc = fit.projector(column)
    assert projector_loss(normalized, fit.projector, train[:2], size=GRID) == pytest.approx(
        _naive_eq3(desc, (SIZE, SIZE)), rel=1e-5
    )


def test_bad_input_is_named(hc):
    images = _images(4, 0)
    with pytest.raises(ValueError, match="optimizer"):
        fit_projector(hc, images, optimizer="lbfgs")
    with pytest.raises(ValueError, match="warp"):
        fit_projector(hc, images, warp=True, cache=True)
    with pytest.raises(ValueError, match="empty"):
        fit_projector(hc, images[:0])
    with pytest.raises(ValueError, match="validation images"):
        fit_projector(hc, images, _images(2, 0, size=40), size=GRID, epochs=1)
    with pytest.raises(TypeError, match="warp"):
        fit_projector(hc, images, warp="strong")
    with pytest.raises(ValueError, match="size"):
        fit_projector(hc, images, size=0)


# -- Ctrl-C and resume ------------------------------------------------------------------------------------------
def _ctrl_c_after(monkeypatch, step: int) -> None:
    """Deliver a real SIGINT during optimisation step ``step`` (counting from 1 in this call)."""
    real_step, calls = fitting._step, []

    def step_then_ctrl_c(run, idx):
        calls.append(1)
        if len(calls) == step:
            signal.raise_signal(signal.SIGINT)
        return real_step(run, idx)

    monkeypatch.setattr(fitting, "_step", step_then_ctrl_c)


def _same_fit(a: ProjectorFitResult, b: ProjectorFitResult) -> None:
    for name, value in a.projector.state_dict().items():
        assert torch.equal(b.projector.state_dict()[name], value), name
    timing = ("seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in a.history] == [
        {k: v for k, v in r.items() if k not in timing} for r in b.history
    ]
    assert (a.best_epoch, a.best_score, a.initial_score, a.config) == (
        b.best_epoch,
        b.best_score,
        b.initial_score,
        b.config,
    )


@pytest.mark.parametrize(
    ("settings", "stop_at"),
    [
        ({}, 5),  # cached x = x, SGD: mid-epoch (epoch 1, batch 2 of 3)
        ({}, 3),  # the epoch's last step, before its validation
        ({"warp": True, "optimizer": "adam", "lr": 1e-2, "cosine": True}, 4),  # TPS pairs: the warps' generator
    ],
)
def test_ctrl_c_saves_the_fit_and_resume_ends_with_the_same_weights(hc, tmp_path, monkeypatch, settings, stop_at):
    train, val = _images(12, 0), _images(4, 1)  # 3 steps of 4 images per epoch, 3 epochs

    def fit(name, **extra):
        return fit_projector(
            hc,
            train,
            val,
            dim=8,
            size=GRID,
            epochs=3,
            batch_size=4,
            seed=2,
            checkpoint=tmp_path / name,
            **settings,
            **extra,
        )

    straight = fit("straight.pt")
    _ctrl_c_after(monkeypatch, stop_at)
    with pytest.raises(ProjectorFitInterrupted) as stop:
        fit("part.pt")
    assert stop.value.step == stop_at and stop.value.checkpoint == tmp_path / "part.pt"
    assert f"interrupted after step {stop_at}; checkpoint written to {tmp_path / 'part.pt'}" in str(stop.value)
    saved = load_checkpoint(tmp_path / "part.pt")
    assert saved["position"] == {"epoch": (stop_at - 1) // 3, "batch": (stop_at - 1) % 3 + 1}
    assert len(saved["history"]) == (stop_at - 1) // 3
    monkeypatch.undo()
    seen = []
    resumed = fit("part.pt", resume=True, callback=seen.append)
    _same_fit(straight, resumed)
    assert [row["epoch"] for row in seen] == list(range((stop_at - 1) // 3, 3))  # only the epochs it ran
    for name, value in load_checkpoint(tmp_path / "straight.pt")["projector"].items():
        assert torch.equal(load_checkpoint(tmp_path / "part.pt")["projector"][name], value)


def test_a_checkpoint_of_the_previous_layout_resumes_to_the_same_weights(hc, tmp_path, monkeypatch):
    train, val = _images(12, 0), _images(4, 1)

    def fit(name, **extra):
        path = tmp_path / name
        return fit_projector(
            hc, train, val, dim=8, size=GRID, epochs=3, batch_size=4, cosine=True, checkpoint=path, **extra
        )

    straight = fit("straight.pt")
    _ctrl_c_after(monkeypatch, 5)
    with pytest.raises(ProjectorFitInterrupted):
        fit("part.pt")
    monkeypatch.undo()
    # projector_fit/1 also held the state of a torch lr scheduler (the learning rate is now a function of the epoch)
    saved = load_checkpoint(tmp_path / "part.pt")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    optimizer.step()
    scheduler.step()
    saved.update(format="contrastive_landmarks.projector_fit/1", scheduler=scheduler.state_dict())
    save_checkpoint(saved, tmp_path / "part.pt")
    _same_fit(straight, fit("part.pt", resume=True))
    assert load_checkpoint(tmp_path / "part.pt")["format"] == "contrastive_landmarks.projector_fit/2"


def test_ctrl_c_without_a_checkpoint_stops_at_once_and_resume_checks_the_settings(hc, tmp_path, monkeypatch):
    images = _images(8, 0)
    _ctrl_c_after(monkeypatch, 1)
    # Python's own Ctrl-C behaviour even where the process started with SIGINT ignored (a shell's background job)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt) as stop:
        fit_projector(hc, images, dim=8, size=GRID, epochs=2, batch_size=4)
    assert not isinstance(stop.value, ProjectorFitInterrupted)
    signal.signal(signal.SIGINT, previous)
    monkeypatch.undo()
    path = tmp_path / "fit.pt"
    fit_projector(hc, images, dim=8, size=GRID, epochs=1, batch_size=4, checkpoint=path)
    with pytest.raises(ValueError, match=r"cannot resume .*lr: 0\.001 -> 0\.01"):
        fit_projector(hc, images, dim=8, size=GRID, epochs=1, batch_size=4, lr=1e-2, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match=r"train_images: 8 -> 4"):
        fit_projector(hc, images[:4], dim=8, size=GRID, epochs=1, batch_size=4, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="resume needs checkpoint"):
        fit_projector(hc, images, resume=True)
    # resume=True and no checkpoint yet: a fresh fit; without resume an old checkpoint is not read
    fresh = fit_projector(
        hc, images, dim=8, size=GRID, epochs=1, batch_size=4, checkpoint=tmp_path / "new.pt", resume=True
    )
    again = fit_projector(hc, images, dim=8, size=GRID, epochs=1, batch_size=4, lr=1e-2, checkpoint=path)
    assert (tmp_path / "new.pt").is_file() and not torch.equal(fresh.projector.weight, again.projector.weight)


def test_cli_ctrl_c_exits_130_names_the_resume_command_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from contrastive_landmarks.cli import main
    from contrastive_landmarks.train.checkpoint import load_checkpoint as load

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(_images(10, 3)):
        Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"{i:02d}.png")
    argv = ["fit-projector", "--backbone", "test_resnet", "--images", str(folder), "--image-size", str(SIZE)]
    argv += ["--dim", "8", "--train-size", str(GRID), "--size", "16", "--epochs", "3", "--batch-size", "4"]
    argv += ["--val-fraction", "0.2", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "straight")]) == 0
    part = [*argv, "--output", str(tmp_path / "part")]
    monkeypatch.setattr("sys.argv", ["contrastive-landmarks", *part])
    _ctrl_c_after(monkeypatch, 3)  # 8 training images: epoch 1, batch 1
    assert main(part) == 130
    err = capsys.readouterr().err
    checkpoint = tmp_path / "part" / "fit_projector_checkpoint.pt"
    assert f"interrupted after step 3; checkpoint written to {checkpoint}" in err
    assert err.strip().endswith("contrastive-landmarks " + " ".join(part) + " --resume")
    assert err.count("\n") <= 3 and checkpoint.is_file()  # a message, not a traceback
    assert not (tmp_path / "part" / "projector.safetensors").exists()
    monkeypatch.undo()
    assert main([*part, "--resume"]) == 0
    straight, resumed = load(tmp_path / "straight" / "fit_projector_checkpoint.pt"), load(checkpoint)
    for name, value in straight["projector"].items():
        assert torch.equal(resumed["projector"][name], value), name
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "projector.safetensors")) for d in ("straight", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_device_torch_does_not_know_is_refused_in_one_line(hc):
    with pytest.raises(ValueError, match="'nonsense' is not a torch device"):
        fit_projector(hc, _images(4, 0), dim=8, size=GRID, epochs=1, batch_size=4, device="nonsense")
    with pytest.raises(ValueError, match="'nonsense' is not a torch device"):
        projector_loss(hc, _untrained(hc), _images(2, 0), size=GRID, device="nonsense")
