"""Random views of labelled images, with their keypoints moved exactly with the pixels: the one augmentation of
both labelled recipes.

One :class:`ViewAugment` says how a view is made, in this order (the crop draws its box from the generator
always, each later step only when it is on, so that a step turned off leaves the next one's draws as they were):

- **crop** (the end-to-end recipe, :func:`~contrastive_landmarks.train.finetune`, whose views are crops of whole
  frames, :class:`KeypointViews`): a square box of a frame (:mod:`contrastive_landmarks.framing`), resized to
  the network's input size: with probability ``frame_probability`` the letterboxed whole frame (what a
  two-stage model's first pass sees), else a box around the frame's labelled points at ``Framing.margin`` (its
  second pass); then scale (the box's side times ``2^U(-s, s)``), rotation (``U(-r, r)`` degrees; by default
  ``r`` follows the labelled poses, :func:`rotation_for_poses`: a full turn where the animals face every way,
  as in a top view, else 25 degrees) and translation (the centre moves by ``U(-t, t)`` of the side);
- **flip**: half the views mirrored horizontally, swapping the named left/right parts (:func:`flip_views`;
  only where the data names them: a keypoint set without left/right names is never flipped);
- **warp**: a random TPS + affine warp of the view (:func:`~contrastive_landmarks.tps.tps_augment`): the
  frozen recipe's geometry (:func:`~contrastive_landmarks.train.fit_regressor`, whose views are the images as
  the dataset gives them, never cropped);
- **photometry**: brightness and contrast (torchvision's ``ColorJitter`` without hue), random Gaussian blur,
  and grey views of colour images now and then (grey images stay grey), :func:`photometric`.

The presets are the recipes': :meth:`ViewAugment.end_to_end` (the defaults: crop, flip, photometry) and
:meth:`ViewAugment.frozen` (warp and flip, also spelt :class:`Augment`); :meth:`ViewAugment.none` turns all off.
:meth:`ViewAugment.__call__` runs the steps after the crop on a batch of views. A crop's points that fall
outside it are marked invisible (they drop out of the loss), as are points a warp sends to infinity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..framing import Framing, crop_images, crop_points, frame_boxes
from ..tps import TPSParams, tps_augment
from .image_ops import color_jitter, gaussian_blur, rgb_to_grayscale

__all__ = [
    "Augment",
    "KeypointViews",
    "ViewAugment",
    "flip_views",
    "heading_spread",
    "photometric",
    "rotation_for_poses",
]

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


#: The frozen recipe's warp (:meth:`ViewAugment.frozen`): a slight TPS, 5 % translation and scale, 5 degrees.
FROZEN_WARP = TPSParams(
    warpsd_all=0.0005,
    warpsd_subset=0.0,
    transsd=0.05,
    scalesd=0.05,
    rotsd=5.0,
    im1_multiplier=1.0,
    im1_multiplier_aff=1.0,
)


@dataclass(frozen=True)
class ViewAugment:
    """How a labelled view is augmented (the module docstring's steps); the defaults are the end-to-end recipe's.

    Attributes:
        scale: log2 range of the crop's side (0.35: sides between 0.78x and 1.27x).
        rotation: the crop's rotation range in degrees; ``None``: from the labelled poses
            (:meth:`KeypointViews.rotation`).
        translation: range of the crop centre's shift, a fraction of the side.
        flip: mirror half the views, swapping the data's ``flip_pairs`` (never flipped without them).
        brightness, contrast: jitter strengths (factors in ``[1 - s, 1 + s]``).
        blur: probability of a Gaussian blur (sigma 0.1-1.5 px).
        grayscale: probability of a grey view of a colour image.
        warp: a TPS + affine warp of each view (:class:`~contrastive_landmarks.tps.TPSParams`), or ``None``.

    ``scale``, ``rotation`` and ``translation`` shape crops (:attr:`crops`), which only views cut from whole
    frames have (:class:`KeypointViews`); the frozen recipe's views are whole images and move by ``warp``.
    """

    scale: float = 0.35
    rotation: float | None = None
    translation: float = 0.1
    flip: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    blur: float = 0.2
    grayscale: float = 0.1
    warp: TPSParams | None = None

    @staticmethod
    def end_to_end() -> ViewAugment:
        """:func:`~contrastive_landmarks.train.finetune`'s views: crops of whole frames, flips and photometry."""
        return ViewAugment()

    @staticmethod
    def frozen() -> ViewAugment:
        """:func:`~contrastive_landmarks.train.fit_regressor`'s views: the whole images, warped
        (:data:`FROZEN_WARP`) and flipped, no photometry (:class:`Augment`)."""
        return Augment()

    @classmethod
    def none(cls) -> ViewAugment:
        """No augmentation at all (of this class: ``Augment.none()`` is an :class:`Augment`)."""
        off = dict(scale=0.0, rotation=0.0, translation=0.0, brightness=0.0, contrast=0.0, blur=0.0, grayscale=0.0)
        return cls(**off, flip=False, warp=None)

    @property
    def crops(self) -> bool:
        """Whether the views are random crops (a scale, rotation or translation range; ``rotation=None`` too)."""
        return bool(self.scale or self.translation or self.rotation is None or self.rotation)

    def __call__(
        self,
        images: Tensor,
        keypoints: Tensor,
        visible: Tensor,
        flip_pairs: Sequence[Sequence[int]] | None,
        generator: torch.Generator,
        *,
        grey: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The steps after the crop (flip, warp, photometry) on a batch of views; the crop, if any, is the caller's.

        Args:
            images: ``(B, 3, H, W)`` in ``[0, 1]``; keypoints: ``(B, N, 2)`` pixels; visible: ``(B, N)`` bool.
            flip_pairs: the left/right keypoint pairs a flip swaps (``None`` or empty: no flip).
            generator: a CPU generator, drawn in the steps' order.
            grey: ``(B,)`` bool, the views of grey images (never made grey again); ``None``: those whose three
                channels are equal.

        Returns:
            ``(images, keypoints, visible)``, the keypoints warped and flipped with the pixels; a point the warp
            sends to infinity is marked invisible (and set to 0).
        """
        if self.flip and flip_pairs:
            images, keypoints, visible = flip_views(images, keypoints, visible, flip_pairs, generator)
        if self.warp is not None:
            images, keypoints = tps_augment(images, keypoints, self.warp, generator=generator)
            visible = visible & torch.isfinite(keypoints).all(-1)
            keypoints = torch.nan_to_num(keypoints)
        images = photometric(images, generator, self, grey=grey)
        return images, keypoints, visible


@dataclass(frozen=True)
class Augment(ViewAugment):
    """:meth:`ViewAugment.frozen` as a class, the augmentation
    :func:`~contrastive_landmarks.train.fit_regressor` takes: its defaults warp (:data:`FROZEN_WARP`) and flip
    the whole images, no crop and no photometry (``Augment(warp=None)``: flips only; ``Augment.none()``: none).
    """

    scale: float = 0.0
    rotation: float | None = 0.0
    translation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    blur: float = 0.0
    grayscale: float = 0.0
    warp: TPSParams | None = FROZEN_WARP


def flip_views(
    images: Tensor, keypoints: Tensor, visible: Tensor, flip_pairs: Sequence[Sequence[int]], generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Mirror each view horizontally with probability 1/2 (one draw per view), swapping the left/right pairs.

    Args:
        images: ``(B, C, H, W)``; keypoints: ``(B, N, 2)`` pixels (``x -> W - 1 - x``); visible: ``(B, N)``.
        flip_pairs: the ``(left, right)`` keypoint indices a flip swaps.
        generator: a CPU generator (``B`` uniform draws).
    """
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    order = list(range(keypoints.shape[1]))
    for a, b in flip_pairs:
        order[a], order[b] = order[b], order[a]
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    mirrored = keypoints[:, order].clone()
    mirrored[..., 0] = images.shape[-1] - 1 - mirrored[..., 0]
    keypoints = torch.where(flip[:, None, None], mirrored, keypoints)
    visible = torch.where(flip[:, None], visible[:, order], visible)
    return images, keypoints, visible


def photometric(
    images: Tensor, generator: torch.Generator, augment: ViewAugment, *, grey: Tensor | None = None
) -> Tensor:
    """``augment``'s colour jitter, blur and grey views of ``(B, 3, H, W)`` images in ``[0, 1]``, clamped to
    ``[0, 1]`` (the images as they are where all three are off); ``grey`` as in :meth:`ViewAugment.__call__`."""
    if not (augment.brightness or augment.contrast or augment.blur or augment.grayscale):
        return images
    if augment.brightness or augment.contrast:
        images = color_jitter(images, generator, brightness=augment.brightness, contrast=augment.contrast, saturation=0)
    if augment.blur:
        images = gaussian_blur(images, generator, sigma=(0.1, 1.5), p=augment.blur)
    if augment.grayscale:
        gray = torch.rand(images.shape[0], generator=generator) < augment.grayscale
        if grey is None:
            grey = ((images[:, 0] == images[:, 1]) & (images[:, 1] == images[:, 2])).flatten(1).all(1).cpu()
        gray = (gray & ~grey.cpu()).to(images.device)
        images = torch.where(gray[:, None, None, None], rgb_to_grayscale(images).expand_as(images), images)
    return images.clamp(0, 1)


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
        tight = self.framing.boxes_around(self.keypoints[index], self.visible[index], sizes)
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
        """Views of frames ``index``: ``(B, 3, S, S)`` images in [0, 1], ``(B, N, 2)`` pixels, ``(B, N)`` visible.

        The crops (:meth:`boxes`, :func:`~contrastive_landmarks.framing.crop_images`), then ``augment``'s later
        steps (:meth:`ViewAugment.__call__`); a point outside its view is invisible."""
        augment = augment or ViewAugment()
        boxes = self.boxes(index, generator, augment)
        frames = [self.frames[i].float().div_(255) for i in index.tolist()]
        images = crop_images(frames, boxes, self.size)
        points = crop_points(self.keypoints[index], boxes, self.size)
        visible = self.visible[index].clone()
        grey = torch.tensor([self.gray[i] for i in index.tolist()])
        images, points, visible = augment(images, points, visible, self.flip_pairs, generator, grey=grey)
        inside = ((points > -0.5) & (points < self.size - 0.5)).all(-1)
        return images.clamp(0, 1), points, visible & inside
