"""Keypoint-exact transforms: checked against ramp images, whose pixel values are their own coordinates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastive_landmarks.coords import pixels_to_normalized
from contrastive_landmarks.data.transforms import (
    BorderCrop,
    BoxCrop,
    CenterCrop,
    Compose,
    Crop,
    LandmarkBox,
    Letterbox,
    Resize,
    celeba_transform,
    crop_image,
    face_box_crop,
    resize_points,
    threehundredw_transform,
)


def ramp_sample(height: int, width: int, points: torch.Tensor) -> dict:
    """An image whose channel 0 holds x and channel 1 holds y of each pixel centre."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    image = torch.stack([xs, ys, torch.zeros_like(xs)])
    return {
        "image": image,
        "keypoints": points.double(),
        "visible": torch.ones(len(points), dtype=torch.bool),
        "index": 0,
    }


def read_at(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear read of channels 0, 1 at pixel points (the naive reference of where a point went)."""
    grid = pixels_to_normalized(points, tuple(image.shape[-2:]))[None, None]
    values = F.grid_sample(image[None, :2], grid, mode="bilinear", align_corners=False)
    return values[0, :, 0].T


def interior_points(n: int, height: int, width: int, margin: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = margin + torch.rand(n, generator=g, dtype=torch.float64) * (width - 1 - 2 * margin)
    y = margin + torch.rand(n, generator=g, dtype=torch.float64) * (height - 1 - 2 * margin)
    return torch.stack([x, y], -1)


# Antialiased shrinking (torch and Pillow alike) clips its triangle filter at whole taps, which moves a
# linear ramp by up to ~0.06 px; enlarging and cropping are exact.
@pytest.mark.parametrize(
    ("transform", "atol"),
    [
        (Resize((150, 90)), 0.1),  # up in y, down in x
        (Resize(48), 0.1),
        (Resize((140, 200)), 1e-9),
        (Resize(120, shorter_side=True), 1e-9),
        (Crop(7, 11, 56, 80), 1e-9),
        (BorderCrop(6), 1e-9),
        (CenterCrop(60), 1e-9),
        (Compose([Resize(136), BorderCrop(20)]), 1e-9),
    ],
)
def test_transform_moves_points_with_pixels(transform, atol):
    points = interior_points(20, 70, 100, margin=25)
    sample = ramp_sample(70, 100, points)
    out = transform(sample)
    # the pixel now under each transformed point must carry the point's original coordinates
    torch.testing.assert_close(read_at(out["image"], out["keypoints"]), points, atol=atol, rtol=0)


def test_box_crop_and_landmark_box_move_points_with_pixels():
    points = interior_points(5, 90, 110, margin=35, seed=3)
    sample = ramp_sample(90, 110, points)
    for crop in (
        Compose([LandmarkBox(scale=1.0), BoxCrop(64, scale=2.5)]),
        Compose([LandmarkBox(scale=1.0), BoxCrop(40, scale=3.0, shift=(0.1, -0.2))]),
    ):
        out = crop(sample)
        assert out["image"].shape[-2:] == (crop.transforms[1].size)
        inside = ((out["keypoints"] > 2) & (out["keypoints"] < out["image"].shape[-1] - 3)).all(-1)
        assert inside.sum() >= 3
        torch.testing.assert_close(read_at(out["image"], out["keypoints"])[inside], points[inside], atol=0.1, rtol=0)


def test_celeba_transform_matches_the_papers_formula():
    points = interior_points(5, 218, 178, margin=60, seed=1)
    sample = ramp_sample(218, 178, points)
    out = celeba_transform()(sample)
    assert out["image"].shape == (3, 96, 96)
    # naive: y -= 30, then scale by 136/178 in the pixel-centre convention, then -20
    expected = points.clone()
    expected[:, 1] -= 30
    expected = (expected + 0.5) * 136 / 178 - 0.5 - 20
    torch.testing.assert_close(out["keypoints"], expected)
    torch.testing.assert_close(read_at(out["image"], out["keypoints"]), points, atol=0.1, rtol=0)


def test_threehundredw_transform_centres_the_box():
    points = interior_points(68, 300, 400, margin=130, seed=2)
    sample = ramp_sample(300, 400, points)
    sample["box"] = torch.tensor([150.0, 100.0, 254.0, 204.0], dtype=torch.float64)  # 104 px wide
    out = threehundredw_transform()(sample)
    assert out["image"].shape == (3, 96, 96)
    torch.testing.assert_close(read_at(out["image"], out["keypoints"]), points, atol=0.1, rtol=0)
    # the box is 52/100 of the crop and the crop is centred 2/52 box widths above the box centre
    centre = (out["box"][:2] + out["box"][2:]) / 2
    assert abs(float(centre[0]) - 47.5) < 1.0
    assert float(centre[1]) > 47.5  # crop centre above the box centre -> box centre lower in the crop


def test_crop_pads_outside_with_zeros():
    image = torch.ones(3, 10, 10)
    out = crop_image(image, -3, 8, 6, 6)
    assert out.shape == (3, 6, 6)
    assert out[:, :3].abs().sum() == 0 and out[:, 3:, 2:].abs().sum() == 0
    assert torch.all(out[:, 3:, :2] == 1)


def test_resize_points_round_trip_and_bounds():
    points = torch.tensor([[-0.5, -0.5], [79.5, 79.5], [10.0, 3.0]])
    there = resize_points(points, (80, 80), (96, 48))
    torch.testing.assert_close(there[:2], torch.tensor([[-0.5, -0.5], [47.5, 95.5]]))
    torch.testing.assert_close(resize_points(there, (96, 48), (80, 80)), points)


def test_face_box_crop_jitter_is_seeded_and_bad_input_is_named():
    points = interior_points(5, 80, 80, margin=25, seed=4)
    sample = ramp_sample(80, 80, points)
    a = face_box_crop(64, jitter_scale=0.2, jitter_shift=0.1, generator=torch.Generator().manual_seed(5))(sample)
    b = face_box_crop(64, jitter_scale=0.2, jitter_shift=0.1, generator=torch.Generator().manual_seed(5))(sample)
    torch.testing.assert_close(a["keypoints"], b["keypoints"])
    with pytest.raises(ValueError, match="box"):
        BoxCrop(32)({"image": torch.zeros(3, 8, 8)})
    with pytest.raises(ValueError, match="border"):
        BorderCrop(5)({"image": torch.zeros(3, 8, 8)})


def test_paper_resize_scales_the_border():
    from contrastive_landmarks.data.transforms import aflw_transform, paper_resize
    from contrastive_landmarks.train.moco_views import get_preset

    assert paper_resize(96) == 136 and paper_resize(64) == 90
    for size in (48, 64, 96, 128):
        assert paper_resize(size) == get_preset("faces", size).resize  # MoCo sees the same framing
    sample = {
        "image": torch.rand(3, 80, 80),
        "keypoints": torch.tensor([[40.0, 30.0]]),
        "visible": torch.ones(1, dtype=torch.bool),
    }
    out = aflw_transform(64)(sample)
    assert out["image"].shape == (3, 64, 64)
    # 80 -> 90 resize then a 13-px border: pixel-centre convention (x + 0.5) * 90 / 80 - 0.5 - 13
    expected = torch.tensor([[40.5 * 90 / 80 - 0.5 - 13, 30.5 * 90 / 80 - 0.5 - 13]])
    torch.testing.assert_close(out["keypoints"], expected)


def test_landmark_box_is_the_box_of_the_visible_points_for_any_layout():
    points = torch.tensor([[10.0, 20], [30, 25], [float("nan"), float("nan")], [200, 200], [22, 40]])
    sample = {
        "image": torch.zeros(3, 60, 60),
        "keypoints": points,
        "visible": torch.tensor([True, True, False, False, True]),
    }
    box = LandmarkBox()(sample)["box"]
    torch.testing.assert_close(box, torch.tensor([10.0, 20, 30, 40]))  # NaN and the invisible outlier ignored
    # scale grows the box about its centre (a 10 % margin each side at 1.2)
    torch.testing.assert_close(LandmarkBox(1.2)(sample)["box"], torch.tensor([8.0, 18, 32, 42]))
    # 17 animal keypoints: every point inside the crop (the old 5-point face framing used points 0/1/3/4)
    animal = interior_points(17, 120, 160, margin=30, seed=7)
    out = Compose([LandmarkBox(1.1), BoxCrop(64)])(ramp_sample(120, 160, animal))
    assert bool(((out["keypoints"] > -0.5) & (out["keypoints"] < 63.5)).all())
    torch.testing.assert_close(read_at(out["image"], out["keypoints"]), animal, atol=0.1, rtol=0)
    with pytest.raises(ValueError, match="no visible keypoint"):
        LandmarkBox()(
            {"image": torch.zeros(3, 8, 8), "keypoints": torch.zeros(2, 2), "visible": torch.zeros(2, dtype=torch.bool)}
        )


def test_face_framing_only_when_asked_and_bad_indices_are_named():
    points = torch.tensor([[30.0, 30], [50, 30], [40, 40], [32, 50], [48, 50]])
    sample = {"image": torch.zeros(3, 80, 80), "keypoints": points, "visible": torch.ones(5, dtype=torch.bool)}
    face = LandmarkBox(2.0, upper=(0, 1), lower=(3, 4))(sample)["box"]
    torch.testing.assert_close(face, torch.tensor([20.0, 20, 60, 60]))  # side 2 x eye-to-mouth (20 px)
    wide = {**sample, "keypoints": torch.rand(3, 2) * 50, "visible": torch.ones(3, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"exceed the sample's 3 keypoints"):
        LandmarkBox(1.0, upper=(0, 1), lower=(3, 4))(wide)
    # face_box_crop is the 5-point framing: other counts raise instead of framing the wrong points
    many = ramp_sample(80, 80, interior_points(68, 80, 80, margin=20))
    with pytest.raises(ValueError, match=r"5-point layout, but the sample has 68"):
        face_box_crop(64)(many)
    # 68-point faces: eye corners (36, 45) and mouth corners (48, 54), stated by the caller
    out = face_box_crop(64, upper=(36, 45), lower=(48, 54), num_keypoints=68)(many)
    assert out["image"].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="both upper and lower"):
        LandmarkBox(1.0, upper=(0, 1))


@pytest.mark.parametrize(("height", "width", "size"), [(470, 640, 96), (747, 832, 96), (90, 60, 128), (50, 50, 50)])
def test_letterbox_keeps_the_aspect_and_maps_points_back(height, width, size):
    points = interior_points(12, height, width, margin=3, seed=height)
    out = Letterbox(size)(ramp_sample(height, width, points))
    assert out["image"].shape == (3, size, size)
    scale, pad_x, pad_y = out["letterbox"]
    assert scale == pytest.approx(size / max(height, width))
    # one scale on both axes, the frame centred exactly (odd padding: half a pixel each side), the padding zero
    assert pad_x == pytest.approx((max(height, width) - width) / 2 * scale)
    assert pad_y == pytest.approx((max(height, width) - height) / 2 * scale)
    # the very crop a model's first pass takes at detect (framing), so fitting and prediction cannot drift
    from contrastive_landmarks.framing import crop_images, frame_boxes

    first_pass = crop_images(ramp_sample(height, width, points)["image"][None], frame_boxes([(height, width)]), size)
    torch.testing.assert_close(out["image"], first_pass[0].to(out["image"].dtype))
    torch.testing.assert_close(out["keypoints"], (points + 0.5) * scale - 0.5 + torch.tensor([pad_x, pad_y]).double())
    # the pixels moved with the points (shrinking: antialias taps, see above), and the points map back
    atol = 0.1 if size < max(height, width) else 1e-5  # float32 sampling
    torch.testing.assert_close(read_at(out["image"], out["keypoints"]), points, atol=atol, rtol=0)
    back = Letterbox.to_source(out["keypoints"], out["letterbox"])
    assert float((back - points).abs().max()) < 1e-6
    # batched (default collate turns the tuple into three (B,) tensors)
    batched = [torch.tensor([v, v]) for v in out["letterbox"]]
    back2 = Letterbox.to_source(torch.stack([out["keypoints"], out["keypoints"]]), batched)
    torch.testing.assert_close(back2, torch.stack([points, points]))
