"""Square crops of whole frames: where a keypoint network looks, and the way back to the frame's pixels.

A fine-tuned model (:func:`contrastive_landmarks.train.finetune`) sees square *crops* of a frame resized to
its input size ``S``, never the frame squashed: a crop is a box ``(cx, cy, side, angle)`` in the frame's
pixels (centre, side length, rotation in degrees, counter-clockwise on screen), and everything outside the
frame reads as zeros. Two boxes matter:

- :func:`frame_boxes`: the whole frame, letterboxed (the centred square of side ``max(H, W)``);
- :func:`keypoint_boxes`: around a set of points, their bounding box's longer side times ``margin``
  (at least ``min_fraction`` and at most ``max_fraction`` of the frame's longer side): the *second stage* of a
  two-stage model, which
  finds the animal on the whole frame first and then looks again at a crop where it is large
  (:class:`Framing`).

Coordinates follow :mod:`contrastive_landmarks.coords`: pixel centres at integers, so output pixel ``u`` of
an ``S``-wide crop sits at ``(u + 0.5) · side / S - side / 2`` from the box centre before the rotation.
:func:`crop_points` and :func:`uncrop_points` are exact inverses of each other and of :func:`crop_images`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SECOND_PASS_MAX_SHARE",
    "Framing",
    "crop_images",
    "crop_points",
    "frame_boxes",
    "framing_for_poses",
    "keypoint_boxes",
    "mean_pose",
    "pose_in_frames",
    "uncrop_points",
]


@dataclass(frozen=True)
class Framing:
    """How a model frames its input: the whole frame, or the whole frame and then a crop around the points.

    Attributes:
        stages: 1 (the letterboxed frame only) or 2 (then a crop around the first pass's points); ``None``: not
            decided yet, :func:`framing_for_poses` decides from the labelled animals' size (what
            :func:`~contrastive_landmarks.train.finetune` does; a model always holds 1 or 2).
        margin: the crop's side over the longer side of the points' bounding box.
        min_fraction: the crop's smallest side, a fraction of the frame's longer side.
        max_fraction: the crop's largest side, a fraction of the frame's longer side (``None``: no cap, as models
            written before it had). A crop wider than the frame adds only padding and costs resolution: on
            ``lp-mirror-mouse`` the points span most of the 406-px frame and ``margin`` alone made 547-px crops.
    """

    stages: int | None = 2
    margin: float = 1.5
    min_fraction: float = 0.2
    max_fraction: float | None = 1.0

    def __post_init__(self) -> None:
        if self.stages not in (1, 2, None):
            raise ValueError(f"framing stages must be 1 or 2, got {self.stages}")
        if not self.margin >= 1.0 or not 0 < self.min_fraction <= 1:
            raise ValueError(f"framing needs margin >= 1 and 0 < min_fraction <= 1, got {self}")
        if self.max_fraction is not None and not self.max_fraction >= self.min_fraction:
            raise ValueError(f"framing needs max_fraction >= min_fraction (or None), got {self}")

    def boxes_around(self, points: Tensor, visible: Tensor | None, sizes: Sequence[tuple[int, int]]) -> Tensor:
        """:func:`keypoint_boxes` by this rule (margin, smallest and largest side): ``(B, 4)``."""
        return keypoint_boxes(
            points, visible, sizes, margin=self.margin, min_fraction=self.min_fraction, max_fraction=self.max_fraction
        )

    @classmethod
    def from_config(cls, config: dict) -> Framing:
        """The framing a model directory recorded; one written before ``max_fraction`` existed keeps no cap."""
        return cls(**{"max_fraction": None, **config})

    @property
    def config(self) -> dict:
        return asdict(self)


def frame_boxes(sizes: Sequence[tuple[int, int]], *, device: torch.device | str | None = None) -> Tensor:
    """The letterbox box of each ``(H, W)`` frame: ``(B, 4)`` ``(cx, cy, side, angle)``, centred, side ``max(H, W)``."""
    rows = [((w - 1) / 2, (h - 1) / 2, float(max(h, w)), 0.0) for h, w in sizes]
    return torch.tensor(rows, dtype=torch.float32, device=device).reshape(-1, 4)


def keypoint_boxes(
    points: Tensor,
    visible: Tensor | None,
    sizes: Sequence[tuple[int, int]],
    *,
    margin: float = 1.5,
    min_fraction: float = 0.2,
    max_fraction: float | None = None,
) -> Tensor:
    """A square box around each frame's points: ``(B, 4)`` ``(cx, cy, side, 0)``.

    Args:
        points: ``(B, N, 2)`` pixels of each frame.
        visible: ``(B, N)`` bool (``None``: all); a frame with no visible point gets its :func:`frame_boxes` box.
        sizes: each frame's ``(H, W)``.
        margin: the side over the longer side of the points' bounding box.
        min_fraction: the smallest side, a fraction of the frame's longer side.
        max_fraction: the largest side, a fraction of the frame's longer side (``None``: no cap). The box still
            holds every point: its side is at least their extent, and it is centred on them.
    """
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != len(sizes):
        raise ValueError(f"points must be (B={len(sizes)}, N, 2), got {tuple(points.shape)}")
    mask = torch.isfinite(points).all(-1)
    if visible is not None:
        mask = mask & visible.to(torch.bool)
    boxes = frame_boxes(sizes, device=points.device)
    for i, (h, w) in enumerate(sizes):
        if not bool(mask[i].any()):
            continue
        p = points[i][mask[i]].float()
        low, high = p.min(0).values, p.max(0).values
        extent = float((high - low).max())
        side = max(extent * margin, min_fraction * max(h, w))
        if max_fraction is not None:
            side = max(min(side, max_fraction * max(h, w)), extent)
        boxes[i] = torch.stack([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, p.new_tensor(side), p.new_tensor(0.0)])
    return boxes


#: A second pass is worth its network pass where the labelled animals' crops are at most this share of the
#: frame's longer side (median over the frames); above it the crop is nearly the whole frame again.
SECOND_PASS_MAX_SHARE = 0.8


def framing_for_poses(
    framing: Framing, keypoints: Tensor, visible: Tensor, sizes: Sequence[tuple[int, int]]
) -> Framing:
    """``framing`` with ``stages`` decided where it is ``None``: 2 where the second pass would look closer.

    The second pass's crop of each labelled frame (:func:`keypoint_boxes` by ``framing``'s rule) over the frame's
    longer side, median over the frames: at most :data:`SECOND_PASS_MAX_SHARE`, two stages; above it (the animal
    fills the frame, as on ``lp-mirror-mouse``, whose capped crops are the whole 406-px frame) one, which sees the
    same pixels for half the work.

    Args:
        framing: the rule; returned as it is when its ``stages`` is already 1 or 2.
        keypoints: ``(M, N, 2)`` labelled points in each frame's pixels.
        visible: ``(M, N)`` bool.
        sizes: each frame's ``(H, W)``.
    """
    if framing.stages is not None:
        return framing
    share = framing.boxes_around(keypoints, visible, sizes)[:, 2] / torch.tensor([float(max(s)) for s in sizes])
    return replace(framing, stages=2 if float(share.median()) <= SECOND_PASS_MAX_SHARE else 1)


def _axes(boxes: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per box: its centre ``(B, 2)``, pixel pitch ``(B,)`` and rotation ``(B, 2, 2)`` (crop axes -> frame axes)."""
    angle = torch.deg2rad(boxes[:, 3])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # screen: y down
    return boxes[:, :2], boxes[:, 2] / size, rotation


def uncrop_points(points: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Pixels of ``size``-square crops ``(B, N, 2)`` -> pixels of their frames."""
    centre, pitch, rotation = _axes(boxes.to(points.dtype), size)
    local = (points + 0.5) * pitch[:, None, None] - (size * pitch / 2)[:, None, None]
    return torch.einsum("bij,bnj->bni", rotation, local) + centre[:, None]


def crop_points(points: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Pixels of the frames ``(B, N, 2)`` -> pixels of the ``size``-square crops (inverse of :func:`uncrop_points`)."""
    centre, pitch, rotation = _axes(boxes.to(points.dtype), size)
    local = torch.einsum("bji,bnj->bni", rotation, points - centre[:, None])
    return (local + (size * pitch / 2)[:, None, None]) / pitch[:, None, None] - 0.5


def crop_images(images: Tensor | Sequence[Tensor], boxes: Tensor, size: int) -> Tensor:
    """Bilinear ``size x size`` crops of each frame at its box (zeros outside the frame), ``(B, C, S, S)``.

    Args:
        images: ``(B, C, H, W)`` or a list of ``(C, H_i, W_i)`` frames (float).
        boxes: ``(B, 4)`` ``(cx, cy, side, angle)`` in each frame's pixels.
        size: ``S``.

    A crop whose pixels are much smaller than the frame's is antialiased (the frame is first resized so
    that one crop pixel covers at most two frame pixels).
    """
    frames = list(images) if not isinstance(images, Tensor) else list(images.unbind(0))
    if len(frames) != boxes.shape[0]:
        raise ValueError(f"{len(frames)} images but {boxes.shape[0]} boxes")
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    grid_px = torch.stack([xs, ys], -1).reshape(1, -1, 2).to(boxes.device)
    out = []
    for frame, box in zip(frames, boxes.float()):
        h, w = frame.shape[-2:]
        source = uncrop_points(grid_px, box[None], size)[0]  # (S*S, 2) frame pixels
        scale = min(1.0, 2.0 * size / float(box[2]))  # frame pixels per crop pixel at most 2
        if scale < 0.75:
            small = (max(1, round(h * scale)), max(1, round(w * scale)))
            frame = F.interpolate(
                frame[None].float(), size=small, mode="bilinear", antialias=True, align_corners=False
            )[0]
            # each axis by its own factor: the rounded sizes make them differ slightly
            source = (source + 0.5) * source.new_tensor([small[1] / w, small[0] / h]) - 0.5
            h, w = small
        normalised = torch.stack([(2 * source[:, 0] + 1) / w - 1, (2 * source[:, 1] + 1) / h - 1], -1)
        sampled = F.grid_sample(
            frame[None].float(), normalised.reshape(1, size, size, 2).to(frame.device), align_corners=False
        )
        out.append(sampled[0])
    return torch.stack(out)


def mean_pose(keypoints: Tensor, visible: Tensor, sizes: Sequence[tuple[int, int]]) -> Tensor:
    """The mean pose in each frame's letterbox: ``(N, 2)`` in units of the frame's longer side, from its centre."""
    boxes = frame_boxes(sizes)
    local = torch.nan_to_num((keypoints - boxes[:, None, :2]) / boxes[:, None, 2:3])
    weight = visible.float()[..., None]
    return (local * weight).sum(0) / weight.sum(0).clamp_min(1)


def pose_in_frames(pose: Tensor, sizes: Sequence[tuple[int, int]]) -> Tensor:
    """:func:`mean_pose` placed in each frame: ``(M, N, 2)`` pixels."""
    boxes = frame_boxes(sizes)
    return pose[None] * boxes[:, None, 2:3] + boxes[:, None, :2]
