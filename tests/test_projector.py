"""SpatialProjector: 1x1 projection with bias, spatial-softmax mode, stage-map path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastive_landmarks.projector import SpatialProjector
from contrastive_landmarks.regressor import spatial_softmax


def test_linear_mode_is_locationwise_affine():
    proj = SpatialProjector(10, 4).double()
    x = torch.randn(2, 10, 5, 6, dtype=torch.float64)
    out = proj(x)
    assert out.shape == (2, 4, 5, 6)
    naive = torch.einsum("bchw,dc->bdhw", x, proj.weight) + proj.bias.view(1, -1, 1, 1)
    assert torch.allclose(out, naive, atol=1e-12)
    # location-wise: permuting locations permutes outputs (equivariance)
    perm = torch.randperm(30)
    xp = x.flatten(2)[:, :, perm].view_as(x)
    assert torch.allclose(proj(xp).flatten(2), out.flatten(2)[:, :, perm], atol=1e-12)


def test_softmax_mode():
    proj = SpatialProjector(10, 4, mode="softmax").double()
    x = torch.randn(2, 10, 5, 6, dtype=torch.float64)
    out = proj(x)
    assert torch.allclose(out.sum((-1, -2)), torch.ones(2, 4, dtype=torch.float64))
    lin = proj.project(x)
    naive = torch.exp(7 * lin) / torch.exp(7 * lin).sum((-1, -2), keepdim=True)
    assert torch.allclose(out, naive, atol=1e-12)
    big = spatial_softmax(torch.randn(1, 2, 4, 4) * 1e4, 7.0)  # the one spatial softmax, the regressor's too
    assert big.shape == (1, 2, 16) and torch.isfinite(big).all()


@pytest.mark.parametrize("mode", ["linear", "softmax"])
def test_stage_maps_equal_hypercolumn(mode):
    maps = [torch.randn(2, c, s, s, dtype=torch.float64) for c, s in ((6, 3), (4, 6), (2, 12))]
    proj = SpatialProjector(12, 5, mode=mode, size=12).double()

    def hyper(size):
        return torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], 1)

    assert torch.allclose(proj(maps), proj(hyper((12, 12))), atol=1e-12)
    assert torch.allclose(proj(maps, size=24), proj(hyper((24, 24))), atol=1e-12)


def test_gradcheck_float64():
    proj = SpatialProjector(5, 3, mode="softmax", softmax_multiplier=2.0).double()
    x = torch.randn(1, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(proj, (x,))
    out = proj(x).sum() + proj.project(x).pow(2).sum()
    out.backward()
    assert proj.weight.grad is not None and proj.bias.grad is not None


def test_init_and_errors():
    proj = SpatialProjector(100, 8)
    assert proj.weight.abs().max() <= 0.1 and proj.bias.abs().max() <= 0.1
    assert sum(p.numel() for p in proj.parameters()) == 100 * 8 + 8
    with pytest.raises(ValueError, match="mode"):
        SpatialProjector(4, 2, mode="softplus-ish")
    with pytest.raises(ValueError, match="hypercolumn"):
        proj(torch.randn(1, 99, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        proj([torch.randn(1, 50, 2, 2)])
    with pytest.raises(TypeError):
        proj(None)
