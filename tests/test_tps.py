"""TPS warps: DVE parameterisation, align_corners=True sampling, exact keypoint warping, image pairs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive_landmarks.tps import (
    TPSParams,
    TPSWarp,
    grid_kernel,
    make_pair,
    random_tps,
    sampling_grid,
    source_points,
    tps_augment,
    tps_kernel,
    warp_images,
    warp_keypoints,
)
from tests.reference_impls import (
    fit_tps_reference,
    make_pair_reference,
    sampling_grid_reference,
    tps_point_reference,
    warp_keypoints_reference,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dots(points: torch.Tensor, size: int, sigma: float = 1.2) -> torch.Tensor:
    """(B, 1, size, size) images with a Gaussian dot at each (x, y) pixel point of (B, 1, 2)."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    d2 = (xs - points[:, 0, 0, None, None]) ** 2 + (ys - points[:, 0, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2)).unsqueeze(1)


def _centroid(images: torch.Tensor, around: torch.Tensor, radius: int = 6) -> torch.Tensor:
    """Intensity centroid of (B, 1, H, W) images in a window around (B, 2) pixel points."""
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=images.dtype), torch.arange(w, dtype=images.dtype), indexing="ij")
    out = []
    for i in range(b):
        win = ((xs - around[i, 0]).abs() <= radius) & ((ys - around[i, 1]).abs() <= radius)
        wgt = images[i, 0] * win
        out.append(torch.stack([(wgt * xs).sum(), (wgt * ys).sum()]) / wgt.sum())
    return torch.stack(out)


def test_kernel_is_r2_log_r2():
    d = torch.tensor([0.0, 0.25, 1.0, 4.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.25 * math.log(0.25), 0.0, 4 * math.log(4.0)], dtype=torch.float64)
    assert torch.allclose(tps_kernel(d), expected)


def test_identity_warp_is_exact():
    image = torch.rand(2, 3, 17, 23)
    ident = TPSWarp.identity(2)
    assert torch.allclose(warp_images(image, ident), image, atol=1e-6)
    grid = sampling_grid(ident, (17, 23))
    assert torch.allclose(grid[0, :, :, 0], torch.linspace(-1, 1, 23).expand(17, 23), atol=1e-7)
    assert torch.allclose(grid[0, :, :, 1], torch.linspace(-1, 1, 17)[:, None].expand(17, 23), atol=1e-7)
    pts = torch.rand(2, 5, 2) * 16
    assert torch.allclose(warp_keypoints(pts, ident, (17, 23)), pts, atol=1e-5)


def test_random_warps_are_reproducible():
    a = random_tps(3, generator=_gen(5))
    b = random_tps(3, generator=_gen(5))
    c = random_tps(3, generator=_gen(6))
    assert torch.equal(a.kernel_weights, b.kernel_weights) and torch.equal(a.affine, b.affine)
    assert not torch.equal(a.kernel_weights, c.kernel_weights)


def test_parameter_distribution_dve():
    p = TPSParams.dve()
    w = random_tps(4000, p, generator=_gen(1))
    trans = w.affine[:, 0]
    assert trans.std().item() == pytest.approx(p.transsd, rel=0.05)
    scale = w.affine[:, 1:].norm(dim=1)[:, 0]  # |(s cos, s sin)| = s
    assert (scale - 1).std().item() == pytest.approx(p.scalesd, rel=0.05)
    theta = torch.atan2(w.affine[:, 2, 0], w.affine[:, 1, 0])
    assert math.degrees(theta.std().item()) == pytest.approx(p.rotsd, rel=0.05)
    # kernel weights: a 50/50 mixture of N(0, all^2) and N(0, subset^2)
    k = w.kernel_weights
    expected_var = 0.5 * p.warpsd_all**2 + 0.5 * p.warpsd_subset**2
    assert k.var().item() == pytest.approx(expected_var, rel=0.05)
    assert (k.abs() > 5 * p.warpsd_all).double().mean().item() == pytest.approx(0.5 * 0.617, abs=0.02)


def test_few_shot_preset_zeroes_half_the_weights():
    w = random_tps(200, TPSParams.few_shot(), generator=_gen(2))
    assert (w.kernel_weights == 0).double().mean().item() == pytest.approx(0.5, abs=0.02)
    assert TPSParams.matching().rotsd == 2.5 and TPSParams.matching().im1_multiplier == 1.0
    half = TPSParams.dve().scaled(0.5, 2.0)
    assert half.warpsd_all == 0.0005 and half.transsd == 0.2
    with pytest.raises(ValueError):
        TPSParams(rotsd=-1.0)


def test_jacobian_matches_autograd():
    w = random_tps(2, generator=_gen(3))
    pts = torch.rand(2, 4, 2, dtype=torch.float64) * 2.4 - 1.2
    jac = w.jacobian(pts)
    for b in range(2):
        for m in range(4):
            ref = torch.autograd.functional.jacobian(lambda x, b=b: w(x.view(1, 1, 2).expand(2, 1, 2))[b, 0], pts[b, m])
            assert torch.allclose(jac[b, m], ref, atol=1e-10)


@pytest.mark.parametrize("preset", ["few_shot", "matching"])
def test_keypoint_inversion_is_exact(preset):
    w = random_tps(16, getattr(TPSParams, preset)(), generator=_gen(4))
    q = torch.rand(16, 30, 2, generator=_gen(7), dtype=torch.float64) * 79
    p, residual = warp_keypoints(q, w, 80, return_residual=True)
    back = source_points(p, w, 80)
    err = (back - q).norm(dim=-1)
    assert torch.allclose(err, residual, atol=1e-9)
    exact = residual < 1e-4
    assert exact.double().mean() > (0.999 if preset == "few_shot" else 0.98)
    assert err[exact].max() < 1e-6


def test_keypoints_of_a_tps_fitted_through_known_points_land_on_them():
    """The textbook TPS through c_i -> d_i (solved in float64): T(c_i) = d_i, so a keypoint at d_i lands on c_i."""
    t = torch.linspace(-0.9, 0.9, 6, dtype=torch.float64)
    sources = torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(-1, 2)
    angle, scale = math.radians(4.0), 1.05
    rotation = scale * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    noise = 0.03 * torch.randn(sources.shape, generator=_gen(30), dtype=torch.float64)
    targets = sources @ rotation.to(torch.float64).T + torch.tensor([0.05, -0.03], dtype=torch.float64) + noise
    weights, affine = fit_tps_reference(sources, targets)
    warp = TPSWarp(sources, weights[None], affine[None])
    for i in range(sources.shape[0]):  # the formula, point by point, interpolates; so does the library's T
        torch.testing.assert_close(tps_point_reference(sources, weights, affine, sources[i]), targets[i])
    torch.testing.assert_close(warp(sources)[0], targets, rtol=0, atol=1e-12)
    size = (70, 90)
    to_px = torch.tensor([size[1] - 1, size[0] - 1], dtype=torch.float64) / 2
    inside = (targets.abs() < 1).all(-1)
    q = ((targets[inside] + 1) * to_px)[None]
    p, residual = warp_keypoints(q, warp, size, return_residual=True)
    torch.testing.assert_close(p[0], (sources[inside] + 1) * to_px, rtol=0, atol=1e-6)
    assert residual.max() < 1e-6


@pytest.mark.parametrize("preset", ["few_shot", "matching", "dve"])
def test_keypoints_agree_with_the_formula_reference(preset):
    """warp_keypoints against an independent inverse (formula point by point, TPS-fitted start, Newton)."""
    w = random_tps(6, getattr(TPSParams, preset)(), generator=_gen(4))
    q = torch.rand(6, 8, 2, generator=_gen(7), dtype=torch.float64) * 60 + 10
    ref, ref_residual = warp_keypoints_reference(q, w, 80)
    lib, lib_residual = warp_keypoints(q, w, 80, return_residual=True)
    exact = ref_residual < 1e-6
    assert exact.double().mean() > (0.99 if preset != "dve" else 0.85)
    assert torch.equal(exact, lib_residual < 1e-6)  # the same points have a preimage
    assert (ref - lib).norm(dim=-1)[exact].max() < 1e-6


def test_keypoints_agree_with_dense_grid_nearest_pixel():
    """The reference's nearest-sample inversion, done independently from the dense grid, is within 0.71 px."""
    size = 40
    w = random_tps(4, TPSParams.matching(), generator=_gen(8))
    q = torch.rand(4, 10, 2, generator=_gen(9), dtype=torch.float64) * 20 + 10
    p, residual = warp_keypoints(q, w, size, return_residual=True)
    grid_px = (sampling_grid(w, size, dtype=torch.float64) + 1) * (size - 1) / 2  # (B, H, W, 2) pixels
    flat = grid_px.reshape(4, -1, 2)
    idx = torch.cdist(q, flat).argmin(-1)
    nn = torch.stack([idx % size, idx // size], -1).to(torch.float64)
    ok = residual < 1e-4
    assert ok.any()
    assert ((nn - p).norm(dim=-1)[ok]).max() < 0.75


def test_dot_lands_on_warped_keypoint():
    size = 64
    q = torch.tensor([[[20.3, 35.7]], [[41.6, 22.2]], [[31.0, 30.5]], [[25.5, 44.1]]], dtype=torch.float64)
    images = _dots(q, size)
    w = random_tps(4, TPSParams.matching(), generator=_gen(10))
    warped = warp_images(images, w)
    p = warp_keypoints(q, w, size)[:, 0]
    found = _centroid(warped, p)
    assert (found - p).norm(dim=-1).max() < 0.1
    # and a point not warped (the identity) would be clearly wrong, so the test can fail
    assert (found - q[:, 0]).norm(dim=-1).max() > 0.5


def test_augment_warps_image_and_points_together():
    size = 48
    q = torch.tensor([[[12.2, 30.9]], [[33.3, 14.4]]], dtype=torch.float64)
    images = _dots(q, size).expand(-1, 3, -1, -1)
    warped, kp = tps_augment(images, q, generator=_gen(11))
    assert warped.shape == images.shape and kp.shape == q.shape
    assert (_centroid(warped[:, :1], kp[:, 0]) - kp[:, 0]).norm(dim=-1).max() < 0.1
    again, _ = tps_augment(images, q, generator=_gen(11))
    assert torch.equal(warped, again)
    only, none = tps_augment(images, generator=_gen(11))
    assert none is None and torch.equal(only, warped)


@pytest.mark.parametrize("crop", [0, 5])
def test_pair_grid_maps_image1_into_image2(crop):
    size = 40
    images = torch.rand(2, 3, size, size, dtype=torch.float64)
    kp = torch.tensor([[[10.5, 20.25], [30.0, 12.0]], [[20.0, 20.0], [15.5, 28.75]]], dtype=torch.float64)
    pair = make_pair(images, kp, TPSParams.matching(), generator=_gen(12), crop=crop)
    out = size - 2 * crop
    assert pair.image1.shape == pair.image2.shape == (2, 3, out, out)
    assert pair.grid.shape == (2, out, out, 2)
    resampled = F.grid_sample(pair.image2, pair.grid, align_corners=False)
    # only pixels whose source lies inside the (cropped) image2 can be reproduced
    margin = 1.0 - 1.0 / out
    inside = (pair.grid.abs() <= margin).all(-1)
    assert inside.double().mean() > 0.5
    diff = (resampled - pair.image1).abs().amax(1)
    assert diff[inside].max() < 1e-9
    # keypoints: image1's keypoints sample image2 at image2's keypoints (exactly, via the warp)
    back = source_points(pair.keypoints1 + crop, pair.warp2, size) - crop
    assert torch.allclose(back, pair.keypoints2, atol=1e-6)
    assert pair.visible1.shape == (2, 2) and pair.visible1.dtype == torch.bool


def test_pair_is_deterministic_and_checks_inputs():
    images = torch.rand(1, 3, 24, 24)
    a = make_pair(images, generator=_gen(13))
    b = make_pair(images, generator=_gen(13))
    assert torch.equal(a.image1, b.image1) and torch.equal(a.grid, b.grid) and a.keypoints1 is None
    with pytest.raises(ValueError, match="crop"):
        make_pair(images, crop=12)
    with pytest.raises(ValueError):
        warp_images(images, random_tps(2))
    with pytest.raises(ValueError):
        warp_keypoints(torch.zeros(1, 3), random_tps(1), 24)
    with pytest.raises(ValueError):
        random_tps(0)


# -- fast dense paths against the original formulas -------------------------------------------------------------
def test_grid_kernel_is_the_direct_radial_basis_bitwise():
    ctrl = random_tps(1, generator=_gen(20)).control_points
    size = (17, 23)
    xs, ys = torch.linspace(-1, 1, 23, dtype=torch.float64), torch.linspace(-1, 1, 17, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    direct = tps_kernel(((pts[:, None, :] - ctrl[None]) ** 2).sum(-1))  # naive (M, P, 2) broadcast
    kernel = grid_kernel(ctrl, size)
    assert kernel.shape == (17 * 23, 100) and kernel.dtype == torch.float64
    assert torch.equal(kernel, direct)
    # pixels that coincide with control points get exactly U(0) = 0
    assert (kernel == 0).sum() >= 4


@pytest.mark.parametrize("preset", ["dve", "matching", "few_shot"])
@pytest.mark.parametrize("size", [(46, 46), (17, 23), (2, 5)])  # 46: pixels on control points
def test_sampling_grid_matches_the_per_warp_broadcast(preset, size):
    w = random_tps(5, getattr(TPSParams, preset)(), generator=_gen(21))
    ref = sampling_grid_reference(w, size, dtype=torch.float64)
    fast = sampling_grid(w, size, dtype=torch.float64)
    assert fast.shape == ref.shape == (5, *size, 2)
    px = (fast - ref).abs().amax() * (max(size) - 1) / 2
    assert px < 1e-12  # pixels; float64 rounding of a different summation order only
    assert torch.equal(sampling_grid(w, size), fast.float())  # the default float32 grid is the same cast


def test_shared_points_build_the_kernel_once_and_agree_with_batched_points():
    w = random_tps(4, generator=_gen(22))
    pts = torch.rand(50, 2, generator=_gen(23), dtype=torch.float64) * 2.6 - 1.3
    shared = w(pts)
    batched = w(pts.expand(4, -1, -1))
    assert shared.shape == (4, 50, 2)
    torch.testing.assert_close(shared, batched, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="kernel"):
        w.apply_kernel(torch.zeros(50, 99, dtype=torch.float64), pts)


def test_apply_kernel_and_grid_kernel_gradcheck():
    gen = _gen(24)
    ctrl = torch.rand(6, 2, generator=gen, dtype=torch.float64) * 1.6 - 0.8  # off the pixel grid: U is smooth
    pts = torch.rand(7, 2, generator=gen, dtype=torch.float64) * 2 - 1
    weights = (torch.randn(2, 6, 2, generator=gen, dtype=torch.float64) * 0.1).requires_grad_()
    affine = torch.randn(2, 3, 2, generator=gen, dtype=torch.float64).requires_grad_()
    kernel = tps_kernel(((pts[:, None] - ctrl[None]) ** 2).sum(-1)).requires_grad_()

    def apply(k, wt, af, p):
        return TPSWarp(ctrl, wt, af).apply_kernel(k, p)

    assert torch.autograd.gradcheck(apply, (kernel, weights, affine, pts.clone().requires_grad_()))
    c = ctrl.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda c: grid_kernel(c, (3, 4)), (c,))


@pytest.mark.parametrize("crop", [0, 4])
def test_make_pair_matches_the_original_three_grid_version(crop):
    images = torch.rand(3, 3, 40, 36, generator=_gen(25))
    kp = torch.rand(3, 6, 2, generator=_gen(26)) * 24 + 6
    for params in (TPSParams.matching(), TPSParams.dve()):
        ref = make_pair_reference(images, kp, params, generator=_gen(27), crop=crop)
        fast = make_pair(images, kp, params, generator=_gen(27), crop=crop)
        assert torch.equal(fast.warp1.kernel_weights, ref.warp1.kernel_weights)
        for name in ("image1", "image2", "grid", "keypoints1", "keypoints2"):
            a, b = getattr(fast, name), getattr(ref, name)
            assert a.shape == b.shape and a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
        assert torch.equal(fast.visible1, ref.visible1) and torch.equal(fast.visible2, ref.visible2)
        assert not torch.equal(fast.image1, fast.image2)  # the warps did something
