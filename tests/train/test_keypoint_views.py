"""The one labelled-views module: one augmentation with the two recipes' presets, one flip, points moved with pixels."""

from __future__ import annotations

import pytest
import torch

from contrastive_landmarks import Hypercolumn, load_backbone
from contrastive_landmarks.tps import TPSParams
from contrastive_landmarks.train import Augment, ViewAugment, fit_regressor
from contrastive_landmarks.train.keypoint_views import FROZEN_WARP, KeypointViews, flip_views, photometric


def test_presets_are_the_recipes_defaults():
    assert ViewAugment.end_to_end() == ViewAugment() and ViewAugment().crops and ViewAugment().warp is None
    frozen = ViewAugment.frozen()
    assert frozen == Augment() and isinstance(frozen, ViewAugment)
    assert frozen.warp == FROZEN_WARP and frozen.flip and not frozen.crops
    assert not (frozen.brightness or frozen.contrast or frozen.blur or frozen.grayscale)
    for off in (ViewAugment.none(), Augment.none()):
        assert not off.crops and not off.flip and off.warp is None and off.grayscale == 0.0
    assert type(Augment.none()) is Augment and type(ViewAugment.none()) is ViewAugment
    assert Augment(warp=None, flip=True).warp is None  # the keywords fit_regressor's callers use


def test_one_flip_mirrors_and_swaps_the_pairs():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    points = torch.tensor([[[1.0, 2.0], [3.0, 1.0], [0.0, 0.0]]]).repeat(2, 1, 1)
    visible = torch.tensor([[True, False, True]]).repeat(2, 1)
    g = torch.Generator().manual_seed(0)
    flip = torch.rand(2, generator=torch.Generator().manual_seed(0)) < 0.5
    out, kp, vis = flip_views(images, points, visible, [(0, 1)], g)
    for b in range(2):
        if flip[b]:
            assert torch.equal(out[b], images[b].flip(-1))
            assert torch.equal(kp[b], torch.tensor([[4 - 3.0, 1.0], [4 - 1.0, 2.0], [4.0, 0.0]]))
            assert vis[b].tolist() == [False, True, True]
        else:
            assert torch.equal(out[b], images[b]) and torch.equal(kp[b], points[b]) and torch.equal(vis[b], visible[b])


def test_steps_that_are_off_draw_nothing():
    images, points = torch.rand(3, 3, 16, 16), torch.rand(3, 2, 2) * 15
    visible = torch.ones(3, 2, dtype=torch.bool)
    for augment, pairs in ((ViewAugment.none(), [(0, 1)]), (Augment(warp=None), None), (Augment(warp=None), [])):
        g = torch.Generator().manual_seed(4)
        out, kp, vis = augment(images, points, visible, pairs, g)
        assert torch.equal(out, images) and torch.equal(kp, points) and torch.equal(vis, visible)
        assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(4)))


def test_photometry_keeps_points_and_grey_images_grey():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 12, 12, generator=g)
    images[:4] = images[:4, :1].expand(-1, 3, -1, -1)  # four grey images
    augment = ViewAugment(brightness=0.3, contrast=0.3, blur=0.5, grayscale=1.0)
    out = photometric(images, torch.Generator().manual_seed(1), augment)
    assert out.min() >= 0 and out.max() <= 1
    # every colour image turned grey (grayscale=1), the grey ones not made grey again (still equal channels)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert photometric(images, g, ViewAugment.none()) is images


def _dot_views(warp: TPSParams | None):
    g = torch.Generator().manual_seed(0)
    frames, points = [], []
    for _ in range(6):
        frame = torch.rand(3, 70, 90, generator=g) * 0.2
        xy = torch.stack([torch.randint(20, 70, (1,), generator=g), torch.randint(20, 50, (1,), generator=g)], 1)
        x, y = xy[0].tolist()
        frame[0, y - 2 : y + 3, x - 2 : x + 3] = 1.0
        frames.append(frame)
        points.append(xy.float())
    views = KeypointViews(frames, torch.stack(points), torch.ones(6, 1, dtype=torch.bool), 64)
    augment = ViewAugment(rotation=30.0, brightness=0.0, contrast=0.0, blur=0.0, grayscale=0.0, warp=warp)
    return views.sample(torch.arange(6).repeat(3), torch.Generator().manual_seed(2), augment)


@pytest.mark.parametrize("warp", [None, TPSParams(warpsd_all=0.001, warpsd_subset=0.0, transsd=0.05, rotsd=10.0)])
def test_crops_and_warps_move_points_with_pixels(warp):
    images, points, visible = _dot_views(warp)
    checked = 0
    for image, point, vis in zip(images, points, visible):
        if vis[0] and bool(((point[0] > 5) & (point[0] < 58)).all()):
            weight = (image[0] - image[1]).clamp_min(0.4) - 0.4
            ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
            peak = torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
            assert (peak - point[0]).norm() < 1.5, (peak, point)
            checked += 1
    assert checked >= 10


def test_fit_regressor_takes_a_photometric_augment_and_refuses_crops():
    torch.manual_seed(0)
    features = Hypercolumn(load_backbone("test_resnet"), size=12)
    g = torch.Generator().manual_seed(0)
    data = [
        {"image": torch.rand(3, 24, 24, generator=g), "keypoints": torch.rand(2, 2, generator=g) * 20 + 2}
        | {"visible": torch.ones(2, dtype=torch.bool)}
        for _ in range(6)
    ]
    with pytest.raises(ValueError, match="not crops"):
        fit_regressor(features, data, augment=ViewAugment(), steps=2, warn=False)
    photometric_frozen = Augment(brightness=0.3, contrast=0.3, grayscale=0.5)
    result = fit_regressor(features, data, augment=photometric_frozen, steps=2, batch_size=4, copies=2, warn=False)
    assert result.regressor.num_landmarks == 2
