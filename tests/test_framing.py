"""Square crops of frames: points and pixels move together, and the boxes are where they should be."""

import pytest
import torch

from contrastive_landmarks.framing import (
    Framing,
    crop_images,
    crop_points,
    frame_boxes,
    framing_for_poses,
    keypoint_boxes,
    uncrop_points,
)


def _dot_frame(h: int, w: int, x: int, y: int) -> torch.Tensor:
    frame = torch.zeros(3, h, w)
    frame[:, y - 1 : y + 2, x - 1 : x + 2] = 1.0  # a 3x3 dot centred on pixel (x, y)
    return frame


def _peak(image: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centroid (x, y) of a crop's bright pixels."""
    weight = image[0].clamp_min(0)
    ys, xs = torch.meshgrid(torch.arange(image.shape[-2]), torch.arange(image.shape[-1]), indexing="ij")
    return torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


def test_crop_and_uncrop_points_are_inverse():
    points = torch.rand(3, 7, 2) * 300
    boxes = torch.tensor([[100.0, 80.0, 150.0, 30.0], [10.0, 200.0, 50.0, -70.0], [0.0, 0.0, 400.0, 0.0]])
    back = uncrop_points(crop_points(points, boxes, 64), boxes, 64)
    torch.testing.assert_close(back, points, atol=1e-3, rtol=0)


@pytest.mark.parametrize("angle", [0.0, 30.0, -50.0])
@pytest.mark.parametrize("side", [40.0, 200.0])  # upsampled and (antialiased) downsampled crops
def test_the_pixels_land_where_crop_points_puts_them(angle, side):
    frame = _dot_frame(120, 160, 97, 41)
    box = torch.tensor([[90.0, 50.0, side, angle]])
    crop = crop_images([frame], box, 48)[0]
    expected = crop_points(torch.tensor([[[97.0, 41.0]]]), box, 48)[0, 0]
    assert (_peak(crop) - expected).norm() < 0.35


def test_frame_box_letterboxes_the_whole_frame():
    frame = torch.rand(3, 30, 50)
    crop = crop_images([frame], frame_boxes([(30, 50)]), 50)[0]
    torch.testing.assert_close(crop[:, 10:40], frame, atol=1e-5, rtol=0)  # a 50x50 box: 10 rows of padding each side
    assert crop[:, :9].abs().max() == 0 and crop[:, 41:].abs().max() == 0


def test_keypoint_boxes():
    points = torch.tensor([[[10.0, 20.0], [30.0, 60.0], [500.0, 500.0]], [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]])
    visible = torch.tensor([[True, True, False], [False, False, False]])
    boxes = keypoint_boxes(points, visible, [(100, 200), (100, 200)], margin=1.5, min_fraction=0.1)
    torch.testing.assert_close(boxes[0], torch.tensor([20.0, 40.0, 60.0, 0.0]))  # longer side 40 x 1.5
    torch.testing.assert_close(boxes[1], frame_boxes([(100, 200)])[0])  # nothing visible: the whole frame
    small = keypoint_boxes(points[:1, :1], None, [(100, 200)], min_fraction=0.25)
    assert float(small[0, 2]) == 50.0  # one point: the smallest box, a quarter of the longer side


def test_keypoint_boxes_cap_the_side_at_a_fraction_of_the_frame_but_keep_every_point():
    points = torch.tensor([[[10.0, 10.0], [90.0, 50.0]], [[0.0, 0.0], [99.0, 20.0]]])  # extents 80 and 99
    sizes = [(60, 100), (60, 100)]
    free = keypoint_boxes(points, None, sizes, margin=1.5)
    capped = keypoint_boxes(points, None, sizes, margin=1.5, max_fraction=1.0)
    assert free[:, 2].tolist() == [120.0, 148.5]  # margin alone: wider than the 100-px frame
    assert capped[:, 2].tolist() == [100.0, 100.0]  # at most the frame's longer side
    assert keypoint_boxes(points, None, sizes, margin=1.5, max_fraction=0.5)[:, 2].tolist() == [80.0, 99.0]
    torch.testing.assert_close(capped[:, :2], free[:, :2])  # same centres
    inside = crop_points(points, capped, 64)
    assert bool(((inside >= -0.5) & (inside <= 63.5)).all())  # every point still in its crop


def test_a_framing_recorded_before_max_fraction_keeps_no_cap():
    assert Framing().max_fraction == 1.0
    assert Framing.from_config({"stages": 2, "margin": 1.5, "min_fraction": 0.2}).max_fraction is None
    assert Framing.from_config(Framing().config) == Framing()
    with pytest.raises(ValueError, match="max_fraction"):
        Framing(min_fraction=0.5, max_fraction=0.4)


def test_framing_for_poses_keeps_a_second_pass_only_where_it_looks_closer():
    sizes = [(100, 200)] * 3
    small = torch.tensor([[[50.0, 40.0], [90.0, 60.0]]]).repeat(3, 1, 1)  # 40 px wide: crops of 60 of 200
    large = torch.tensor([[[10.0, 10.0], [190.0, 90.0]]]).repeat(3, 1, 1)  # 180 px: capped at the whole 200
    seen = torch.ones(3, 2, dtype=torch.bool)
    auto = Framing(stages=None)
    assert framing_for_poses(auto, small, seen, sizes) == Framing(stages=2)
    assert framing_for_poses(auto, large, seen, sizes) == Framing(stages=1)
    # the median frame decides; a rule already decided is kept
    mixed = torch.cat([small[:1], large[:2]])
    assert framing_for_poses(auto, mixed, seen, sizes).stages == 1
    assert framing_for_poses(Framing(stages=2), large, seen, sizes) == Framing(stages=2)
    # without the cap, margin alone would make 270-px crops: the share is still above the threshold
    uncapped = Framing(stages=None, max_fraction=None)
    assert framing_for_poses(uncapped, large, seen, sizes) == Framing(stages=1, max_fraction=None)


def test_framing_checks_its_values():
    with pytest.raises(ValueError, match="stages"):
        Framing(stages=3)
    with pytest.raises(ValueError, match="margin"):
        Framing(margin=0.5)
