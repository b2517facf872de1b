"""Tracked video prediction: each frame's crop placed from the frames before it, the whole frame only when needed.

A two-stage model (:class:`~contrastive_landmarks.framing.Framing` with ``stages=2``) finds the animal on the
letterboxed whole frame, then looks again at a crop around what it found: two network passes a frame
(:meth:`~contrastive_landmarks.LandmarkModel.detect`). On a video the animal is where it just was, so the crop of
frame ``t`` can be placed from the points of the frames before it by the same rule
(:meth:`~contrastive_landmarks.LandmarkModel.boxes_around`) and only the second pass run
(:meth:`~contrastive_landmarks.LandmarkModel.detect_in_boxes`): half the work. A frame falls back to the two-pass
path when there is nothing to place its crop from (the first frame), when one of its points lies near the crop's
edge (the animal may be leaving it), or when its mean likelihood drops below a share of the likelihood of the last
two-pass frame (the crop may have lost it) (:func:`needs_full_pass`, :class:`TrackingRule`).

To batch, ``TrackingRule.lookahead`` consecutive frames share one crop, placed from the last frame before them;
their points are checked each, and those that fail are re-run through the two-pass path together.

The core is functional: :func:`track_frames` takes a :class:`TrackState` (what the previous frames left) and returns
the next one, so a caller decoding a video in chunks feeds them in order; :func:`inference_precision` is the
autocast context a caller wraps it in.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from .device import autocast_dtype
from .framing import crop_points

if TYPE_CHECKING:
    from .pipeline import LandmarkModel

__all__ = [
    "TrackState",
    "Tracked",
    "TrackingRule",
    "can_track",
    "inference_precision",
    "near_edge",
    "needs_full_pass",
    "track_frames",
]


@dataclass(frozen=True)
class TrackingRule:
    """When a tracked frame falls back to the whole-frame two-pass path, and how many frames share a crop.

    Attributes:
        edge: a frame falls back when one of its points lies within this fraction of the crop's side from the
            crop's edge (a crop of margin 1.5 puts the extreme points 1/6 of the side in).
        score_drop: a frame falls back when its mean likelihood is below this share of the mean likelihood of the
            last frame the two-pass path gave (0: never on likelihood).
        lookahead: consecutive frames that share one crop, placed from the last frame before them: the batch of the
            tracked pass (1: each frame's crop from the frame just before it).
    """

    edge: float = 0.05
    score_drop: float = 0.8
    lookahead: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.edge < 0.5:
            raise ValueError(f"edge must be in [0, 0.5), got {self.edge}")
        if not 0 <= self.score_drop <= 1:
            raise ValueError(f"score_drop must be in [0, 1], got {self.score_drop}")
        if isinstance(self.lookahead, bool) or not isinstance(self.lookahead, int) or self.lookahead < 1:
            raise ValueError(f"lookahead must be a positive integer, got {self.lookahead!r}")


class TrackState(NamedTuple):
    """What the frames so far leave to the next: where to place its crop, and the likelihood to compare with.

    Attributes:
        points: ``(N, 2)`` pixels of the last frame, or ``None`` before the first.
        reference: mean likelihood of the last frame the two-pass path gave, or ``None`` before the first.
    """

    points: Tensor | None = None
    reference: float | None = None


class Tracked(NamedTuple):
    """The landmarks of a run of frames, and which frames took the two-pass path.

    Attributes:
        points: ``(B, N, 2)`` pixels of each frame.
        scores: ``(B, N)`` likelihoods, as :meth:`~contrastive_landmarks.LandmarkModel.detect` returns them.
        full: ``(B,)`` bool, the frames whose points came from the whole-frame two-pass path.
        state: what these frames leave to the next (:class:`TrackState`).
    """

    points: Tensor
    scores: Tensor
    full: Tensor
    state: TrackState


def can_track(model: LandmarkModel) -> bool:
    """Whether tracking saves anything on ``model``: a landmark model with a two-stage framing."""
    return model.regressor is not None and model.framing is not None and model.framing.stages == 2


def near_edge(points: Tensor, boxes: Tensor, size: int, edge: float) -> Tensor:
    """Frames with a point within ``edge`` of their crop's side from its edge: ``(B,)`` bool.

    Args:
        points: ``(B, N, 2)`` frame pixels (non-finite points are ignored).
        boxes: ``(B, 4)`` ``(cx, cy, side, angle)`` crops (:mod:`contrastive_landmarks.framing`).
        size: the crops' side in pixels ``S`` (the model's input size).
        edge: fraction of ``S``.
    """
    local = crop_points(points.float(), boxes.float(), size)  # (B, N, 2) crop pixels, centres at integers
    low, high = edge * size - 0.5, (1 - edge) * size - 0.5
    outside = ((local < low) | (local > high)).any(-1) & torch.isfinite(local).all(-1)
    return outside.any(-1)


def needs_full_pass(
    points: Tensor, scores: Tensor, boxes: Tensor, size: int, reference: float | None, rule: TrackingRule
) -> Tensor:
    """Tracked frames to redo on the whole frame: ``(B,)`` bool (:class:`TrackingRule`).

    Args:
        points: ``(B, N, 2)`` frame pixels found in the crops ``boxes`` ``(B, 4)`` of side ``size`` pixels.
        scores: ``(B, N)`` their likelihoods.
        reference: the mean likelihood of the last two-pass frame (``None``: every frame is redone).
        rule: the thresholds.
    """
    if reference is None:
        return torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
    dropped = scores.float().mean(-1) < rule.score_drop * reference
    return dropped | near_edge(points, boxes, size, rule.edge)


def _full(model: LandmarkModel, frames: Tensor, check_content: bool) -> tuple[Tensor, Tensor]:
    points, scores = model.detect(frames, return_scores=True, check_content=check_content)
    return points.float(), scores.float()


def track_frames(
    model: LandmarkModel,
    frames: Tensor,
    state: TrackState | None = None,
    rule: TrackingRule | None = None,
    *,
    check_content: bool = True,
) -> Tracked:
    """Landmarks of consecutive video frames, tracking from ``state``: one pass a frame where tracking holds.

    Args:
        model: a two-stage :class:`~contrastive_landmarks.LandmarkModel` (:func:`can_track`).
        frames: ``(B, 3, H, W)`` consecutive frames, float in ``[0, 1]`` or ``uint8``, on the model's device.
        state: what the frames before these left (:attr:`Tracked.state` of the previous call; ``None``: nothing,
            the first frame takes the two-pass path).
        rule: when to fall back, and how many frames share a crop (``None``: :class:`TrackingRule`'s defaults).
        check_content: passed to :meth:`~contrastive_landmarks.LandmarkModel.detect` on the two-pass frames (its
            warning about blank / noise frames); ``False`` for a caller that checks the frames itself.

    Returns:
        a :class:`Tracked`: ``points`` ``(B, N, 2)``, ``scores`` ``(B, N)`` (float32), ``full`` ``(B,)`` and the
        state to pass on.
    """
    if not can_track(model):
        raise ValueError("tracking needs a landmark model with a two-stage framing (Framing(stages=2))")
    state = state or TrackState()
    rule = rule or TrackingRule()
    count = frames.shape[0]
    size = int(model.input_size[0])
    sizes = [(int(frames.shape[-2]), int(frames.shape[-1]))] * count
    points_out, scores_out, full_out = [], [], []
    start = 0
    while start < count:
        if state.points is None:  # nothing to place a crop from: the first frame takes the two-pass path
            points, scores = _full(model, frames[start : start + 1], check_content)
            full = torch.ones(1, dtype=torch.bool, device=points.device)
        else:
            group = frames[start : start + rule.lookahead]
            boxes = model.boxes_around(state.points[None].expand(group.shape[0], -1, -1), sizes[: group.shape[0]])
            points, scores = model.detect_in_boxes(group, boxes, return_scores=True)
            points, scores = points.float(), scores.float()
            full = needs_full_pass(points, scores, boxes, size, state.reference, rule)
            if bool(full.any()):
                points[full], scores[full] = _full(model, group[full], check_content)
        if bool(full.any()):
            last = int(full.nonzero()[-1])
            state = TrackState(points[-1], float(scores[last].mean()))
        else:
            state = TrackState(points[-1], state.reference)
        points_out.append(points)
        scores_out.append(scores)
        full_out.append(full)
        start += points.shape[0]
    if not points_out:
        n = model.regressor.num_landmarks
        empty = frames.new_zeros((0, n), dtype=torch.float32)
        return Tracked(empty[..., None].expand(0, n, 2), empty, torch.zeros(0, dtype=torch.bool), state)
    return Tracked(torch.cat(points_out), torch.cat(scores_out), torch.cat(full_out), state)


def inference_precision(device: torch.device, precision: str = "auto") -> AbstractContextManager:
    """The autocast context to predict in on ``device`` (:func:`~contrastive_landmarks.device.autocast_dtype`):
    ``auto`` is bfloat16 on a CPU with native bfloat16 and on a GPU that has it; ``fp32`` none."""
    dtype = autocast_dtype(device, precision)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
