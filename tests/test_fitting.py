"""fit_regressor / predict on synthetic images whose landmarks are known (tiny random test_resnet)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from contrastive_landmarks import Hypercolumn, load_backbone
from contrastive_landmarks.fitting import _standardize, extract_stages, fit_regressor, predict


def _blobs(n: int, seed: int, size: int = 48) -> list[dict]:
    """Images with a red and a blue Gaussian blob at random positions; landmarks = blob centres."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    samples = []
    for i in range(n):
        img = 0.3 + 0.1 * torch.rand(3, size, size, generator=g)
        centres = torch.rand(2, 2, generator=g) * (size - 16) + 8
        for k, (plus, minus) in enumerate(((0, 1), (2, 0))):
            blob = torch.exp(-((xs - centres[k, 0]) ** 2 + (ys - centres[k, 1]) ** 2) / (2 * 3.0**2))
            img[plus] += 0.7 * blob
            img[minus] -= 0.3 * blob
        samples.append({"image": img.clamp(0, 1), "keypoints": centres, "visible": torch.ones(2, dtype=torch.bool),
                        "index": i})
    return samples


@pytest.fixture(scope="module")
def features() -> Hypercolumn:
    torch.manual_seed(0)
    return Hypercolumn(load_backbone("test_resnet"), size=24)


def test_fit_localises_synthetic_landmarks(features):
    train, val, test = _blobs(48, 0), _blobs(16, 1), _blobs(32, 2)
    # multiplier 1: with random test_resnet features the paper's 100 saturates the softmax (logit std ~500)
    result = fit_regressor(features, train, val, heatmaps_per_landmark=10, softmax_multiplier=1.0, epochs=30,
                           lr=3e-2, batch_size=16, seed=0)
    assert len(result.history) == 30
    errors = [row["val_error"] for row in result.history]
    assert result.best_score == pytest.approx(min(errors)) and errors[result.best_epoch] == min(errors)
    pred = predict(features, result.regressor, test)
    target = torch.stack([s["keypoints"] for s in test])
    error = (pred - target).norm(dim=-1).mean().item()
    baseline = (target - target.mean(0)).norm(dim=-1).mean().item()  # predicting the mean position
    assert error < 4.5 and error < 0.35 * baseline, (error, baseline)
    # the returned regressor is the best-validation one
    val_pred = predict(features, result.regressor, val)
    val_target = torch.stack([s["keypoints"] for s in val])
    assert (val_pred - val_target).norm(dim=-1).mean().item() == pytest.approx(result.best_score, rel=1e-4)
    # the backbone stayed frozen
    assert all(p.grad is None for p in features.parameters())
    assert not features.backbone.training and features.training  # the caller's modes are restored


def test_fit_is_deterministic(features):
    train, val = _blobs(12, 3), _blobs(4, 4)
    kw = {"heatmaps_per_landmark": 4, "softmax_multiplier": 1.0, "epochs": 3, "batch_size": 5, "lr": 1e-2}
    a = fit_regressor(features, train, val, seed=7, **kw)
    b = fit_regressor(features, train, val, seed=7, **kw)
    c = fit_regressor(features, train, val, seed=8, **kw)
    assert torch.equal(a.regressor.weight, b.regressor.weight) and torch.equal(a.regressor.combine, b.regressor.combine)
    assert a.history == b.history
    assert not torch.equal(a.regressor.weight, c.regressor.weight)
    aug1 = fit_regressor(features, train, None, seed=7, augment=True, **kw)
    aug2 = fit_regressor(features, train, None, seed=7, augment=True, **kw)
    assert torch.equal(aug1.regressor.weight, aug2.regressor.weight)
    assert aug1.best_epoch == 2 and math.isnan(aug1.best_score)  # no validation: last epoch, nan score


def test_cached_stages_equal_fresh_backbone_passes(features):
    train = _blobs(10, 5)
    kw = {"heatmaps_per_landmark": 3, "softmax_multiplier": 1.0, "epochs": 2, "batch_size": 4, "seed": 1}
    calls = []
    hook = features.backbone.register_forward_hook(lambda *args: calls.append(1))
    try:
        cached = fit_regressor(features, train, cache=True, **kw)
        n_cached = len(calls)
        fresh = fit_regressor(features, train, cache=False, **kw)
        n_fresh = len(calls) - n_cached
    finally:
        hook.remove()
    assert n_cached == 3  # one pass over the 10 training images (batches of 4)
    assert n_fresh > 2 * n_cached  # a fresh pass every epoch
    assert torch.allclose(cached.regressor.weight, fresh.regressor.weight, atol=1e-5)
    assert cached.history[-1]["train_loss"] == pytest.approx(fresh.history[-1]["train_loss"], rel=1e-4)


def test_standardisation_is_folded_into_the_returned_regressor(features):
    train = _blobs(8, 6)
    result = fit_regressor(features, train, heatmaps_per_landmark=3, softmax_multiplier=1.0, epochs=2, batch_size=4,
                           standardize=True)
    assert result.feature_mean is not None and result.feature_std.shape == (368,)
    images = torch.stack([s["image"] for s in train])
    maps = extract_stages(features.eval(), images)
    channels = [m.shape[1] for m in maps]
    means = list(torch.split(result.feature_mean, channels))
    stds = list(torch.split(result.feature_std, channels))
    trained = copy.deepcopy(result.regressor)
    with torch.no_grad():
        trained.weight.mul_(result.feature_std.to(trained.weight))  # undo the folding
        on_standardised = trained(_standardize(maps, means, stds))
        on_raw = result.regressor(maps)
    assert torch.allclose(on_raw, on_standardised, atol=1e-4)
    means_naive = torch.cat([m.permute(1, 0, 2, 3).reshape(m.shape[1], -1).mean(1) for m in maps])
    assert torch.allclose(result.feature_mean.float(), means_naive, atol=1e-4)


def test_predict_inputs_and_errors(features):
    data = _blobs(5, 7)
    result = fit_regressor(features, data, heatmaps_per_landmark=2, softmax_multiplier=1.0, epochs=1, batch_size=2)
    from_list = predict(features, result.regressor, data, batch_size=2)
    from_tensor = predict(features, result.regressor, torch.stack([s["image"] for s in data]))
    assert from_list.shape == (5, 2, 2) and torch.allclose(from_list, from_tensor, atol=1e-5)
    with pytest.raises(ValueError, match="cache"):
        fit_regressor(features, data, augment=True, cache=True, epochs=1)
    with pytest.raises(ValueError, match="empty"):
        fit_regressor(features, [], epochs=1)
    with pytest.raises(ValueError, match="metric"):
        fit_regressor(features, data, data, metric="auc", epochs=1)
    with pytest.raises(TypeError):
        fit_regressor(features, 42, epochs=1)
