"""LandmarkRegressor: Table 4 parameter counts, naive reference, stage-map path, loss masking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from contrastive_landmarks.coords import normalized_to_pixels
from contrastive_landmarks.regressor import (
    LandmarkRegressor,
    around_peak,
    combine_points,
    regression_loss,
    spatial_soft_argmax,
    spatial_softmax,
)


@pytest.mark.parametrize(
    ("channels", "k", "thousands"), [(3840, 50, 961), (3840, 10, 192), (256, 50, 65), (256, 10, 13), (64, 50, 17)]
)
def test_parameter_count_matches_table4(channels, k, thousands):
    reg = LandmarkRegressor(channels, 5, k)
    count = sum(p.numel() for p in reg.parameters())
    assert count == channels * 5 * k + 5 * 2 * 2 * k
    assert round(count / 1000) == thousands


def test_init_statistics():
    torch.manual_seed(1)
    soft = LandmarkRegressor(256, 5, 50)
    assert soft.init == "soft" and soft.softmax_multiplier == 1.0
    assert abs(soft.weight.std().item() * math.sqrt(256) - 1.0) < 0.05  # N(0, 1/C)
    # each landmark starts as the mean of its K points
    points = torch.randn(3, 5, 50, 2)
    assert torch.allclose(combine_points(points, soft.combine), points.mean(2), atol=1e-6)
    paper = LandmarkRegressor(256, 5, 50, init="paper")
    assert paper.softmax_multiplier == 100.0
    assert abs(paper.weight.std().item() - 1.0) < 0.05  # randn, not kaiming
    bound = 1 / math.sqrt(100)
    assert paper.combine.abs().max() <= bound
    assert paper.combine.abs().max() > 0.9 * bound
    for init in ("soft", "paper"):
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        a, b = LandmarkRegressor(8, 2, 4, init=init), LandmarkRegressor(8, 2, 4, init=init)
        a.reset_parameters(g1)
        b.reset_parameters(g2)
        assert torch.equal(a.weight, b.weight) and torch.equal(a.combine, b.combine)
    with pytest.raises(ValueError, match="init"):
        LandmarkRegressor(8, 2, init="kaiming")


def _standardised(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean((0, 2, 3), keepdim=True)
    return (x - mean) / x.std((0, 2, 3), keepdim=True).clamp_min(1e-6)


@pytest.mark.parametrize("channels", [32, 256, 960, 3840])
@pytest.mark.parametrize("standardise", [True, False])
def test_soft_start_is_soft_for_any_channel_count(channels, standardise):
    """Issue #11: the default start spreads each heatmap's softmax over the grid (gradients reach every location),
    where the authors' N(0, 1) x 100 start is a hard argmax on the same features."""
    g = torch.Generator().manual_seed(channels)
    smooth = F.avg_pool2d(torch.randn(4, channels, 36, 36, generator=g), 5, stride=1)  # spatially correlated
    features = F.relu(smooth * 2.0) if not standardise else _standardised(smooth)
    torch.manual_seed(0)
    soft = LandmarkRegressor(channels, 5, 10)
    uniform = 1 / (32 * 32)
    peak = soft.peakiness(features).mean().item()
    assert uniform < peak < 0.05, peak  # about 20x the uniform 0.001, far from a hard argmax
    paper = LandmarkRegressor(channels, 5, 10, init="paper")
    assert paper.peakiness(features).mean().item() > 0.9


@pytest.mark.parametrize("arch", ["test_resnet", "resnet18"])
def test_soft_start_is_soft_on_real_raw_hypercolumns(arch):
    from contrastive_landmarks import Hypercolumn, load_backbone

    torch.manual_seed(0)
    hc = Hypercolumn(load_backbone(arch), size=32).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        maps = hc.stage_maps(hc.backbone.normalize(images))
        soft = LandmarkRegressor(hc.channels, 5, 10, size=32)
        assert soft.peakiness(maps).mean().item() < 0.05
        assert LandmarkRegressor(hc.channels, 5, 10, init="paper", size=32).peakiness(maps).mean().item() > 0.9


def _naive(reg: LandmarkRegressor, hyper: torch.Tensor) -> torch.Tensor:
    """Loop-based reference: per heatmap softmax and expectation over cell centres, per landmark linear."""
    b, _, h, w = hyper.shape
    n, k = reg.num_landmarks, reg.heatmaps_per_landmark
    out = torch.zeros(b, n, 2, dtype=hyper.dtype)
    xs = [(2 * j + 1) / w - 1 for j in range(w)]
    ys = [(2 * i + 1) / h - 1 for i in range(h)]
    for bi in range(b):
        for li in range(n):
            pts = []
            for ki in range(k):
                filt = reg.weight[li * k + ki]
                logits = torch.einsum("chw,c->hw", hyper[bi], filt) * reg.softmax_multiplier
                p = torch.exp(logits - logits.max())
                p = p / p.sum()
                x = sum(p[i, j] * xs[j] for i in range(h) for j in range(w))
                y = sum(p[i, j] * ys[i] for i in range(h) for j in range(w))
                pts += [x, y]
            vec = torch.stack(pts)
            out[bi, li] = reg.combine[li] @ vec
    return out


def test_forward_matches_naive_reference():
    reg = LandmarkRegressor(6, 2, 3, softmax_multiplier=2.0).double()
    hyper = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(reg(hyper), _naive(reg, hyper), atol=1e-10)


def test_softmax_is_stable_at_multiplier_100():
    reg = LandmarkRegressor(16, 3, 5, init="paper")
    out = reg(torch.randn(2, 16, 12, 12) * 10)
    assert torch.isfinite(out).all()
    assert out.abs().max() <= reg.combine.abs().sum(-1).max() + 1e-5


def test_soft_argmax_peaks_at_cell_centres():
    heat = torch.full((1, 1, 8, 6), -10.0)
    heat[0, 0, 5, 2] = 10.0
    pt = spatial_soft_argmax(heat, 100.0)[0, 0]
    # cell (i=5, j=2) of an 8x6 map covering a 48x36 image is centred at pixel (2.5*6-0.5, 5.5*6-0.5)
    px = normalized_to_pixels(pt, (48, 36))
    assert torch.allclose(px, torch.tensor([2.5 * 6 - 0.5, 5.5 * 6 - 0.5]), atol=1e-4)


def test_decode_steps_are_decode_and_the_steps_on_its_way():
    reg = LandmarkRegressor(6, 2, 3, softmax_multiplier=2.0)
    heat = torch.randn(4, 6, 5, 7)
    landmarks, points, probs = reg.decode_steps(heat)
    assert torch.equal(landmarks, reg.decode(heat))
    assert torch.equal(points, spatial_soft_argmax(heat, 2.0).reshape(4, 2, 3, 2))
    assert torch.equal(probs, spatial_softmax(heat, 2.0)) and probs.shape == (4, 6, 35)
    torch.testing.assert_close(landmarks, combine_points(points, reg.combine.detach()), rtol=0, atol=0)


def _around_peak_naive(probs, grid, radius):
    out = torch.zeros_like(probs)
    h, w = grid
    for b in range(probs.shape[0]):
        for m in range(probs.shape[1]):
            py, px = divmod(int(probs[b, m].argmax()), w)
            for y in range(max(0, py - radius), min(h, py + radius + 1)):
                for x in range(max(0, px - radius), min(w, px + radius + 1)):
                    out[b, m, y * w + x] = probs[b, m, y * w + x]
            out[b, m] /= out[b, m].sum()
    return out


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_around_peak_matches_a_loop(radius):
    probs = spatial_softmax(torch.randn(2, 3, 6, 9, generator=torch.Generator().manual_seed(radius)) * 3)
    torch.testing.assert_close(around_peak(probs, (6, 9), radius), _around_peak_naive(probs, (6, 9), radius))
    torch.testing.assert_close(around_peak(probs, (6, 9), 9), probs)  # a window over the whole grid: unchanged


def test_decode_window_reads_the_peak_in_eval_and_every_cell_in_training():
    heat = torch.full((1, 2, 8, 8), -20.0)
    heat[0, 0, 1, 1], heat[0, 0, 6, 6] = 5.0, 4.5  # two peaks: all cells average them
    heat[0, 1, 3, 3] = 5.0
    reg = LandmarkRegressor(4, 2, 1, size=8, decode_window=1).eval()
    peak = normalized_to_pixels(reg.decode(heat), (8, 8))[0]
    torch.testing.assert_close(peak, torch.tensor([[1.0, 1.0], [3.0, 3.0]]), rtol=0, atol=1e-3)
    everywhere = LandmarkRegressor(4, 2, 1, size=8).eval().decode(heat)
    assert float(normalized_to_pixels(everywhere, (8, 8))[0, 0, 0]) > 2.5  # between the two peaks
    torch.testing.assert_close(reg.train().decode(heat), everywhere)  # training: every cell, as without a window
    assert LandmarkRegressor(4, 2, 1, decode_window=2).config["decode_window"] == 2
    with pytest.raises(ValueError, match="decode_window"):
        LandmarkRegressor(4, 2, 1, decode_window=-1)


def test_stage_maps_path_equals_materialised_hypercolumn():
    reg = LandmarkRegressor(7 + 5 + 3, 2, 4, softmax_multiplier=5.0, size=12).double()
    maps = [torch.randn(2, c, s, s, dtype=torch.float64) for c, s in ((7, 3), (5, 6), (3, 12))]
    hyper = torch.cat([F.interpolate(m, size=(12, 12), mode="bilinear", align_corners=False) for m in maps], 1)
    with torch.no_grad():
        assert torch.allclose(reg(maps), reg(hyper), atol=1e-10)
        assert torch.allclose(
            reg(maps, size=(8, 10)),
            reg(torch.cat([F.interpolate(m, size=(8, 10), mode="bilinear", align_corners=False) for m in maps], 1)),
            atol=1e-10,
        )


def test_gradcheck_float64():
    reg = LandmarkRegressor(4, 2, 3, softmax_multiplier=3.0).double()
    hyper = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, c: _functional(reg, x, w, c),
        (hyper, reg.weight.detach().clone().requires_grad_(), reg.combine.detach().clone().requires_grad_()),
    )


def _functional(reg, x, w, c):
    return functional_call(reg, {"weight": w, "combine": c}, (x,))


def test_pixels_helpers():
    reg = LandmarkRegressor(8, 3, 2)
    feats = torch.randn(2, 8, 6, 6)
    pred = reg(feats)
    px = reg.predict_pixels(feats, (96, 80))
    assert px.shape == (2, 3, 2)
    assert torch.allclose(px, normalized_to_pixels(pred, (96, 80)))
    assert torch.allclose(LandmarkRegressor.to_pixels(pred, 96), normalized_to_pixels(pred, (96, 96)))


def test_bad_inputs_raise():
    reg = LandmarkRegressor(8, 2, 2)
    with pytest.raises(ValueError, match="hypercolumn"):
        reg(torch.randn(1, 7, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        reg([torch.randn(1, 3, 2, 2), torch.randn(1, 3, 4, 4)])
    with pytest.raises(TypeError):
        reg("features")
    with pytest.raises(ValueError, match="positive"):
        LandmarkRegressor(0, 2)


def test_regression_loss_is_huber_on_10x_coordinates():
    pred = torch.tensor([[[0.0, 0.0], [0.5, -0.02]]])
    target = torch.tensor([[[0.05, 0.0], [0.0, 0.0]]])
    # 10x differences: 0.5, 0, 5, 0.2 -> huber(delta 1): 0.125, 0, 4.5, 0.02
    expected = (0.5 * 0.5**2 + 0 + (5 - 0.5) + 0.5 * 0.2**2) / 4
    assert regression_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)


def test_regression_loss_masks_invisible_without_mutating():
    pred = torch.randn(3, 4, 2, requires_grad=True)
    target = torch.randn(3, 4, 2)
    visible = torch.rand(3, 4) > 0.4
    visible[0, 0] = True
    target[~visible] = float("nan")
    pred_before, target_before = pred.detach().clone(), target.clone()
    loss = regression_loss(pred, target, visible)
    loss.backward()
    m = visible.unsqueeze(-1).expand_as(pred)
    ref = F.smooth_l1_loss(10 * pred.detach()[m], 10 * target[m])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[~visible] == 0).all()
    assert torch.equal(pred.detach(), pred_before)
    assert torch.equal(torch.nan_to_num(target, 7.0), torch.nan_to_num(target_before, 7.0))
    none_visible = regression_loss(pred, target, torch.zeros(3, 4, dtype=torch.bool))
    assert none_visible.item() == 0.0 and none_visible.requires_grad
    with pytest.raises(ValueError):
        regression_loss(pred, target[:, :3])
