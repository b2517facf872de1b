"""Hypercolumn against an independent naive formula, and the keypoint-sampling path against the full map."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from contrastive_landmarks import Hypercolumn, load_backbone
from contrastive_landmarks.coords import cell_centers, normalized_to_pixels, pixels_to_normalized
from contrastive_landmarks.hypercolumn import normalize_stages


@pytest.fixture(scope="module")
def model() -> Hypercolumn:
    torch.manual_seed(0)
    return Hypercolumn(load_backbone("test_resnet"), size=48)


def test_matches_naive_formula(model):
    reference = timm.create_model("test_resnet", features_only=True, out_indices=(1, 2, 3, 4), zero_init_last=False)
    reference.load_state_dict({k: v for k, v in model.backbone.body.state_dict().items()}, strict=True)
    reference.eval()
    images = torch.randn(2, 3, 96, 96)
    stages = reference(images)[::-1]  # conv5_x first
    for normalize in (False, True):
        model.normalize = normalize
        blocks = [F.interpolate(s, size=(48, 48), mode="bilinear", align_corners=False) for s in stages]
        if normalize:
            blocks = [b / b.norm(dim=1, keepdim=True).clamp_min(1e-12) for b in blocks]
        expected = torch.cat(blocks, dim=1)
        with torch.no_grad():
            torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-5)
    model.normalize = False


def test_channels_property(model):
    assert model.channels == 96 + 192 + 48 + 32
    with torch.device("meta"):
        assert Hypercolumn(load_backbone("resnet50")).channels == 3840
        assert Hypercolumn(load_backbone("resnet18")).channels == 960


@pytest.mark.parametrize("size, expected", [(48, (48, 48)), ((24, 36), (24, 36)), (None, (70, 100))])
def test_output_size(size, expected):
    hc = Hypercolumn(load_backbone("test_resnet"), size=size)
    out = hc(torch.randn(1, 3, 70, 100))
    assert tuple(out.shape) == (1, hc.channels, *expected)


@pytest.mark.parametrize("normalize", [False, True])
def test_sampling_equals_full_map_at_cell_centres(model, normalize):
    """Sampling the stages at the pixel where a grid cell is centred equals that cell of the full map."""
    model.normalize = normalize
    images = torch.randn(2, 3, 96, 80)
    rows = torch.tensor([0, 5, 17, 47, 30])
    cols = torch.tensor([0, 47, 3, 22, 41])
    centres = cell_centers((48, 48), (96, 80))  # (48*48, 2) image pixels
    points = centres[rows * 48 + cols].expand(2, -1, -1)
    with torch.no_grad():
        full = model(images)  # (2, C, 48, 48)
        sampled = model.sample(images, points)  # (2, 5, C)
    expected = full[:, :, rows, cols].transpose(1, 2)
    torch.testing.assert_close(sampled, expected, rtol=1e-5, atol=1e-5)
    model.normalize = False


def test_sampling_between_cells_is_bilinear_in_stages(model):
    """Off-grid points: equal to sampling each native stage bilinearly (independent grid_sample call)."""
    images = torch.randn(1, 3, 64, 64)
    points = torch.tensor([[[10.3, 20.7], [-0.5, 63.5], [31.5, 0.0]]])
    with torch.no_grad():
        maps = model.stage_maps(images)
        sampled = model.sample(images, points)
        grid = ((points + 0.5) / 64 * 2 - 1).unsqueeze(2)
        expected = torch.cat(
            [F.grid_sample(m, grid, align_corners=False, padding_mode="border")[..., 0].transpose(1, 2) for m in maps],
            dim=-1,
        )
    torch.testing.assert_close(sampled, expected)


def test_sampling_rejects_outside_points(model):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="outside the 32x32 image"):
        model.sample(images, torch.tensor([[[40.0, 3.0]]]))
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        model.sample(images, torch.zeros(1, 3))


def test_coordinate_round_trip():
    points = torch.rand(3, 7, 2) * 90
    back = normalized_to_pixels(pixels_to_normalized(points, (96, 80)), (96, 80))
    torch.testing.assert_close(back, points)
    corners = pixels_to_normalized(torch.tensor([[-0.5, -0.5], [79.5, 95.5]]), (96, 80))
    torch.testing.assert_close(corners, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_normalize_stages_blocks_have_unit_norm():
    features = torch.randn(2, 10, 3, 3)
    out = normalize_stages(features, (4, 6))
    torch.testing.assert_close(out[:, :4].norm(dim=1), torch.ones(2, 3, 3))
    torch.testing.assert_close(out[:, 4:].norm(dim=1), torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="do not split"):
        normalize_stages(features, (4, 5))


def test_image_stage_maps_normalise_with_the_backbones_preprocessing(model):
    """[0, 1] images -> (x - mean) / std (written out here) -> one (B, C_s, ceil(H/s), ceil(W/s)) map per stage."""
    model.eval()
    images = torch.rand(2, 3, 50, 37, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor(model.backbone.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.preprocessing.std).view(1, 3, 1, 1)
    with torch.no_grad():
        maps = model.image_stage_maps(images)
        expected = model.stage_maps((images - mean) / std)
        as_uint8 = model.image_stage_maps((images * 255).round().to(torch.uint8))
    strides = (32, 16, 8, 4)  # conv5_x .. conv2_x
    assert [tuple(m.shape) for m in maps] == [
        (2, c, -(-50 // s), -(-37 // s)) for c, s in zip(model.stage_channels, strides)
    ]
    for got, want, quantised in zip(maps, expected, as_uint8):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(quantised, got, rtol=0, atol=0.05)
    with pytest.raises(ValueError, match=r"\[0, 1\]|normali"):
        model.image_stage_maps((images - 0.5) * 10)  # already-normalised-looking input is refused
    model.train()


def test_heads_and_hypercolumn_state_their_arguments_one_way():
    """config (config.json) and extra_repr come from one list of fields (Configurable); texts as they were."""
    from contrastive_landmarks import LandmarkRegressor, SpatialProjector

    projector = SpatialProjector(368, dim=8, size=12)
    assert (
        repr(projector)
        == "SpatialProjector(in_channels=368, dim=8, mode='linear', softmax_multiplier=7.0, size=(12, 12))"
    )
    assert projector.config == {
        "in_channels": 368,
        "dim": 8,
        "mode": "linear",
        "softmax_multiplier": 7.0,
        "size": [12, 12],
    }
    regressor = LandmarkRegressor(368, 3, heatmaps_per_landmark=2, size=(12, 10), init="paper")
    assert repr(regressor) == (
        "LandmarkRegressor(in_channels=368, num_landmarks=3, heatmaps_per_landmark=2, init='paper', "
        "softmax_multiplier=100.0, size=(12, 10), decode_window=None)"
    )
    for head in (projector, regressor):
        assert type(head)(**head.config).config == head.config
    backbone = load_backbone("test_resnet")
    for size, normalize in (((12, 10), True), (None, False)):
        hc = Hypercolumn(backbone, size=size, normalize=normalize)
        assert hc.config == {"size": None if size is None else list(size), "normalize": normalize}
        assert Hypercolumn(backbone, **hc.config).config == hc.config
        assert repr(hc).startswith(f"Hypercolumn(\n  size={size!r}, normalize={normalize}\n")
