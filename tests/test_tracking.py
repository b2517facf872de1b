"""Tracked video prediction (contrastive_landmarks.tracking): one pass a frame where the previous frames place the
crop, the whole-frame two-pass `detect` on the first frame, after a jump, and where the animal nears the crop's edge.

The model here is a real `LandmarkModel` (its framing, crops, regressor, soft-argmax and scores) on a stand-in
backbone whose one stage map is the crop's red and green channels: landmark 0 is the centre of a red square,
landmark 1 of a green one, exactly, wherever the crop that sees them is placed. Tracked and every-frame points must
then agree to sub-pixel, and a crop that misses the squares must fall back.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastive_landmarks import LandmarkModel
from contrastive_landmarks.framing import Framing
from contrastive_landmarks.regressor import LandmarkRegressor
from contrastive_landmarks.tracking import TrackingRule, TrackState, can_track, near_edge, needs_full_pass, track_frames

SIDE = 64  # the stand-in model's input size
HEIGHT, WIDTH = 120, 160
SQUARE = 6


class RedGreen(nn.Module):
    """A stand-in hypercolumn: the log of the crop's red and green channels, 2x average-pooled, as its one stage map
    (a softmax of it is the channel's share of each cell: the soft-argmax is the channel's centroid)."""

    normalize = False

    def __init__(self) -> None:
        super().__init__()
        self.backbone = SimpleNamespace(input_size=(SIDE, SIDE), dtype=torch.float32)

    def output_size(self, images: torch.Tensor) -> tuple[int, int]:
        return (SIDE // 2, SIDE // 2)

    def image_stage_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [F.avg_pool2d(images[:, :2].float(), 2).clamp_min(0).add(1e-9).log()]


def colour_model() -> LandmarkModel:
    """Two landmarks, the red and the green square's centres, two-stage framing."""
    regressor = LandmarkRegressor(2, 2, 1, softmax_multiplier=1.0, size=SIDE // 2)
    with torch.no_grad():
        regressor.weight.copy_(torch.eye(2))
    return LandmarkModel(
        RedGreen(), None, regressor, regressor_input="hypercolumn", framing=Framing(2, 1.5, 0.25)
    ).eval()


def square_video(xs: list[float], y: float = 40.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(T, 3, H, W)`` with a red square centred at ``(x, y)`` and a green one at ``(x + 24, y + 16)``, and
    those true centres ``(T, 2, 2)`` (pixel centres at integers; squares anti-aliased at fractional positions)."""
    grid_y, grid_x = torch.meshgrid(
        torch.arange(HEIGHT, dtype=torch.float32), torch.arange(WIDTH, dtype=torch.float32), indexing="ij"
    )

    def square(cx: float, cy: float) -> torch.Tensor:
        cover_x = (SQUARE / 2 + 0.5 - (grid_x - cx).abs()).clamp(0, 1)
        cover_y = (SQUARE / 2 + 0.5 - (grid_y - cy).abs()).clamp(0, 1)
        return cover_x * cover_y

    frames = torch.zeros(len(xs), 3, HEIGHT, WIDTH)
    centres = torch.zeros(len(xs), 2, 2)
    for t, x in enumerate(xs):
        frames[t, 0] = square(x, y)
        frames[t, 1] = square(x + 24, y + 16)
        centres[t] = torch.tensor([[x, y], [x + 24, y + 16]])
    return frames, centres


class Counting:
    """Counts the model's whole-frame two-pass calls (`detect`) and frames, and its one-pass calls."""

    def __init__(self, model: LandmarkModel, monkeypatch) -> None:
        self.full_calls = self.full_frames = self.tracked_calls = 0
        detect, in_boxes = model.detect, model.detect_in_boxes

        def counted_detect(images, **kwargs):
            self.full_calls += 1
            self.full_frames += len(images)
            return detect(images, **kwargs)

        def counted_in_boxes(images, boxes, **kwargs):
            self.tracked_calls += 1
            return in_boxes(images, boxes, **kwargs)

        monkeypatch.setattr(model, "detect", counted_detect)
        monkeypatch.setattr(model, "detect_in_boxes", counted_in_boxes)


def track_in_chunks(model, frames, chunk: int, rule: TrackingRule | None = None):
    """`track_frames` over ``frames`` fed ``chunk`` at a time, as the CLI feeds decoded batches."""
    state, points, scores, full = TrackState(), [], [], []
    for start in range(0, len(frames), chunk):
        result = track_frames(model, frames[start : start + chunk], state, rule)
        state = result.state
        points.append(result.points)
        scores.append(result.scores)
        full.append(result.full)
    return torch.cat(points), torch.cat(scores), torch.cat(full)


def test_the_stand_in_model_finds_the_squares():
    frames, centres = square_video([30.0, 61.3, 90.7])
    points = colour_model().detect(frames)
    assert (points - centres).abs().max() < 0.05


def test_tracked_equals_every_frame_on_a_moving_object():
    xs = [30.0 + 1.1 * t for t in range(40)]  # smooth motion: 1.1 px a frame to the right
    frames, centres = square_video(xs)
    model = colour_model()
    every_points, every_scores = model.detect(frames, return_scores=True)
    points, scores, full = track_in_chunks(model, frames, chunk=16)
    assert points.shape == (40, 2, 2) and scores.shape == (40, 2) and full.dtype == torch.bool
    assert full[0] and not full[1:].any()  # only the first frame on the whole frame
    assert (points - every_points).norm(dim=-1).max() < 0.1  # both the squares' centres, up to resampling
    assert (scores - every_scores).abs().max() < 0.15  # the focus term moves with the crop's sub-pixel phase
    assert (points - centres).norm(dim=-1).max() < 0.1


def test_a_jump_falls_back_to_the_whole_frame(monkeypatch):
    xs = [30.0 + t for t in range(12)] + [110.0 + t for t in range(12)]  # the squares jump 69 px at frame 12
    frames, centres = square_video(xs, y=30.0)
    model = colour_model()
    every_points = model.detect(frames)
    counter = Counting(model, monkeypatch)
    points, _, full = track_in_chunks(model, frames, chunk=8)
    assert full[0] and full[12]  # the first frame, and the frame the squares jumped to
    assert int(full.sum()) <= 1 + TrackingRule().lookahead  # the jump's crop group at most, then tracking again
    assert not full[-8:].any()
    assert (points - every_points).norm(dim=-1).max() < 0.1  # the fallback got the points the jump lost
    assert (points - centres).norm(dim=-1).max() < 0.1
    assert counter.full_frames == int(full.sum())


def test_full_passes_are_few_on_a_smooth_video(monkeypatch):
    xs = [20.0 + 0.8 * t for t in range(100)]  # 100 frames, 0.8 px a frame
    frames, _ = square_video(xs)
    model = colour_model()
    counter = Counting(model, monkeypatch)
    rule = TrackingRule(lookahead=4)
    _, _, full = track_in_chunks(model, frames, chunk=32, rule=rule)
    assert counter.full_calls == 1 and counter.full_frames == 1 and int(full.sum()) == 1
    # the other 99 frames in crop groups of at most 4, a chunk boundary ending a group early
    assert 99 / 4 <= counter.tracked_calls <= 99 / 4 + 4


def test_the_object_leaving_the_crop_falls_back_in_one_frame(monkeypatch):
    # a slow drift, then 12 px a frame: the crop placed from the previous frame puts the squares near its edge
    xs = [30.0 + 0.5 * t for t in range(6)] + [33.0 + 12.0 * t for t in range(1, 8)]
    frames, _ = square_video(xs)
    model = colour_model()
    _, _, full = track_in_chunks(model, frames, chunk=len(xs), rule=TrackingRule(lookahead=1))
    assert full[0] and full[6:].all() and not full[1:6].any()


def test_the_rule_in_isolation():
    boxes = torch.tensor([[50.0, 50.0, 40.0, 0.0], [50.0, 50.0, 40.0, 0.0]])  # crops of x, y in 30..70
    points = torch.tensor([[[50.0, 50.0], [60.0, 45.0]], [[50.0, 50.0], [68.5, 50.0]]])
    assert near_edge(points, boxes, 64, 0.05).tolist() == [False, True]
    assert near_edge(points, boxes, 64, 0.0).tolist() == [False, False]
    scores = torch.tensor([[0.9, 0.9], [0.9, 0.9]])
    rule = TrackingRule(edge=0.0, score_drop=0.8)
    assert needs_full_pass(points, scores, boxes, 64, None, rule).tolist() == [True, True]  # nothing to compare
    assert needs_full_pass(points, scores, boxes, 64, 1.0, rule).tolist() == [False, False]
    assert needs_full_pass(points, scores * 0.5, boxes, 64, 1.0, rule).tolist() == [True, True]
    with pytest.raises(ValueError, match="lookahead"):
        TrackingRule(lookahead=0)
    with pytest.raises(ValueError, match="edge"):
        TrackingRule(edge=0.5)


def test_only_two_stage_models_are_tracked(faces_model):
    assert not can_track(faces_model)  # one pass on the whole image already
    assert can_track(colour_model())
    with pytest.raises(ValueError, match="two-stage"):
        track_frames(faces_model, torch.rand(2, 3, 64, 64))


def test_a_real_two_stage_model_tracks_from_its_first_detect(faces_model):
    model = LandmarkModel(
        faces_model.hypercolumn,
        faces_model.projector,
        faces_model.regressor,
        regressor_input=faces_model.regressor_input,
        landmark_names=faces_model.landmark_names,
        framing=Framing(),
    ).eval()
    frames = F.interpolate(torch.rand(5, 3, 10, 12), size=(80, 96), mode="bilinear")  # smooth, not noise
    every, every_scores = model.detect(frames, return_scores=True)
    result = track_frames(model, frames, rule=TrackingRule(edge=0.0, score_drop=0.0))
    assert result.points.shape == (5, 5, 2) and result.full.tolist() == [True] + [False] * 4
    assert torch.allclose(result.points[0], every[0], atol=1e-3)  # detect on the first frame alone
    assert torch.allclose(result.scores[0], every_scores[0], atol=1e-4)
    boxes = model.boxes_around(result.points[:1].expand(4, -1, -1), [(80, 96)] * 4)
    assert torch.allclose(result.points[1:], model.detect_in_boxes(frames[1:], boxes), atol=1e-5)
    empty = track_frames(model, frames[:0], result.state)
    assert empty.points.shape == (0, 5, 2) and empty.state is result.state


def test_check_content_reaches_detect_on_the_two_pass_frames():
    """A caller that checks the frames itself (the predict command) turns ``detect``'s content warning off."""
    import warnings

    frames = torch.full((3, 3, HEIGHT, WIDTH), 0.5)  # blank frames: the first one takes the two-pass path
    model = colour_model()
    with pytest.warns(UserWarning, match=r"images\[0\] is blank"):
        track_frames(model, frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = track_frames(model, frames, check_content=False)
    assert result.full[0] and result.points.shape == (3, 2, 2)
