"""match(): recovering known translations / warps, the soft variant, descriptor maps of any size, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastive_landmarks import Hypercolumn, load_backbone, match, match_descriptors
from contrastive_landmarks.coords import normalized_to_pixels, pixels_to_normalized

POINTS = torch.tensor([[[20.0, 20.0], [30.0, 40.0], [45.0, 15.0], [32.0, 32.0], [15.0, 45.0]]])


@pytest.fixture
def texture() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    coarse = F.interpolate(torch.rand(1, 3, 40, 40, generator=generator), size=(160, 160), mode="bicubic")
    fine = F.interpolate(torch.rand(1, 3, 80, 80, generator=generator), size=(160, 160), mode="bilinear")
    return coarse + 0.3 * fine


@pytest.fixture
def shallow_model() -> Hypercolumn:
    torch.manual_seed(0)
    return Hypercolumn(load_backbone("test_resnet", stages=("conv1", "conv2_x", "conv3_x")), size=None)


def test_recovers_translation(texture, shallow_model):
    dx, dy = 5, -3
    ref = texture[:, :, 40:104, 40:104]
    target = texture[:, :, 40 + dy : 104 + dy, 40 + dx : 104 + dx]
    result = match(shallow_model, ref, POINTS, target)
    expected = POINTS - torch.tensor([dx, dy])
    assert (result.points - expected).norm(dim=-1).max() < 1.0
    assert result.similarity.shape == (1, 5) and bool((result.similarity <= 1 + 1e-5).all())


def test_recovers_affine_warp(texture, shallow_model):
    ref = texture[:, :, 40:104, 40:104]
    zoom, shift = 1.05, torch.tensor([0.05, -0.03])
    theta = torch.tensor([[[1 / zoom, 0, shift[0]], [0, 1 / zoom, shift[1]]]])
    target = F.grid_sample(
        ref, F.affine_grid(theta, (1, 3, 64, 64), align_corners=False), align_corners=False, padding_mode="border"
    )
    # target pixel q samples ref at q_n / zoom + shift, so ref point p lands at (p_n - shift) * zoom
    expected = normalized_to_pixels((pixels_to_normalized(POINTS, (64, 64)) - shift) * zoom, (64, 64))
    error = (match(shallow_model, ref, POINTS, target).points - expected).norm(dim=-1)
    # nearest-neighbour answers are whole pixels (up to 0.71 px from a non-integer truth)
    assert error.mean() < 0.8 and error.max() < 1.5


def _log_bump_field(size: int, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """(1, K, size, size) map: channel k is the log of a Gaussian bump at centres[k] (pixels)."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    d2 = (xs - centres[:, 0, None, None]) ** 2 + (ys - centres[:, 1, None, None]) ** 2
    return (-d2 / (2 * sigma**2))[None]


def test_soft_argmax_finds_subpixel_location():
    centres = torch.tensor([[10.3, 20.6], [25.5, 8.25], [8.0, 22.75]])
    target = _log_bump_field(32, centres, sigma=1.5)
    queries = torch.eye(3)[None]  # query k reads channel k: score = log of a Gaussian around centres[k]
    soft = match_descriptors(queries, target, similarity="dot", method="soft", temperature=1.0)
    hard = match_descriptors(queries, target, similarity="dot", method="nn")
    assert (soft.points[0] - centres).abs().max() < 1e-3
    assert (hard.points[0] - centres).abs().max() <= 0.5


def test_descriptor_map_smaller_than_image_maps_to_image_pixels():
    """A 16x16 map covering a 64x64 image: cell (i, j) is centred at pixel (4j + 1.5, 4i + 1.5)."""
    target = torch.zeros(1, 4, 16, 16)
    target[0, 0, 3, 10] = 1.0
    target[0, 1, 0, 0] = 1.0
    result = match_descriptors(torch.eye(4)[None, :2], target, image_size=(64, 64), similarity="dot")
    torch.testing.assert_close(result.points[0], torch.tensor([[41.5, 13.5], [1.5, 1.5]]))


def test_batched_and_generic_model(texture):
    """A plain module returning (B, C, h, w) maps works; each batch item is matched independently."""
    model = torch.nn.Conv2d(3, 8, 5, padding=2)
    ref = torch.cat([texture[:, :, 40:104, 40:104], texture[:, :, 60:124, 30:94]])
    result = match(model, ref, POINTS.expand(2, -1, -1), ref, similarity="cosine")
    assert result.points.shape == (2, 5, 2)
    torch.testing.assert_close(result.points, POINTS.expand(2, -1, -1))


def test_bad_input(shallow_model):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="outside the 32x32 image"):
        match(shallow_model, images, torch.tensor([[[33.0, 1.0]]]), images)
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        match(shallow_model, images, torch.zeros(1, 2), images)
    with pytest.raises(ValueError, match="3 channels"):
        match(shallow_model, torch.randn(1, 4, 32, 32), torch.zeros(1, 1, 2), images)
    with pytest.raises(ValueError, match="method"):
        match(shallow_model, images, torch.zeros(1, 1, 2), images, method="best")
    with pytest.raises(ValueError, match="needs a Hypercolumn"):
        match(torch.nn.Conv2d(3, 4, 1), images, torch.zeros(1, 1, 2), images, similarity="stage_cosine")
