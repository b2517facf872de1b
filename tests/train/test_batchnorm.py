"""recalibrate_batchnorm: running statistics re-estimated on given batches, nothing else changed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastive_landmarks import load_backbone
from contrastive_landmarks.train.batchnorm import recalibrate_batchnorm


def test_statistics_are_the_batch_averages_and_weights_and_modes_are_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    model[1].running_mean.fill_(5.0)
    model.eval()
    model[3].train()  # a mixed state that must come back as it was
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(8, 3, 6, 6) * 2 + 1 for _ in range(3)]
    assert recalibrate_batchnorm(model, batches) == 24
    # the first layer sees the conv outputs: its mean is the average of the batch means
    with torch.no_grad():
        outs = [model[0](b) for b in batches]
    expected_mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    expected_var = torch.stack([o.transpose(0, 1).flatten(1).var(1) for o in outs]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, expected_var, rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1  # restored
    assert not model.training and not model[1].training and model[3].training
    for key, value in weights.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_backbone_features_change_only_through_the_statistics():
    backbone = load_backbone("test_resnet")
    images = backbone.normalize(torch.rand(4, 3, 32, 32))
    before = [m.clone() for m in backbone(images)]
    recalibrate_batchnorm(backbone, [images])
    after = backbone(images)
    assert not backbone.training
    assert any(not torch.allclose(a, b) for a, b in zip(after, before))
    # with statistics of exactly these images, the first BN layer's outputs are standardised per channel
    first = next(m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(first.num_batches_tracked) == 1


def test_errors():
    with pytest.raises(ValueError, match="no BatchNorm"):
        recalibrate_batchnorm(nn.Conv2d(3, 3, 1), [torch.rand(1, 3, 4, 4)])
    with pytest.raises(ValueError, match="empty"):
        recalibrate_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), [])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        recalibrate_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), [torch.rand(3, 4, 4)])
