"""Metrics on hand-computed cases, including invisible points."""

from __future__ import annotations

import pytest
import torch

from contrastive_landmarks.metrics import EYE_INDICES, inter_ocular_error, matching_error, pck, pck_legacy


def test_inter_ocular_error_hand_computed():
    # image 0: eyes 10 px apart; image 1: eyes 20 px apart
    target = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]], [[0.0, 0.0], [0.0, 20.0], [10.0, 10.0]]])
    pred = target.clone()
    pred[0, 2] += torch.tensor([3.0, 4.0])  # 5 px / 10 -> 50 %
    pred[1, 0] += torch.tensor([2.0, 0.0])  # 2 px / 20 -> 10 %
    assert inter_ocular_error(pred, target).item() == pytest.approx((50 + 10) / 6)
    visible = torch.tensor([[True, True, False], [True, True, True]])
    assert inter_ocular_error(pred, target, visible=visible).item() == pytest.approx(10 / 5)
    per = inter_ocular_error(pred, target, visible=visible, reduction="none")
    assert torch.isnan(per[0, 2]) and per[1, 0].item() == pytest.approx(10.0)
    # eye indices by dataset name, and 300W's outer eye corners
    assert EYE_INDICES["300w"] == (36, 45) and EYE_INDICES["mafl"] == (0, 1)
    t68 = torch.zeros(1, 68, 2)
    t68[0, 45] = torch.tensor([40.0, 0.0])
    p68 = t68.clone()
    p68[0, 10] = torch.tensor([4.0, 0.0])
    assert inter_ocular_error(p68, t68, "300w").item() == pytest.approx(10 / 68)


def test_inter_ocular_error_scale_free_and_errors():
    target = torch.rand(4, 5, 2) * 50
    pred = target + torch.randn(4, 5, 2)
    assert inter_ocular_error(pred * 3, target * 3).item() == pytest.approx(inter_ocular_error(pred, target).item())
    with pytest.raises(ValueError, match="inter-ocular"):
        inter_ocular_error(pred, torch.zeros(4, 5, 2))
    with pytest.raises(ValueError, match="unknown dataset"):
        inter_ocular_error(pred, target, "cats")
    with pytest.raises(ValueError, match="visible"):
        inter_ocular_error(pred, target, visible=torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError):
        inter_ocular_error(pred, target[:, :4])


def test_pck_hand_computed():
    # 100 x 60 image: threshold 5 px (longer side 100); a fraction, a point at the threshold correct (<=)
    target = torch.zeros(2, 3, 2) + 30
    offsets = torch.tensor(
        [
            [[4.9, 0.0], [0.0, 5.1], [3.0, 4.0]],  # correct, wrong, exactly 5: correct (<=)
            [[0.0, 0.0], [40.0, 0.0], [1.0, 1.0]],
        ]
    )  # correct, wrong, correct
    pred = target + offsets
    assert pck(pred, target, image_size=(60, 100)).item() == pytest.approx(4 / 6)
    assert pck(pred, target, threshold=5.0).item() == pytest.approx(4 / 6)  # the same threshold, in pixels
    visible = torch.tensor([[True, False, True], [True, False, False]])
    assert pck(pred, target, visible, image_size=(60, 100)).item() == pytest.approx(1.0)
    assert pck(pred, target, visible, image_size=(60, 100), alpha=0.01).item() == pytest.approx(1 / 3)
    per_image = torch.tensor([[60.0, 100.0], [20.0, 20.0]])  # image 1: threshold 1 px
    assert pck(pred, target, image_size=per_image).item() == pytest.approx(3 / 6)
    assert pck(pred, target, threshold=torch.tensor([5.0, 1.0])).item() == pytest.approx(3 / 6)
    nan_target = target.clone()
    nan_target[0, 1] = float("nan")  # an unlabelled point, left out by visible
    assert pck(pred, nan_target, visible, threshold=5.0).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="either a threshold"):
        pck(pred, target, threshold=5.0, image_size=100)
    with pytest.raises(ValueError, match="either a threshold"):
        pck(pred, target)


def test_pck_legacy_truncation_and_averaging():
    # 48-px images: box units == pixels * 47/47; threshold 2.4 but distances are truncated
    target = torch.full((2, 2, 2), 20.0)
    pred = target.clone()
    pred[0, 0, 0] += 2.9  # trunc -> 2 < 2.4: counted correct by the legacy metric, wrong by pck (2.9 > 2.4)
    pred[1, 0, 0] += 3.2  # trunc -> 3: wrong
    pred[0, 1, 0] += 1.0  # correct
    pred[1, 1, 0] += 10.0  # wrong
    legacy = pck_legacy(pred, target, image_size=48)
    assert legacy.item() == pytest.approx((0.5 + 0.5) / 2)  # a fraction, as pck
    assert pck(pred, target, image_size=48).item() == pytest.approx(1 / 4)
    # per-part then per-batch averaging: part 1 invisible in batch 2 -> only part 0 counts there
    visible = torch.tensor([[True, True], [True, False]])
    b = pck_legacy(pred, target, visible, image_size=48, batch_size=1)
    assert b.item() == pytest.approx(((1.0 + 1.0) / 2 + 0.0) / 2)
    # ground truth at a box coordinate <= 0 is dropped
    target0 = target.clone()
    target0[:, 1, 0] = 0.0
    assert pck_legacy(pred, target0, image_size=48).item() == pytest.approx(0.5)


def test_matching_error_rescales_to_70_pixel_frame():
    target = torch.zeros(1, 2, 2)
    pred = torch.tensor([[[9.6, 0.0], [0.0, 0.0]]])
    assert matching_error(pred, target, 96).item() == pytest.approx(9.6 * 70 / 96 / 2)
    visible = torch.tensor([[True, False]])
    assert matching_error(pred, target, 96, visible=visible).item() == pytest.approx(7.0)
    rect = torch.tensor([[[0.0, 14.0], [10.0, 0.0]]])
    assert matching_error(rect, target, (140, 100), frame=70).item() == pytest.approx((7.0 + 7.0) / 2)
    assert matching_error(pred, target, 96, reduction="none").shape == (1, 2)
