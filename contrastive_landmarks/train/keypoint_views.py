"""Random training views of whole labelled frames for :func:`~contrastive_landmarks.train.finetune`.

A view is a square crop of one frame (:mod:`contrastive_landmarks.framing`), resized to the network's input
size, with its keypoints moved exactly with the pixels:

- **framing**: with probability ``frame_probability`` the letterboxed whole frame (what a two-stage model's
  first pass sees), else a box around the frame's labelled points at ``Framing.margin`` (its second pass);
- **geometry**: scale (the box's side times ``2^U(-s, s)``), rotation (``U(-r, r)`` degrees; by default ``r``
  follows the labelled poses, :func:`rotation_for_poses`: a full turn where the animals face every way, as in a
  top view, else 25 degrees), translation
  (the centre moves by ``U(-t, t)`` of the side), and a horizontal flip that swaps the named left/right
  parts, only where the data names them;
- **photometry**: brightness and contrast (torchvision's ``ColorJitter`` without hue), random Gaussian blur,
  and grey frames for colour data now and then (grey data stays grey).

Points that leave the crop are marked invisible (they drop out of the loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..framing import Framing, crop_images, crop_points, frame_boxes, keypoint_boxes
from .image_ops import color_jitter, gaussian_blur, rgb_to_grayscale

__all__ = ["KeypointViews", "ViewAugment", "heading_spread", "rotation_for_poses"]

#: Rotation range (degrees) of views of animals that keep one heading (side views, head-fixed or reaching animals).
NARROW_ROTATION = 25.0
#: ... and of animals that face every way (a freely moving animal seen from above): a full turn.
FULL_ROTATION = 180.0
#: The circular spread of the labelled headings (degrees) above which the full turn is used.
SPREAD_FOR_FULL_TURN = 60.0


def heading_spread(keypoints: Tensor, visible: Tensor) -> float:
    """How much the labelled animals turn between frames: the circular standard deviation, in degrees, of the
    direction between the two body parts that lie farthest apart on average (among the pairs labelled together in
    at least 80 % of the frames). About 0 for a head-fixed or side-view animal; 80 or more when headings are
    uniform (a top view of a freely moving animal, even from 10 frames). ``0.0`` when no pair qualifies.

    Args:
        keypoints: ``(M, N, 2)`` pixels; visible: ``(M, N)`` bool.
    """
    import math

    keypoints = torch.nan_to_num(keypoints.float())
    visible = visible.bool()
    m, n = visible.shape
    best, pair = -1.0, None
    for a in range(n):
        for b in range(a + 1, n):
            both = visible[:, a] & visible[:, b]
            if int(both.sum()) < max(2, math.ceil(0.8 * m)):
                continue
            distance = float((keypoints[both, a] - keypoints[both, b]).norm(dim=-1).mean())
            if distance > best:
                best, pair = distance, (a, b)
    if pair is None:
        return 0.0
    both = visible[:, pair[0]] & visible[:, pair[1]]
    direction = keypoints[both, pair[1]] - keypoints[both, pair[0]]
    angle = torch.atan2(direction[:, 1], direction[:, 0]).double()
    length = float(torch.stack([angle.cos().mean(), angle.sin().mean()]).norm())
    return math.degrees(math.sqrt(-2 * math.log(max(length, 1e-12))))


def rotation_for_poses(keypoints: Tensor, visible: Tensor) -> float:
    """The views' rotation range for these labelled poses: :data:`FULL_ROTATION` when their
    :func:`heading_spread` exceeds :data:`SPREAD_FOR_FULL_TURN`, else :data:`NARROW_ROTATION`."""
    return FULL_ROTATION if heading_spread(keypoints, visible) > SPREAD_FOR_FULL_TURN else NARROW_ROTATION


@dataclass(frozen=True)
class ViewAugment:
    """Strengths of the random view augmentation (module docstring); ``ViewAugment.none()`` turns it off."""

    scale: float = 0.35  # log2: sides between 0.78x and 1.27x
    rotation: float | None = None  # degrees; None: from the labelled poses (rotation_for_poses)
    translation: float = 0.1  # of the side
    flip: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    blur: float = 0.2  # probability of a Gaussian blur (sigma 0.1-1.5 px)
    grayscale: float = 0.1  # probability of a grey view of a colour frame

    @classmethod
    def none(cls) -> ViewAugment:
        return cls(0.0, 0.0, 0.0, False, 0.0, 0.0, 0.0, 0.0)


def _uniform(n: int, bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * bound


class KeypointViews:
    """Labelled frames in memory (``uint8``, each at its own size) and random square views of them.

    Args:
        frames: ``M`` images ``(3, H_i, W_i)`` float in ``[0, 1]``.
        keypoints: ``(M, N, 2)`` pixels of each frame; ``visible``: ``(M, N)`` bool.
        size: the views' side ``S``.
        framing: the crops' margin (:class:`~contrastive_landmarks.framing.Framing`).
        flip_pairs: left/right keypoint pairs a flip swaps (``None``: never flipped).
        frame_probability: share of views that show the whole frame.
    """

    def __init__(
        self,
        frames: Sequence[Tensor],
        keypoints: Tensor,
        visible: Tensor,
        size: int,
        *,
        framing: Framing | None = None,
        flip_pairs: Sequence[Sequence[int]] | None = None,
        frame_probability: float = 0.5,
    ) -> None:
        if len(frames) != keypoints.shape[0] or keypoints.shape[:2] != visible.shape:
            raise ValueError(
                f"{len(frames)} frames, keypoints {tuple(keypoints.shape)}, visible {tuple(visible.shape)}"
            )
        self.frames = [(f.clamp(0, 1) * 255).round().to(torch.uint8) for f in frames]
        self.sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in frames]
        self.keypoints = torch.nan_to_num(keypoints.float())
        self.visible = visible.bool() & torch.isfinite(keypoints).all(-1)
        self.size, self.framing = int(size), framing or Framing()
        self.flip_pairs = [tuple(p) for p in flip_pairs] if flip_pairs else None
        self.frame_probability = float(frame_probability) if self.framing.stages == 2 else 1.0
        self.gray = [bool((f[0] == f[1]).all() and (f[1] == f[2]).all()) for f in self.frames]
        #: the rotation range used where :attr:`ViewAugment.rotation` is ``None`` (:func:`rotation_for_poses`)
        self.pose_rotation = rotation_for_poses(self.keypoints, self.visible)

    def __len__(self) -> int:
        return len(self.frames)

    def rotation(self, augment: ViewAugment) -> float:
        """The views' rotation range (degrees): ``augment.rotation``, else :attr:`pose_rotation`."""
        return self.pose_rotation if augment.rotation is None else augment.rotation

    def boxes(self, index: Tensor, generator: torch.Generator, augment: ViewAugment) -> Tensor:
        """``(B, 4)`` random boxes ``(cx, cy, side, angle)`` of frames ``index``."""
        sizes = [self.sizes[i] for i in index.tolist()]
        whole = frame_boxes(sizes)
        tight = keypoint_boxes(
            self.keypoints[index],
            self.visible[index],
            sizes,
            margin=self.framing.margin,
            min_fraction=self.framing.min_fraction,
        )
        use_frame = torch.rand(len(sizes), generator=generator) < self.frame_probability
        boxes = torch.where(use_frame[:, None], whole, tight)
        n = len(sizes)
        boxes[:, 2] = boxes[:, 2] * torch.pow(2.0, _uniform(n, augment.scale, generator))
        shift = torch.stack(
            [_uniform(n, augment.translation, generator), _uniform(n, augment.translation, generator)], 1
        )
        boxes[:, :2] = boxes[:, :2] + shift * boxes[:, 2:3]
        boxes[:, 3] = _uniform(n, self.rotation(augment), generator)
        return boxes

    def sample(
        self, index: Tensor, generator: torch.Generator, augment: ViewAugment | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Views of frames ``index``: ``(B, 3, S, S)`` images in [0, 1], ``(B, N, 2)`` pixels, ``(B, N)`` visible."""
        augment = augment or ViewAugment()
        boxes = self.boxes(index, generator, augment)
        frames = [self.frames[i].float().div_(255) for i in index.tolist()]
        images = crop_images(frames, boxes, self.size)
        points = crop_points(self.keypoints[index], boxes, self.size)
        visible = self.visible[index].clone()
        if augment.flip and self.flip_pairs:
            images, points, visible = self._flip(images, points, visible, generator)
        inside = ((points > -0.5) & (points < self.size - 0.5)).all(-1)
        images = self._photometric(images, index, generator, augment)
        return images, points, visible & inside

    def _flip(self, images: Tensor, points: Tensor, visible: Tensor, generator: torch.Generator):
        flip = torch.rand(images.shape[0], generator=generator) < 0.5
        order = list(range(points.shape[1]))
        for a, b in self.flip_pairs:
            order[a], order[b] = order[b], order[a]
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        mirrored = points[:, order].clone()
        mirrored[..., 0] = self.size - 1 - mirrored[..., 0]
        points = torch.where(flip[:, None, None], mirrored, points)
        visible = torch.where(flip[:, None], visible[:, order], visible)
        return images, points, visible

    def _photometric(self, images: Tensor, index: Tensor, generator: torch.Generator, augment: ViewAugment) -> Tensor:
        if augment.brightness or augment.contrast:
            images = color_jitter(
                images, generator, brightness=augment.brightness, contrast=augment.contrast, saturation=0
            )
        if augment.blur:
            images = gaussian_blur(images, generator, sigma=(0.1, 1.5), p=augment.blur)
        if augment.grayscale:
            gray = torch.rand(images.shape[0], generator=generator) < augment.grayscale
            gray = gray & ~torch.tensor([self.gray[i] for i in index.tolist()])
            images = torch.where(gray[:, None, None, None], rgb_to_grayscale(images).expand_as(images), images)
        return images.clamp(0, 1)
