"""Sample transforms that move keypoints exactly with the pixels.

A transform takes a sample dict (``image`` ``(3, H, W)``, optional ``keypoints`` ``(N, 2)``,
``visible`` ``(N,)``, ``box`` ``(4,)``) and returns a new one. Keypoints follow the library's pixel
convention (pixel centres at integers, an image of width ``W`` spans ``[-0.5, W - 0.5]``), in which
resizing an image from ``W`` to ``W'`` maps ``x -> (x + 0.5) W'/W - 0.5`` exactly (this is what
bilinear ``align_corners=False`` interpolation and Pillow do), and cropping at ``left`` maps
``x -> x - left``.

The paper's preprocessing (reference notes §6, §9) is given as ready-made pipelines:
:func:`celeba_transform` (aligned CelebA/MAFL: rows 30..208 -> 178² -> 136 -> border 20 -> 96),
:func:`aflw_transform` (AFLW_M / AFLW_R: resize to 136, border 20), :func:`threehundredw_transform`
(box-based crop) and :func:`squash_transform` (birds: 96² ignoring aspect). :func:`face_box_crop`
crops a face around its own landmarks to a fixed framing (used to give MTFL's looser training crops
the test crops' framing); :class:`LandmarkBox` without face indices boxes any keypoint layout, and
:class:`Letterbox` fits frames of any shape into a square without squashing them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Transform

__all__ = [
    "BorderCrop",
    "BoxCrop",
    "CenterCrop",
    "Compose",
    "Crop",
    "LandmarkBox",
    "Letterbox",
    "Resize",
    "aflw_transform",
    "celeba_transform",
    "crop_image",
    "face_box_crop",
    "paper_resize",
    "resize_image",
    "resize_points",
    "squash_transform",
    "threehundredw_transform",
]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (H, W), got {size}")
    return size


def resize_points(points: Tensor, old_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Map ``(..., 2)`` pixel ``(x, y)`` points from an ``old_size = (H, W)`` image to ``new_size``."""
    (h0, w0), (h1, w1) = old_size, new_size
    scale = torch.tensor([w1 / w0, h1 / h0], dtype=points.dtype, device=points.device)
    return (points + 0.5) * scale - 0.5


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (antialiased when shrinking) resize of a ``(C, H, W)`` image to ``size = (H', W')``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def crop_image(image: Tensor, top: int, left: int, height: int, width: int, fill: float = 0.0) -> Tensor:
    """Crop ``(C, H, W)`` to ``(C, height, width)`` at integer ``(top, left)``, padding outside with ``fill``."""
    channels, h, w = image.shape
    out = image.new_full((channels, height, width), fill)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, h), min(left + width, w)
    if y1 > y0 and x1 > x0:
        out[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
    return out


def _shift(sample: dict, dx: float, dy: float) -> None:
    offset = torch.tensor([dx, dy])
    if "keypoints" in sample:
        sample["keypoints"] = sample["keypoints"] + offset.to(sample["keypoints"].dtype)
    if "box" in sample:
        sample["box"] = sample["box"] + offset.repeat(2).to(sample["box"].dtype)


class Compose:
    """Apply sample transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class Resize:
    """Resize to ``size``: ``(H, W)``, or an int for a square (the default, squashing the aspect ratio)
    or, with ``shorter_side=True``, for the shorter side (torchvision's ``Resize(int)``)."""

    def __init__(self, size: int | Sequence[int], *, shorter_side: bool = False) -> None:
        self.size = size if isinstance(size, int) else _pair(size)
        self.shorter_side = shorter_side

    def __call__(self, sample: dict) -> dict:
        sample = dict(sample)
        old = (sample["image"].shape[-2], sample["image"].shape[-1])
        if isinstance(self.size, int) and self.shorter_side:
            short = min(old)
            new = (round(old[0] * self.size / short), round(old[1] * self.size / short))
        else:
            new = _pair(self.size)
        sample["image"] = resize_image(sample["image"], new)
        if "keypoints" in sample:
            sample["keypoints"] = resize_points(sample["keypoints"], old, new)
        if "box" in sample:
            box = sample["box"]
            scale = box.new_tensor([new[1] / old[1], new[0] / old[0]]).repeat(2)
            sample["box"] = box * scale
        return sample

    def __repr__(self) -> str:
        return f"Resize({self.size}, shorter_side={self.shorter_side})"


class Crop:
    """Fixed crop of ``(height, width)`` at ``(top, left)`` (zero padding outside the image)."""

    def __init__(self, top: int, left: int, height: int, width: int) -> None:
        self.top, self.left, self.height, self.width = int(top), int(left), int(height), int(width)

    def __call__(self, sample: dict) -> dict:
        sample = dict(sample)
        sample["image"] = crop_image(sample["image"], self.top, self.left, self.height, self.width)
        _shift(sample, -self.left, -self.top)
        return sample

    def __repr__(self) -> str:
        return f"Crop(top={self.top}, left={self.left}, height={self.height}, width={self.width})"


class BorderCrop:
    """Remove ``border`` pixels from every side (the authors' ``crop`` argument)."""

    def __init__(self, border: int) -> None:
        if border < 0:
            raise ValueError(f"border must be >= 0, got {border}")
        self.border = int(border)

    def __call__(self, sample: dict) -> dict:
        h, w = sample["image"].shape[-2:]
        b = self.border
        if 2 * b >= min(h, w):
            raise ValueError(f"border {b} leaves nothing of a {w}x{h} image")
        return Crop(b, b, h - 2 * b, w - 2 * b)(sample)

    def __repr__(self) -> str:
        return f"BorderCrop({self.border})"


class CenterCrop:
    """Central ``size`` crop (an int for a square); odd margins put the extra pixel at the bottom/right."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, sample: dict) -> dict:
        h, w = sample["image"].shape[-2:]
        th, tw = self.size
        return Crop((h - th) // 2, (w - tw) // 2, th, tw)(sample)

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class LandmarkBox:
    """Set ``sample["box"]`` from the sample's own keypoints.

    By default (no ``upper``/``lower``) the box is the bounding box of the *visible*, finite keypoints,
    grown about its centre by ``scale`` (``1.2``: a 10 % margin on every side); this works for any
    keypoint layout. A single visible point gives an empty box (which :class:`BoxCrop` refuses).

    With explicit ``upper`` and ``lower`` indices the box is a square face box instead, centred on the
    mean of the visible keypoints, with side ``scale`` times the distance between the midpoint of the
    ``upper`` points and the midpoint of the ``lower`` points (for the 5-point face layout: eyes
    ``(0, 1)`` to mouth corners ``(3, 4)``, which, unlike the inter-ocular distance, hardly shrinks on
    profile faces). ``num_keypoints`` states the layout those indices are for: a sample with another
    count raises instead of silently framing the wrong points.

    Raises (when called):
        ValueError: no keypoints, no visible keypoint (bounding-box mode), face indices beyond the
            sample's keypoint count, or a keypoint count other than ``num_keypoints``.
    """

    def __init__(
        self,
        scale: float = 1.0,
        upper: Sequence[int] | None = None,
        lower: Sequence[int] | None = None,
        *,
        num_keypoints: int | None = None,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if (upper is None) != (lower is None):
            raise ValueError("give both upper and lower (face box) or neither (bounding box of the keypoints)")
        if upper is not None and (not len(upper) or not len(lower)):
            raise ValueError(f"upper and lower must name at least one keypoint each, got {upper} and {lower}")
        self.scale = float(scale)
        self.upper = None if upper is None else [int(i) for i in upper]
        self.lower = None if lower is None else [int(i) for i in lower]
        self.num_keypoints = None if num_keypoints is None else int(num_keypoints)

    def __call__(self, sample: dict) -> dict:
        if "keypoints" not in sample:
            raise ValueError("LandmarkBox needs a sample with keypoints")
        sample = dict(sample)
        points, visible = sample["keypoints"], sample.get("visible")
        count = int(points.shape[0])
        usable = torch.isfinite(points).all(-1)
        if visible is not None:
            usable = usable & visible.bool()
        if self.upper is None:
            if not bool(usable.any()):
                raise ValueError("LandmarkBox: the sample has no visible keypoint to put a box around")
            low, high = points[usable].min(0).values, points[usable].max(0).values
            centre, half = (low + high) / 2, (high - low) / 2 * self.scale
            sample["box"] = torch.cat([centre - half, centre + half])
            return sample
        if self.num_keypoints is not None and count != self.num_keypoints:
            raise ValueError(
                f"LandmarkBox(upper={self.upper}, lower={self.lower}) is for the "
                f"{self.num_keypoints}-point layout, but the sample has {count} keypoints; pass the "
                "indices of your layout's "
                "upper/lower face points, or no indices for the bounding box of the keypoints"
            )
        highest = max(self.upper + self.lower)
        if highest >= count or min(self.upper + self.lower) < -count:
            raise ValueError(
                f"LandmarkBox face indices upper={self.upper}, lower={self.lower} exceed the sample's "
                f"{count} keypoints; leave them unset for the bounding box of the keypoints"
            )
        centre = points[usable].mean(0) if bool(usable.any()) else points.mean(0)
        size = (points[self.upper].mean(0) - points[self.lower].mean(0)).norm() * self.scale
        half = float(size) / 2
        sample["box"] = torch.stack([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])
        return sample

    def __repr__(self) -> str:
        if self.upper is None:
            return f"LandmarkBox(scale={self.scale})"
        return f"LandmarkBox(scale={self.scale}, upper={self.upper}, lower={self.lower})"


class Letterbox:
    """Fit the whole image into a ``size × size`` square keeping its aspect ratio (zero padding).

    The one letterbox of the library: the crop :func:`~contrastive_landmarks.framing.frame_boxes` places (a square
    of the longer side, centred exactly, so the padding may be half a pixel on each side) sampled by
    :func:`~contrastive_landmarks.framing.crop_images`, the very crop a model's first pass takes at ``detect``, so
    that what a head is fitted on and what it is run on cannot drift apart. One uniform scale on both axes: a point
    goes ``x -> (x + 0.5) · scale - 0.5 + pad_x`` (likewise ``y``), with ``sample["letterbox"] = (scale, pad_x,
    pad_y)`` recorded (``pad`` in output pixels) so that predictions can be mapped back to the source image with
    :meth:`to_source`. Unlike :class:`Resize` (which squashes), frames of different shapes keep their geometry.
    """

    def __init__(self, size: int) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be a positive int, got {size}")
        self.size = int(size)

    def __call__(self, sample: dict) -> dict:
        from ..framing import crop_images, crop_points, frame_boxes

        sample = dict(sample)
        image = sample["image"]
        h, w = (int(v) for v in image.shape[-2:])
        box = frame_boxes([(h, w)], device=image.device)
        sample["image"] = crop_images(image[None].float(), box, self.size)[0].to(image.dtype)
        if "keypoints" in sample:
            points = torch.as_tensor(sample["keypoints"])
            points = points if points.is_floating_point() else points.float()
            sample["keypoints"] = crop_points(points[None], box, self.size)[0]
        scale = self.size / max(h, w)
        pad_x, pad_y = (max(h, w) - w) / 2 * scale, (max(h, w) - h) / 2 * scale
        if "box" in sample:  # (x0, y0, x1, y1) pixel edges
            sample["box"] = sample["box"] * scale + sample["box"].new_tensor([pad_x, pad_y, pad_x, pad_y])
        sample["letterbox"] = (scale, pad_x, pad_y)
        return sample

    @staticmethod
    def to_source(points: Tensor, letterbox) -> Tensor:
        """Map ``(..., N, 2)`` points from the letterboxed image back to the source image.

        ``letterbox`` is a sample's ``(scale, pad_x, pad_y)``, or the batched form the default collate
        makes of it (three ``(B,)`` tensors, for ``(B, N, 2)`` points).
        """
        scale, pad_x, pad_y = (torch.as_tensor(v, dtype=points.dtype, device=points.device) for v in letterbox)
        if scale.ndim:  # batched: one (scale, pad) per image
            scale, pad_x, pad_y = (v.reshape(v.shape + (1,) * (points.ndim - 2)) for v in (scale, pad_x, pad_y))
        x = (points[..., 0] - pad_x + 0.5) / scale - 0.5
        y = (points[..., 1] - pad_y + 0.5) / scale - 0.5
        return torch.stack([x, y], -1)

    def __repr__(self) -> str:
        return f"Letterbox({self.size})"


class BoxCrop:
    """Crop a square around ``sample["box"]`` and resize it to ``size``.

    The square is centred on the box centre plus ``shift`` (fractions of the box width), with side
    ``scale`` times the box's larger side. With ``jitter_scale``/``jitter_shift`` > 0 the scale is
    multiplied by ``exp(U(-j, j))`` and the centre moved by ``U(-j, j)`` box widths (augmentation;
    draws from ``generator`` or torch's global RNG). The crop is taken at integer pixel edges (zero
    padded outside the image) and the keypoints are moved by exactly the crop and resize used.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        scale: float = 1.0,
        shift: tuple[float, float] = (0.0, 0.0),
        jitter_scale: float = 0.0,
        jitter_shift: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = _pair(size)
        self.scale, self.shift = float(scale), (float(shift[0]), float(shift[1]))
        self.jitter_scale, self.jitter_shift = float(jitter_scale), float(jitter_shift)
        self.generator = generator

    def _uniform(self, bound: float) -> float:
        if bound <= 0:
            return 0.0
        return (torch.rand((), generator=self.generator).item() * 2 - 1) * bound

    def __call__(self, sample: dict) -> dict:
        if "box" not in sample:
            raise ValueError("BoxCrop needs sample['box'] ([x0, y0, x1, y1] pixels), e.g. from LandmarkBox")
        x0, y0, x1, y1 = (float(v) for v in sample["box"])
        width = max(x1 - x0, y1 - y0)
        if not width > 0:
            raise ValueError(f"degenerate box {[x0, y0, x1, y1]}")
        side = width * self.scale * math.exp(self._uniform(self.jitter_scale))
        cx = (x0 + x1) / 2 + (self.shift[0] + self._uniform(self.jitter_shift)) * width
        cy = (y0 + y1) / 2 + (self.shift[1] + self._uniform(self.jitter_shift)) * width
        side_px = max(1, round(side))
        # box edges in the continuous frame are x0 - 0.5 ... ; the crop's first pixel centre is `left`
        left, top = round(cx - side_px / 2 + 0.5), round(cy - side_px / 2 + 0.5)
        sample = Crop(top, left, side_px, side_px)(sample)
        return Resize(self.size)(sample)

    def __repr__(self) -> str:
        return (
            f"BoxCrop({self.size}, scale={self.scale}, shift={self.shift}, jitter_scale={self.jitter_scale}, "
            f"jitter_shift={self.jitter_shift})"
        )


def paper_resize(image_size: int) -> int:
    """The side the paper resizes face crops to before its border crop: 136 for 96-px inputs (border 20),
    the border scaled with the input otherwise (90 for 64 px, border 13), as the MoCo faces preset."""
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return int(image_size) + 2 * round(20 * image_size / 96)


def celeba_transform(image_size: int = 96, resize: int | None = None) -> Compose:
    """The paper's aligned-CelebA/MAFL preprocessing: rows 30..208 of the 178×218 image (a 178² square),
    resize to ``resize`` (default :func:`paper_resize`: 136), then a border crop to ``image_size``
    (border 20 -> 96)."""
    resize = paper_resize(image_size) if resize is None else resize
    border = (resize - image_size) // 2
    if border < 0 or resize - 2 * border != image_size:
        raise ValueError(f"resize - image_size must be even and >= 0, got {resize} and {image_size}")
    return Compose([Crop(30, 0, 178, 178), Resize(resize), BorderCrop(border)])


def aflw_transform(image_size: int = 96, resize: int | None = None) -> Compose:
    """AFLW_M / AFLW_R preprocessing: resize the (square) face crop to ``resize`` (default
    :func:`paper_resize`: 136 for 96 px), border crop to ``image_size``."""
    resize = paper_resize(image_size) if resize is None else resize
    border = (resize - image_size) // 2
    if border < 0 or resize - 2 * border != image_size:
        raise ValueError(f"resize - image_size must be even and >= 0, got {resize} and {image_size}")
    return Compose([Resize(resize), BorderCrop(border)])


def threehundredw_transform(image_size: int = 96, resize: int | None = None) -> Compose:
    """300W preprocessing from its ground-truth face box (``sample["box"]``): rescale so that the box is
    52 px wide, take the 100×100 square centred on the box shifted up by 2 px (zero padded), resize to
    ``resize`` (default :func:`paper_resize`), border crop to ``image_size``."""
    resize = paper_resize(image_size) if resize is None else resize
    border = (resize - image_size) // 2
    return Compose([BoxCrop(resize, scale=100 / 52, shift=(0.0, -2 / 52)), BorderCrop(border)])


def squash_transform(image_size: int = 96) -> Resize:
    """Bird (CUB, iNat) preprocessing: resize to ``image_size``² ignoring the aspect ratio."""
    return Resize(image_size)


def face_box_crop(
    size: int = 80,
    *,
    scale: float = 3.14,
    upper: Sequence[int] = (0, 1),
    lower: Sequence[int] = (3, 4),
    num_keypoints: int | None = 5,
    jitter_scale: float = 0.0,
    jitter_shift: float = 0.0,
    generator: torch.Generator | None = None,
) -> Compose:
    """Crop a face around its landmarks to a fixed framing, then resize to ``size``.

    The square is centred on the mean of the landmarks with side ``scale`` × (distance between the
    midpoints of the ``upper`` and ``lower`` points: by default the eyes ``(0, 1)`` and mouth corners
    ``(3, 4)`` of the 5-point face layout, which ``num_keypoints=5`` enforces: a sample with another
    keypoint count raises; for other face layouts pass their indices and ``num_keypoints``, and for
    non-face keypoints use ``Compose([LandmarkBox(margin), BoxCrop(size)])``). The default
    ``scale = 3.14`` reproduces the framing of MTFL's 80×80 AFLW faces (the median crop side in eye-to-mouth
    distances, measured on the in-domain protocol's training faces only:
    :data:`~contrastive_landmarks.data.mtfl.AFLW_FRAMING_SCALE`; a geometric statistic, not a tuned model choice),
    so training faces, which MTFL stores as looser crops (median 16.5 px), can be shown
    at the test framing. Jitter (see :class:`BoxCrop`) adds scale/shift augmentation.
    """
    return Compose(
        [
            LandmarkBox(scale=1.0, upper=upper, lower=lower, num_keypoints=num_keypoints),
            BoxCrop(size, scale=scale, jitter_scale=jitter_scale, jitter_shift=jitter_shift, generator=generator),
        ]
    )
