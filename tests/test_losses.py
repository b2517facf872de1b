"""spatial_contrastive_loss: Eq. 3 with Eq. 4 against hand-written formulas, TPS pairs, implementations, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastive_landmarks import tps
from contrastive_landmarks.coords import cell_centers
from contrastive_landmarks.losses import spatial_contrastive_loss
from contrastive_landmarks.ops.softmax_matching import triton_available


def _cdist(a, b):
    """Exact pairwise Euclidean distances (no matmul trick, so a point's distance to itself is 0)."""
    return (a[..., :, None, :] - b[..., None, :, :]).square().sum(-1).sqrt()


def _hand_loss(feats1, feats2, src_px, image_size, temperature, power):
    """mean_{b,u} Σ_v ||g(u) - v||^γ softmax_v(cos(f_u, f'_v) / τ), v the cell centres in image pixels."""
    h, w = feats1.shape[-2:]
    f1 = F.normalize(feats1.flatten(2), dim=1)
    f2 = F.normalize(feats2.flatten(2), dim=1)
    p = torch.softmax(torch.einsum("bdn,bdm->bnm", f1, f2) / temperature, dim=-1)
    v = cell_centers((h, w), image_size, dtype=feats1.dtype)
    dist = _cdist(src_px, v) ** power
    return (p * dist).sum(-1).mean()


def test_identity_case_matches_hand_formula():
    # x' = x: the authors' projector loss (logits 7·cos, distance^0.5 in input pixels, 1/(h·w·B)).
    feats = torch.randn(2, 8, 6, 5, dtype=torch.float64)
    got = spatial_contrastive_loss(feats, image_size=(24, 20))
    centres = cell_centers((6, 5), (24, 20), dtype=torch.float64)
    want = _hand_loss(feats, feats, centres, (24, 20), 1 / 7, 0.5)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    # the authors' loop, literally: sum_b sum_{u,v} d(u, v) p(v|u) / (h·w·B)
    f = F.normalize(feats.flatten(2), dim=1)
    total = 0.0
    for b in range(2):
        p = torch.softmax(7 * f[b].T @ f[b], dim=-1)
        total += float((_cdist(centres, centres) ** 0.5 * p).sum())
    assert abs(float(got) - total / (6 * 5 * 2)) < 1e-12


def test_pair_case_matches_hand_formula_and_grid_resampling():
    g = torch.Generator().manual_seed(1)
    feats1, feats2 = torch.randn(2, 2, 16, 4, 4, generator=g, dtype=torch.float64)
    grid_cells = torch.rand(2, 4, 4, 2, generator=g, dtype=torch.float64) * 2 - 1  # at the feature cells
    image_size = (16, 16)
    src_px = ((grid_cells + 1) * 16 - 1) / 2  # normalised -> image pixels
    want = _hand_loss(feats1, feats2, src_px.reshape(2, 16, 2), image_size, 0.2, 1.0)
    got = spatial_contrastive_loss(
        feats1, feats2, grid_cells, temperature=0.2, distance_power=1.0, image_size=image_size
    )
    assert torch.allclose(got, want, rtol=1e-12)
    # an image-resolution grid is resampled at the cell centres: an affine g gives the same loss exactly
    theta = torch.tensor([[[0.9, 0.1, 0.05], [-0.08, 1.1, -0.1]]], dtype=torch.float64).expand(2, -1, -1)
    fine = F.affine_grid(theta, (2, 1, 16, 16), align_corners=False)
    coarse = F.affine_grid(theta, (2, 1, 4, 4), align_corners=False)
    a = spatial_contrastive_loss(feats1, feats2, fine, image_size=image_size)
    b = spatial_contrastive_loss(feats1, feats2, coarse, image_size=image_size)
    assert torch.allclose(a, b, rtol=1e-10)


def test_identity_grid_equals_the_x_equals_x_case():
    feats = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    identity = F.affine_grid(
        torch.eye(2, 3, dtype=torch.float64).expand(2, -1, -1), (2, 1, 24, 24), align_corners=False
    )
    a = spatial_contrastive_loss(feats, image_size=24)
    b = spatial_contrastive_loss(feats, feats, identity, image_size=24)
    c = spatial_contrastive_loss(feats, feats, image_size=24)  # grid=None with feats2: g = identity
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, rtol=1e-12)


def test_distances_are_in_image_pixels_and_reductions():
    feats = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    base = spatial_contrastive_loss(feats, distance_power=1.0)  # unit: feature cells
    assert torch.allclose(spatial_contrastive_loss(feats, distance_power=1.0, image_size=20), 4 * base)
    assert torch.allclose(
        spatial_contrastive_loss(feats, distance_power=0.5, image_size=20),
        2 * spatial_contrastive_loss(feats, distance_power=0.5),
    )
    per_location = spatial_contrastive_loss(feats, reduction="none")
    assert per_location.shape == (2, 5, 5) and (per_location >= 0).all()
    assert torch.allclose(per_location.mean(), spatial_contrastive_loss(feats))
    assert torch.allclose(spatial_contrastive_loss(feats, reduction="paper"), spatial_contrastive_loss(feats) / 25)
    # normalize=False uses raw dot products
    raw = spatial_contrastive_loss(feats, normalize=False, temperature=1.0, distance_power=1.0)
    centres = cell_centers((5, 5), (5, 5), dtype=torch.float64)
    p = torch.softmax(torch.einsum("bdn,bdm->bnm", feats.flatten(2), feats.flatten(2)), -1)
    assert torch.allclose(raw, (p * _cdist(centres, centres)).sum(-1).mean())


def test_distinct_features_have_lower_loss_than_constant_ones():
    g = torch.Generator().manual_seed(0)
    distinct = torch.randn(1, 32, 8, 8, generator=g) * 10
    blurry = distinct.mean((2, 3), keepdim=True).expand(-1, -1, 8, 8) + 0.01 * distinct
    assert spatial_contrastive_loss(distinct) < 0.5 * spatial_contrastive_loss(blurry)


def _field(generator):
    """A random descriptor field on a 32x32 image, distinctive at the scale of a 4-px feature cell."""
    return F.interpolate(
        torch.randn(2, 32, 8, 8, generator=generator), size=(32, 32), mode="bilinear", align_corners=False
    )


def test_tps_pair_equivariant_features_beat_shuffled_ones():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 32, 32, generator=g)
    pair = tps.make_pair(images, generator=g)
    # image1's features are those of x' (image2) at g(u), i.e. exactly equivariant: Φ_u(x) = Φ_{g(u)}(x').
    field = _field(g)
    feats2 = F.avg_pool2d(field, 4)  # (2, 32, 8, 8) at cell centres
    warped = F.grid_sample(field, pair.grid, mode="bilinear", padding_mode="border", align_corners=False)
    feats1 = F.avg_pool2d(warped, 4)
    perm = torch.randperm(64, generator=g)
    shuffled = feats1.flatten(2)[:, :, perm].view_as(feats1)
    kw = dict(temperature=0.05, image_size=(32, 32))
    good = spatial_contrastive_loss(feats1, feats2, pair.grid, **kw)
    bad = spatial_contrastive_loss(shuffled, feats2, pair.grid, **kw)
    assert good < 0.5 * bad


def test_grid_direction_with_a_one_cell_translation():
    # g(u) = u + 4 px (one feature cell): x' content at u + 4 px is x's content at u.
    g = torch.Generator().manual_seed(4)
    field = _field(g)
    theta = torch.tensor([[[1.0, 0.0, 0.25], [0.0, 1.0, 0.0]]]).expand(2, -1, -1)  # +0.25 normalised = +4 px
    grid = F.affine_grid(theta, (2, 1, 32, 32), align_corners=False)
    feats2 = F.avg_pool2d(field, 4)
    feats1 = F.avg_pool2d(F.grid_sample(field, grid, padding_mode="border", align_corners=False), 4)
    kw = dict(temperature=0.02, image_size=(32, 32))
    right = spatial_contrastive_loss(feats1, feats2, grid, **kw)
    backwards = spatial_contrastive_loss(feats1, feats2, grid - torch.tensor([0.5, 0.0]), **kw)  # u - 4 px
    aligned = spatial_contrastive_loss(feats1, feats2, None, **kw)
    # the rightmost column has no true match (border padding), so "right" is small but not zero
    assert right < 0.5 * aligned < backwards


@pytest.mark.parametrize("warp", [False, True])
def test_implementations_agree(warp):
    g = torch.Generator().manual_seed(2)
    feats1 = torch.randn(2, 16, 12, 12, generator=g, requires_grad=True)
    feats2 = torch.randn(2, 16, 12, 12, generator=g, requires_grad=True) if warp else None
    grid = torch.rand(2, 24, 24, 2, generator=g) * 2 - 1 if warp else None
    inputs = [t for t in (feats1, feats2) if t is not None]
    results = {}
    impls = ["naive", "streaming"] + (["triton"] if triton_available(feats1.device) else [])
    for impl in impls:
        loss = spatial_contrastive_loss(feats1, feats2, grid, image_size=48, implementation=impl)
        results[impl] = (loss, torch.autograd.grad(loss, inputs))
    ref_loss, ref_grads = results["naive"]
    for impl in impls[1:]:
        loss, grads = results[impl]
        assert torch.allclose(loss, ref_loss, rtol=1e-5), impl
        for a, b in zip(grads, ref_grads):
            assert (a - b).abs().max() <= 1e-3 * b.abs().max(), impl


def test_gradients_reach_features_not_grid():
    feats1 = torch.randn(1, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    feats2 = torch.randn(1, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand(1, 4, 4, 2, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    spatial_contrastive_loss(feats1, feats2, grid).backward()
    assert feats1.grad.abs().sum() > 0 and feats2.grad.abs().sum() > 0
    assert grid.grad is None
    assert torch.autograd.gradcheck(lambda a, b: spatial_contrastive_loss(a, b, grid.detach()), (feats1, feats2))


def test_half_precision_input_gives_float32_loss():
    feats = torch.randn(2, 16, 6, 6)
    loss = spatial_contrastive_loss(feats.bfloat16())
    assert loss.dtype == torch.float32
    assert abs(float(loss) - float(spatial_contrastive_loss(feats))) < 2e-2


def test_shape_and_value_errors():
    feats = torch.randn(2, 8, 4, 4)
    grid = torch.zeros(2, 4, 4, 2)
    with pytest.raises(ValueError, match=r"feats1 must be a \(B, d, h, w\)"):
        spatial_contrastive_loss(feats[0])
    with pytest.raises(ValueError, match="feats2 must have the shape of feats1"):
        spatial_contrastive_loss(feats, feats[:, :4])
    with pytest.raises(ValueError, match="grid needs feats2"):
        spatial_contrastive_loss(feats, None, grid)
    with pytest.raises(ValueError, match=r"grid must be \(2, h', w', 2\)"):
        spatial_contrastive_loss(feats, feats, grid[:1])
    with pytest.raises(ValueError, match=r"grid must be \(2, h', w', 2\)"):
        spatial_contrastive_loss(feats, feats, grid[..., :1])
    with pytest.raises(TypeError, match="share dtype and device"):
        spatial_contrastive_loss(feats, feats.double())
    with pytest.raises(TypeError, match="floating point"):
        spatial_contrastive_loss(feats.long())
    with pytest.raises(ValueError, match="temperature must be positive"):
        spatial_contrastive_loss(feats, temperature=0)
    with pytest.raises(ValueError, match="distance_power must be non-negative"):
        spatial_contrastive_loss(feats, distance_power=-0.5)
    with pytest.raises(ValueError, match="image_size must be"):
        spatial_contrastive_loss(feats, image_size=(0, 4))
    with pytest.raises(ValueError, match="reduction must be"):
        spatial_contrastive_loss(feats, reduction="sum")
    with pytest.raises(ValueError, match="implementation must be"):
        spatial_contrastive_loss(feats, implementation="cuda")
